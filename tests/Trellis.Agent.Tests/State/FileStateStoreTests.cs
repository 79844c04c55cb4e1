using Trellis.Agent.State;

namespace Trellis.Agent.Tests.State;

/// <summary>FileStateStore on real files, in a scratch directory removed after each test: the shared contract
/// (<see cref="StateStoreContractTests"/>) and what is particular to files.</summary>
public sealed class FileStateStoreTests : StateStoreContractTests, IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), $"trellis-state-test-{Guid.NewGuid():N}");
    private FileStateStore? _store;

    protected override IStateStore Store => _store ??= new FileStateStore(_root);
    protected override IStateStore Reopen() => new FileStateStore(_root);

    public void Dispose()
    {
        if (Directory.Exists(_root)) Directory.Delete(_root, recursive: true);
    }

    private string[] FilesOnDisk(string pattern = "*") =>
        Directory.Exists(_root) ? Directory.GetFiles(_root, pattern, SearchOption.AllDirectories) : [];

    [Fact]
    public void PutMany_leaves_no_temp_file_and_keeps_every_key_under_the_root()
    {
        Store.PutMany(Enumerable.Range(0, 50).Select(i => Kv($"services/ns{i % 3}/svc{i:D2}", $"{i}")).ToList());
        Store.PutMany([Kv("a/b/c/d", "deep"), Kv("a/b/e", "mid"), Kv("top", "top"), Kv("x/../y", "odd")]);

        Assert.Empty(FilesOnDisk("*.tmp"));
        // One directory per key segment, all under the root ('..' is escaped, never a path step).
        Assert.Equal(54, FilesOnDisk("*.json").Length);
        Assert.True(Directory.GetDirectories(Path.Combine(_root, "k_a"), "*", SearchOption.AllDirectories).Length >= 2);
        Assert.All(FilesOnDisk(), f => Assert.StartsWith(_root + Path.DirectorySeparatorChar, Path.GetFullPath(f)));
    }

    [Fact]
    public void Leftover_temp_files_of_an_interrupted_batch_are_never_listed_and_are_removed_on_open()
    {
        Store.PutMany([Kv("services/ns/a", "a1"), Kv("services/ns/b", "b1")]);
        var a = Assert.Single(FilesOnDisk("*.json"), f => File.ReadAllText(f) == "a1");

        // What a crash between writing the temp files and renaming them leaves behind: a temp file next to an
        // existing key, one for a key that never made it, and one in a directory the batch created.
        File.WriteAllText(a + ".tmp", "a2-torn");
        File.WriteAllText(Path.Combine(Path.GetDirectoryName(a)!, "k_c.json.tmp"), "c");
        var newDir = Path.Combine(Path.GetDirectoryName(a)!, "..", "k_other");
        Directory.CreateDirectory(newDir);
        File.WriteAllText(Path.Combine(newDir, "k_d.json.tmp"), "d");

        Assert.Equal([Kv("services/ns/a", "a1"), Kv("services/ns/b", "b1")], Store.List("services"));
        Assert.Null(Store.Get("services/ns/c"));

        var reopened = Reopen();
        Assert.Empty(FilesOnDisk("*.tmp"));
        Assert.Equal([Kv("services/ns/a", "a1"), Kv("services/ns/b", "b1")], reopened.List("services"));
        Assert.Null(reopened.Get("services/other/d"));

        // And the store keeps working over the cleaned directory.
        reopened.PutMany([Kv("services/ns/a", "a2"), Kv("services/other/d", "d")]);
        Assert.Equal([Kv("services/ns/a", "a2"), Kv("services/ns/b", "b1"), Kv("services/other/d", "d")], reopened.List("services"));
    }

    [Fact]
    public void A_batch_with_an_invalid_key_creates_no_file_or_directory()
    {
        Store.Put("services/ns/existing", "v1");
        Assert.Throws<ArgumentException>(() => Store.PutMany([Kv("services/new/a", "a"), Kv("//", "x")]));

        Assert.Single(FilesOnDisk()); // no temp file, no new key
        Assert.False(Directory.Exists(Path.Combine(_root, "k_services", "k_new")));
    }

    [Fact]
    public void An_empty_batch_touches_nothing_on_disk()
    {
        Store.PutMany([]);
        Assert.Equal(0, Store.DeleteMany([]));
        Assert.Empty(Directory.GetFileSystemEntries(_root));
    }
}
