using Trellis.Bpf;

namespace Trellis.Agent.State;

/// <summary>Embedded single-node store: one file per key, written to a temporary file, fsynced and
/// renamed over the old one (then the directory fsynced), so a crash leaves old or new, never a mix.
/// <see cref="PutMany"/> does the same for many keys with one filesystem sync (see the comment there).</summary>
public sealed class FileStateStore : IStateStore
{
    private readonly string _root;
    private readonly Lock _gate = new();

    public FileStateStore(string root)
    {
        _root = Path.GetFullPath(root);
        Directory.CreateDirectory(_root);
        // Leftovers of a write interrupted by a crash.
        foreach (var tmp in Directory.EnumerateFiles(_root, "*.tmp", SearchOption.AllDirectories))
            File.Delete(tmp);
    }

    private string PathOf(string key, string paramName = "key") =>
        Path.Combine([_root, .. StateKey.Segments(key, paramName).Select(Escape)]) + ".json";

    // Keys come from names Kubernetes already restricts; escaping keeps any '.'/'..' or odd byte harmless.
    private static string Escape(string segment) => "k_" + Uri.EscapeDataString(segment).Replace("%", "=");
    private static string Unescape(string name) => Uri.UnescapeDataString(name[2..].Replace("=", "%"));

    public string? Get(string key)
    {
        var p = PathOf(key);
        lock (_gate)
            return File.Exists(p) ? File.ReadAllText(p) : null;
    }

    public void Put(string key, string value)
    {
        var p = PathOf(key);
        var dir = Path.GetDirectoryName(p)!;
        lock (_gate)
        {
            Directory.CreateDirectory(dir);
            var tmp = p + ".tmp";
            using (var fs = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None))
            using (var w = new StreamWriter(fs))
            {
                w.Write(value);
                w.Flush();
                fs.Flush(flushToDisk: true);
            }
            File.Move(tmp, p, overwrite: true);
            NativeFs.FsyncDirectory(dir);
        }
    }

    // PutMany syncs once, not per key. A Put is a file fsync plus a directory fsync, each a journal commit / log force
    // and a disk cache flush on ext4/xfs. PutMany writes every temp file, then calls syncfs(2) once, which writes back
    // and waits for all dirty data and metadata of the filesystem (the temp files, new directories), commits the
    // journal / forces the log and flushes the cache once (ext4, xfs; overlayfs syncs its upper filesystem; tmpfs has
    // nothing to sync, as with fsync). Only then are the temp files renamed over the keys, so a rename can only expose
    // complete data: the per-key guarantee. One fsync per distinct directory then makes the renames durable. syncfs
    // reports a writeback error only if it happened after the handle was opened (Linux >= 5.8), so the handle is
    // opened before the first write. It also writes back other processes' dirty data on that filesystem, so a single
    // key still goes through Put. (fsyncing each temp file, even after starting all their writeback, still costs a
    // cache flush per file.)
    public void PutMany(IReadOnlyList<KeyValuePair<string, string>> items)
    {
        ArgumentNullException.ThrowIfNull(items);
        // Validate everything before touching the disk. Keyed by path, so a later duplicate (or another spelling
        // of the same key, "a//b") replaces the earlier value, as sequential Puts would.
        var writes = new Dictionary<string, string>(items.Count, StringComparer.Ordinal);
        foreach (var (key, value) in items)
        {
            var p = PathOf(key, nameof(items));
            writes[p] = value ?? throw new ArgumentNullException(nameof(items), $"null value for state key '{key}'");
        }
        if (writes.Count == 0) return;
        if (writes.Count == 1)
        {
            var (key, value) = items[^1];
            Put(key, value);
            return;
        }

        lock (_gate)
        {
            using var fsHandle = NativeFs.OpenDirectory(_root); // before the writes: see above
            var dirs = new HashSet<string>(StringComparer.Ordinal);
            var started = new List<string>(writes.Count);
            int renamed = 0;
            try
            {
                foreach (var (p, value) in writes)
                {
                    var dir = Path.GetDirectoryName(p)!;
                    if (dirs.Add(dir)) Directory.CreateDirectory(dir);
                    started.Add(p);
                    File.WriteAllText(p + ".tmp", value);
                }
                NativeFs.Syncfs(fsHandle, _root);
                for (; renamed < started.Count; renamed++)
                    File.Move(started[renamed] + ".tmp", started[renamed], overwrite: true);
            }
            catch
            {
                foreach (var p in started.Skip(renamed)) TryDelete(p + ".tmp");
                throw;
            }
            foreach (var dir in dirs) NativeFs.FsyncDirectory(dir);
        }
    }

    public int DeleteMany(IReadOnlyCollection<string> keys)
    {
        ArgumentNullException.ThrowIfNull(keys);
        var paths = new HashSet<string>(keys.Count, StringComparer.Ordinal);
        foreach (var key in keys) paths.Add(PathOf(key, nameof(keys)));
        int deleted = 0;
        lock (_gate)
        {
            var dirs = new HashSet<string>(StringComparer.Ordinal);
            foreach (var p in paths)
            {
                if (!File.Exists(p)) continue;
                File.Delete(p);
                dirs.Add(Path.GetDirectoryName(p)!);
                deleted++;
            }
            // An unlink is atomic per name; one fsync per directory makes them all durable.
            foreach (var dir in dirs) NativeFs.FsyncDirectory(dir);
        }
        return deleted;
    }

    private static void TryDelete(string path)
    {
        try { File.Delete(path); }
        catch (IOException) { } // left for the cleanup at the next start
        catch (UnauthorizedAccessException) { }
    }

    public bool Delete(string key)
    {
        var p = PathOf(key);
        lock (_gate)
        {
            if (!File.Exists(p)) return false;
            File.Delete(p);
            NativeFs.FsyncDirectory(Path.GetDirectoryName(p)!);
            return true;
        }
    }

    public IReadOnlyList<KeyValuePair<string, string>> List(string prefix)
    {
        var parts = prefix.Split('/', StringSplitOptions.RemoveEmptyEntries);
        var dir = Path.Combine([_root, .. parts.Select(Escape)]);
        var result = new List<KeyValuePair<string, string>>();
        lock (_gate)
        {
            if (!Directory.Exists(dir)) return result;
            foreach (var f in Directory.EnumerateFiles(dir, "*.json", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
            {
                var rel = Path.GetRelativePath(_root, f)[..^".json".Length];
                var key = string.Join('/', rel.Split(Path.DirectorySeparatorChar).Select(Unescape));
                result.Add(new(key, File.ReadAllText(f)));
            }
        }
        return result;
    }
}
