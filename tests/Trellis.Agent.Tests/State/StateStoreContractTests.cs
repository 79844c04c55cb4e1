using Trellis.Agent.State;

namespace Trellis.Agent.Tests.State;

/// <summary>The <see cref="IStateStore"/> contract, run against every implementation (a subclass per store, each
/// test on an empty store of its own).</summary>
public abstract class StateStoreContractTests
{
    protected abstract IStateStore Store { get; }

    /// <summary>Another instance over the same state (a restarted agent, or another client).</summary>
    protected abstract IStateStore Reopen();

    protected static KeyValuePair<string, string> Kv(string key, string value) => new(key, value);

    [Fact]
    public void Put_Get_and_Delete_of_one_key()
    {
        Assert.Null(Store.Get("config/a"));
        Store.Put("config/a", "1");
        Store.Put("/config//a/", "2"); // the same key, spelled otherwise
        Assert.Equal("2", Store.Get("config/a"));
        Store.Put("config/empty", "");
        Assert.Equal("", Store.Get("config/empty"));

        Assert.True(Store.Delete("config/a"));
        Assert.False(Store.Delete("config/a"));
        Assert.Null(Store.Get("config/a"));
        Assert.Equal([Kv("config/empty", "")], Store.List("config"));
    }

    [Fact]
    public void PutMany_then_Get_and_List_round_trip()
    {
        var items = Enumerable.Range(0, 50).Select(i => Kv($"services/ns{i % 3}/svc{i:D2}", $"{{\"n\":{i},\"s\":\"ü→{i}\"}}")).ToList();
        Store.PutMany(items);

        foreach (var (key, value) in items) Assert.Equal(value, Store.Get(key));
        Assert.Equal(items.OrderBy(kv => kv.Key, StringComparer.Ordinal), Store.List("services"));
        Assert.Equal(items.Where(kv => kv.Key.StartsWith("services/ns1/")).OrderBy(kv => kv.Key, StringComparer.Ordinal), Store.List("services/ns1"));

        // Durable state, not a cache: a new instance on the same state reads the same.
        Assert.Equal(Store.List("services"), Reopen().List("services"));
    }

    [Fact]
    public void PutMany_of_more_keys_than_one_transaction_holds_writes_them_all()
    {
        var items = Enumerable.Range(0, 300).Select(i => Kv($"endpoints/ns/pod{i:D3}", new string('x', i * 50))).ToList();
        Store.PutMany(items);
        Assert.Equal(items, Store.List("endpoints"));
        Assert.Equal(300, Store.DeleteMany(items.Select(kv => kv.Key).ToList()));
        Assert.Empty(Store.List("endpoints"));
    }

    [Fact]
    public void PutMany_overwrites_existing_keys_and_a_later_duplicate_wins()
    {
        Store.Put("services/a/x", "old-x");
        Store.PutMany([Kv("services/a/y", "old-y"), Kv("services/a/keep", "kept")]);

        Store.PutMany([Kv("services/a/x", "new-x"), Kv("services/a/y", "first"), Kv("services/a//y", "new-y"), Kv("services/a/z", "new-z")]);

        Assert.Equal(
            [Kv("services/a/keep", "kept"), Kv("services/a/x", "new-x"), Kv("services/a/y", "new-y"), Kv("services/a/z", "new-z")],
            Store.List("services"));
    }

    [Fact]
    public void PutMany_of_one_key_works_like_Put()
    {
        Store.PutMany([Kv("config/a", "1"), Kv("config//a", "2")]);
        Assert.Equal([Kv("config/a", "2")], Store.List("config"));
    }

