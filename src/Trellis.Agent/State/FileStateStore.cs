using Trellis.Bpf;

namespace Trellis.Agent.State;

/// <summary>Embedded single-node store: one file per key, written to a temporary file, fsynced and
/// renamed over the old one (then the directory fsynced), so a crash leaves old or new, never a mix.</summary>
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

    private string PathOf(string key)
    {
        var parts = key.Split('/', StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 0) throw new ArgumentException($"empty state key '{key}'");
        return Path.Combine([_root, .. parts.Select(Escape)]) + ".json";
    }

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
