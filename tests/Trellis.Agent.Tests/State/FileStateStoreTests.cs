using Trellis.Agent.State;

namespace Trellis.Agent.Tests.State;

/// <summary>FileStateStore on real files, in a scratch directory removed after each test.</summary>
public sealed class FileStateStoreTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), $"trellis-state-test-{Guid.NewGuid():N}");

    public void Dispose()
    {
        if (Directory.Exists(_root)) Directory.Delete(_root, recursive: true);
    }

    private static KeyValuePair<string, string> Kv(string key, string value) => new(key, value);

    private string[] FilesOnDisk(string pattern = "*") =>
        Directory.Exists(_root) ? Directory.GetFiles(_root, pattern, SearchOption.AllDirectories) : [];

    [Fact]
    public void PutMany_then_Get_and_List_round_trip()
    {
        var store = new FileStateStore(_root);
        var items = Enumerable.Range(0, 50).Select(i => Kv($"services/ns{i % 3}/svc{i:D2}", $"{{\"n\":{i},\"s\":\"ü→{i}\"}}")).ToList();
        store.PutMany(items);

        foreach (var (key, value) in items) Assert.Equal(value, store.Get(key));
        Assert.Equal(items.OrderBy(kv => kv.Key, StringComparer.Ordinal), store.List("services"));
        Assert.Equal(items.Where(kv => kv.Key.StartsWith("services/ns1/")).OrderBy(kv => kv.Key, StringComparer.Ordinal), store.List("services/ns1"));
        Assert.Empty(FilesOnDisk("*.tmp"));

        // Durable state, not a cache: a new instance on the same directory reads the same.
        Assert.Equal(store.List("services"), new FileStateStore(_root).List("services"));
    }

    [Fact]
    public void PutMany_overwrites_existing_keys_and_a_later_duplicate_wins()
    {
        var store = new FileStateStore(_root);
        store.Put("services/a/x", "old-x");
        store.PutMany([Kv("services/a/y", "old-y"), Kv("services/a/keep", "kept")]);

        store.PutMany([Kv("services/a/x", "new-x"), Kv("services/a/y", "first"), Kv("services/a//y", "new-y"), Kv("services/a/z", "new-z")]);

        Assert.Equal(
            [Kv("services/a/keep", "kept"), Kv("services/a/x", "new-x"), Kv("services/a/y", "new-y"), Kv("services/a/z", "new-z")],
            store.List("services"));
        Assert.Empty(FilesOnDisk("*.tmp"));
    }

    [Fact]
    public void PutMany_of_one_key_works_like_Put()
    {
        var store = new FileStateStore(_root);
        store.PutMany([Kv("config/a", "1"), Kv("config//a", "2")]);
        Assert.Equal([Kv("config/a", "2")], store.List("config"));
    }

    [Fact]
    public void PutMany_creates_nested_key_directories()
    {
        var store = new FileStateStore(_root);
        store.PutMany([Kv("a/b/c/d", "deep"), Kv("a/b/e", "mid"), Kv("top", "top"), Kv("x/../y", "odd")]);

        Assert.Equal("deep", store.Get("a/b/c/d"));
        Assert.Equal("odd", store.Get("x/../y"));
        Assert.Equal([Kv("a/b/c/d", "deep"), Kv("a/b/e", "mid")], store.List("a"));
        Assert.Equal([Kv("a/b/c/d", "deep")], store.List("a/b/c"));
        // One directory per key segment, all under the root ('..' is escaped, never a path step).
        Assert.Equal(4, FilesOnDisk("*.json").Length);
        Assert.True(Directory.GetDirectories(_root, "*", SearchOption.AllDirectories).Length >= 4);
        Assert.All(FilesOnDisk(), f => Assert.StartsWith(_root + Path.DirectorySeparatorChar, Path.GetFullPath(f)));
    }

    [Fact]
    public void Leftover_temp_files_of_an_interrupted_batch_are_never_listed_and_are_removed_on_open()
    {
        var store = new FileStateStore(_root);
        store.PutMany([Kv("services/ns/a", "a1"), Kv("services/ns/b", "b1")]);
        var a = Assert.Single(FilesOnDisk("*.json"), f => File.ReadAllText(f) == "a1");

        // What a crash between writing the temp files and renaming them leaves behind: a temp file next to an
        // existing key, one for a key that never made it, and one in a directory the batch created.
        File.WriteAllText(a + ".tmp", "a2-torn");
        File.WriteAllText(Path.Combine(Path.GetDirectoryName(a)!, "k_c.json.tmp"), "c");
        var newDir = Path.Combine(Path.GetDirectoryName(a)!, "..", "k_other");
        Directory.CreateDirectory(newDir);
        File.WriteAllText(Path.Combine(newDir, "k_d.json.tmp"), "d");

        Assert.Equal([Kv("services/ns/a", "a1"), Kv("services/ns/b", "b1")], store.List("services"));
        Assert.Null(store.Get("services/ns/c"));

        var reopened = new FileStateStore(_root);
        Assert.Empty(FilesOnDisk("*.tmp"));
        Assert.Equal([Kv("services/ns/a", "a1"), Kv("services/ns/b", "b1")], reopened.List("services"));
        Assert.Null(reopened.Get("services/other/d"));

        // And the store keeps working over the cleaned directory.
        reopened.PutMany([Kv("services/ns/a", "a2"), Kv("services/other/d", "d")]);
        Assert.Equal([Kv("services/ns/a", "a2"), Kv("services/ns/b", "b1"), Kv("services/other/d", "d")], reopened.List("services"));
    }

    [Theory]
    [InlineData("")]
    [InlineData("/")]
    [InlineData("///")]
    public void PutMany_with_an_invalid_key_throws_before_writing_anything(string bad)
    {
        var store = new FileStateStore(_root);
        store.Put("services/ns/existing", "v1");

        var ex = Assert.Throws<ArgumentException>(() =>
            store.PutMany([Kv("services/ns/existing", "v2"), Kv("services/new/a", "a"), Kv(bad, "x"), Kv("services/ns/b", "b")]));

        Assert.Contains($"'{bad}'", ex.Message);
        Assert.Equal("items", ex.ParamName);
        Assert.Equal([Kv("services/ns/existing", "v1")], store.List("services"));
        Assert.Single(FilesOnDisk()); // no temp file, no new key
        Assert.False(Directory.Exists(Path.Combine(_root, "k_services", "k_new")));
    }

    [Fact]
    public void An_empty_batch_is_a_no_op()
    {
        var store = new FileStateStore(_root);
        store.PutMany([]);
        Assert.Equal(0, store.DeleteMany([]));
        Assert.Empty(Directory.GetFileSystemEntries(_root));
    }

    [Fact]
    public void DeleteMany_removes_the_keys_that_exist_and_counts_them()
    {
        var store = new FileStateStore(_root);
        store.PutMany([Kv("services/a/x", "x"), Kv("services/a/y", "y"), Kv("services/b/z", "z"), Kv("services/b/keep", "k")]);

        int deleted = store.DeleteMany(["services/a/x", "services/b/z", "services/a//x", "services/a/missing", "nothing/here"]);

        Assert.Equal(2, deleted);
        Assert.Equal([Kv("services/a/y", "y"), Kv("services/b/keep", "k")], store.List("services"));
        Assert.Null(store.Get("services/a/x"));
        Assert.Equal([Kv("services/a/y", "y"), Kv("services/b/keep", "k")], new FileStateStore(_root).List("services"));
    }

    [Fact]
    public void DeleteMany_with_an_invalid_key_throws_before_deleting_anything()
    {
        var store = new FileStateStore(_root);
        store.PutMany([Kv("services/a/x", "x"), Kv("services/a/y", "y")]);

        var ex = Assert.Throws<ArgumentException>(() => store.DeleteMany(["services/a/x", "//", "services/a/y"]));

        Assert.Contains("'//'", ex.Message);
        Assert.Equal("keys", ex.ParamName);
        Assert.Equal([Kv("services/a/x", "x"), Kv("services/a/y", "y")], store.List("services"));
    }
}