    [Fact]
    public void Keys_are_paths_of_opaque_segments_and_List_takes_whole_segments()
    {
        Store.PutMany([Kv("a/b/c/d", "deep"), Kv("a/b/e", "mid"), Kv("top", "top"), Kv("x/../y", "odd"), Kv("ab/c", "other")]);

        Assert.Equal("deep", Store.Get("a/b/c/d"));
        Assert.Equal("odd", Store.Get("x/../y"));
        Assert.Null(Store.Get("y"));
        Assert.Equal([Kv("a/b/c/d", "deep"), Kv("a/b/e", "mid")], Store.List("a"));
        Assert.Equal([Kv("a/b/c/d", "deep")], Store.List("a/b/c"));
        Assert.Equal([Kv("a/b/c/d", "deep")], Store.List("/a//b/c/"));
        Assert.Empty(Store.List("a/b/c/d")); // a key is not its own prefix
        Assert.Empty(Store.List("nothing"));
        Assert.Equal(5, Store.List("").Count);
    }

    [Theory]
    [InlineData("")]
    [InlineData("/")]
    [InlineData("///")]
    public void PutMany_with_an_invalid_key_throws_before_writing_anything(string bad)
    {
        Store.Put("services/ns/existing", "v1");

        var ex = Assert.Throws<ArgumentException>(() =>
            Store.PutMany([Kv("services/ns/existing", "v2"), Kv("services/new/a", "a"), Kv(bad, "x"), Kv("services/ns/b", "b")]));

        Assert.Contains($"'{bad}'", ex.Message);
        Assert.Equal("items", ex.ParamName);
        Assert.Equal([Kv("services/ns/existing", "v1")], Store.List(""));
        Assert.Throws<ArgumentException>(() => Store.Put(bad, "x"));
        Assert.Throws<ArgumentException>(() => Store.Get(bad));
    }

    [Fact]
    public void An_empty_batch_is_a_no_op()
    {
        Store.PutMany([]);
        Assert.Equal(0, Store.DeleteMany([]));
        Assert.Empty(Store.List(""));
    }

    [Fact]
    public void DeleteMany_removes_the_keys_that_exist_and_counts_them()
    {
        Store.PutMany([Kv("services/a/x", "x"), Kv("services/a/y", "y"), Kv("services/b/z", "z"), Kv("services/b/keep", "k")]);

        int deleted = Store.DeleteMany(["services/a/x", "services/b/z", "services/a//x", "services/a/missing", "nothing/here"]);

        Assert.Equal(2, deleted);
        Assert.Equal([Kv("services/a/y", "y"), Kv("services/b/keep", "k")], Store.List("services"));
        Assert.Null(Store.Get("services/a/x"));
        Assert.Equal([Kv("services/a/y", "y"), Kv("services/b/keep", "k")], Reopen().List("services"));
    }

    [Fact]
    public void DeleteMany_with_an_invalid_key_throws_before_deleting_anything()
    {
        Store.PutMany([Kv("services/a/x", "x"), Kv("services/a/y", "y")]);

        var ex = Assert.Throws<ArgumentException>(() => Store.DeleteMany(["services/a/x", "//", "services/a/y"]));

        Assert.Contains("'//'", ex.Message);
        Assert.Equal("keys", ex.ParamName);
        Assert.Equal([Kv("services/a/x", "x"), Kv("services/a/y", "y")], Store.List("services"));
    }

    [Fact]
    public void A_batch_is_seen_whole_by_other_calls_on_the_same_instance()
    {
        var before = Enumerable.Range(0, 200).Select(i => Kv($"ipcache/10.0.{i / 100}.{i % 100}", "old")).ToList();
        var after = before.Select(kv => Kv(kv.Key, "new")).ToList();
        Store.PutMany(before);

        var writer = new Thread(() =>
        {
            for (int round = 0; round < 5; round++) Store.PutMany(round % 2 == 0 ? after : before);
        });
        writer.Start();
        var seen = new List<string>();
        while (writer.IsAlive)
            seen.Add(string.Join(",", Store.List("ipcache").Select(kv => kv.Value).Distinct()));
        writer.Join();

        Assert.All(seen, s => Assert.True(s is "old" or "new", $"a listing saw a batch half done: {s}"));
        Assert.Equal(after.OrderBy(kv => kv.Key, StringComparer.Ordinal), Store.List("ipcache"));
    }
}
