using System.Diagnostics;
using Trellis.Agent.State.Etcd;

namespace Trellis.Agent.Tests.State.Etcd;

/// <summary>The store while etcd members die: a member (the leader) killed, then every member.</summary>
[Collection(EtcdCollection.Name)]
public sealed class EtcdFailureTests(EtcdCluster cluster) : IAsyncLifetime
{
    private readonly EtcdScratch _etcd = new(cluster);

    private static KeyValuePair<string, string> Kv(string key, string value) => new(key, value);

    public Task InitializeAsync() => _etcd.InitializeAsync();
    public Task DisposeAsync() => _etcd.DisposeAsync();

    [Fact]
    public async Task Reads_and_writes_go_on_while_the_leader_is_killed_and_it_catches_up_when_back()
    {
        // Long enough for an election on a loaded machine.
        var store = _etcd.NewStore(_etcd.Options with { RequestTimeout = TimeSpan.FromSeconds(30) });
        store.Put("config/before", "1");
        var leader = await cluster.LeaderAsync();

        cluster.Kill(leader);
        var expected = new List<KeyValuePair<string, string>>();
        for (int i = 0; i < 20; i++)
        {
            store.Put($"config/k{i:D2}", $"{i}");
            Assert.Equal($"{i}", store.Get($"config/k{i:D2}"));
            expected.Add(Kv($"config/k{i:D2}", $"{i}"));
        }
        var batch = Enumerable.Range(0, 150).Select(i => Kv($"ipcache/p{i:D3}", "id")).ToList();
        store.PutMany(batch);
        Assert.Equal(batch, store.List("ipcache"));
        Assert.Equal("1", store.Get("config/before"));
        Assert.NotEqual(leader, await cluster.LeaderAsync());

        cluster.Restart(leader);
        await cluster.WaitHealthyAsync();
        // The member that was down serves what was written without it.
        var onlyIt = _etcd.NewStore(_etcd.Options with { Endpoints = [leader.ClientUrl] });
        Assert.Equal([Kv("config/before", "1"), .. expected], onlyIt.List("config"));
        Assert.Equal(150, onlyIt.List("ipcache").Count);
    }

    [Fact]
    public async Task A_full_outage_fails_calls_naming_the_endpoints_and_the_same_client_works_again_after_restart()
    {
        var options = _etcd.Options with { RequestTimeout = TimeSpan.FromSeconds(3) };
        var store = _etcd.NewStore(options);
        store.Put("ipcache/a", "1");
        var revision = store.ListWithRevision("ipcache").Revision;
        await using var watch = new WatchRecorder(ct => store.WatchAsync("ipcache", revision + 1, ct));
        store.Put("ipcache/b", "1");
        await watch.WaitForAsync(w => w.Changes.Count >= 1, "the change before the outage");

        cluster.KillAll();

        var clock = Stopwatch.StartNew();
        var ex = Assert.Throws<EtcdUnavailableException>(() => store.Get("ipcache/a"));
        // Bounded by the request timeout (3 s); the margin is for a loaded machine, not a measurement.
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), $"the call took {clock.Elapsed.TotalSeconds:0.0} s to fail");
        Assert.Equal(cluster.ClientUrls, ex.Endpoints);
        Assert.All(cluster.ClientUrls, url => Assert.Contains(url, ex.Message));
        Assert.Contains("get 'ipcache/a'", ex.Message);
        Assert.IsAssignableFrom<IOException>(ex);
        Assert.Throws<EtcdUnavailableException>(() => store.PutMany([Kv("ipcache/x", "1"), Kv("ipcache/y", "1")]));
        Assert.Throws<EtcdUnavailableException>(() => store.GrantLease(TimeSpan.FromSeconds(5)));
        // A client that never reached etcd fails the same way.
        using (var fresh = new EtcdStateStore(options))
            Assert.Throws<EtcdUnavailableException>(() => fresh.List("ipcache"));

        await cluster.EnsureAllRunningAsync();

        // The same client, not recreated: its channel reconnects by itself (within its reconnect backoff; the bound is
        // for a loaded machine).
        await Eventually.TrueAsync(() => Succeeds(() => store.Put("ipcache/c", "1")), "a put on the same client succeeds", TimeSpan.FromSeconds(30));
        Assert.Equal([Kv("ipcache/a", "1"), Kv("ipcache/b", "1"), Kv("ipcache/c", "1")], store.List("ipcache"));
        // And its watch resumed where it was: b before the outage, c after, each once.
        await watch.WaitForAsync(w => w.Changes.Any(c => c.Key == "ipcache/c"), "the change after the outage");
        Assert.Equal(["ipcache/b", "ipcache/c"], watch.Changes.Select(c => c.Key));
        Assert.True(store.WatchReconnects >= 1);
    }

    private static bool Succeeds(Action call)
    {
        try
        {
            call();
            return true;
        }
        catch (EtcdUnavailableException)
        {
            return false;
        }
    }
}
