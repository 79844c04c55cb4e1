using System.Diagnostics;
using Trellis.Agent.State;
using Trellis.Agent.State.Etcd;

namespace Trellis.Agent.Tests.State.Etcd;

/// <summary>What etcd adds to the store contract, against the real 3-member cluster: watches (in order, once each,
/// across a killed member, after a compaction) and node leases.</summary>
[Collection(EtcdCollection.Name)]
public sealed class EtcdStateStoreTests(EtcdCluster cluster) : IAsyncLifetime
{
    private readonly EtcdScratch _etcd = new(cluster);

    private EtcdStateStore NewStore() => _etcd.NewStore();

    private static KeyValuePair<string, string> Kv(string key, string value) => new(key, value);

    public Task InitializeAsync() => _etcd.InitializeAsync();
    public Task DisposeAsync() => _etcd.DisposeAsync();

    [Fact]
    public async Task Watch_from_a_listing_revision_sees_every_later_change_once_in_order_and_a_batch_together()
    {
        var store = NewStore();
        store.PutMany([Kv("pods/a", "1"), Kv("pods/b", "1"), Kv("other/x", "1")]);
        var listing = store.ListWithRevision("pods");
        Assert.Equal([Kv("pods/a", "1"), Kv("pods/b", "1")], listing.Items);
        store.Put("pods/c", "1"); // after the listing, before the watch starts: still seen

        await using var watch = new WatchRecorder(ct => store.WatchAsync("pods", listing.Revision + 1, ct));
        store.Put("pods/a", "2");
        store.Put("other/y", "1");
        store.Put("podsx/z", "1"); // shares the text of the prefix, not its segment
        Assert.True(store.Delete("pods/b"));
        store.PutMany([Kv("pods/d", "1"), Kv("pods/e", "1")]);
        Assert.Equal(2, store.DeleteMany(["pods/d", "pods/e"]));
        store.Put("pods/end", "1");
        await watch.WaitForAsync(w => w.Changes.Any(c => c.Key == "pods/end"), "change of pods/end");

        Assert.Equal(
            [(StateChangeKind.Put, "pods/c", "1"), (StateChangeKind.Put, "pods/a", "2"), (StateChangeKind.Delete, "pods/b", null),
             (StateChangeKind.Put, "pods/d", "1"), (StateChangeKind.Put, "pods/e", "1"),
             (StateChangeKind.Delete, "pods/d", null), (StateChangeKind.Delete, "pods/e", null), (StateChangeKind.Put, "pods/end", "1")],
            watch.Changes.Select(c => (c.Kind, c.Key, c.Value)));
        var revisions = watch.Changes.Select(c => c.Revision).ToList();
        Assert.Equal(revisions.Order(), revisions);
        Assert.True(revisions[0] > listing.Revision);
        // One transaction, one revision, one delivery.
        var batch = Assert.Single(watch.Events.OfType<StateChanges>(), e => e.Changes.Any(c => c.Key == "pods/d" && c.Kind == StateChangeKind.Put));
        var batchRevision = batch.Changes.First(c => c.Key == "pods/d").Revision;
        Assert.Equal(["pods/d", "pods/e"], batch.Changes.Where(c => c.Revision == batchRevision).Select(c => c.Key));
        Assert.Equal(0, store.WatchReconnects);
    }

    [Fact]
    public async Task Watch_resumes_after_the_member_streaming_it_is_killed_without_losing_or_repeating_a_change()
    {
        var writer = NewStore();
        var watcher = NewStore();
        var start = writer.ListWithRevision("events").Revision;
        await using var watch = new WatchRecorder(ct => watcher.WatchAsync("events", start + 1, ct));
        var expected = new List<string>();
        void Write(int count)
        {
            for (int i = 0; i < count; i++)
            {
                var key = $"events/e{expected.Count:D4}";
                writer.Put(key, "v");
                expected.Add(key);
            }
        }

        Write(5);
        await watch.WaitForAsync(w => w.Changes.Count >= 5, "the first 5 changes");
        // The stream is on one member, unknown which: killing each in turn (quorum kept) breaks it at least once, and
        // changes are written while the member is down.
        foreach (var member in cluster.Members)
        {
            cluster.Kill(member);
            Write(10);
            cluster.Restart(member);
            await cluster.WaitHealthyAsync();
            Write(3);
        }
        // A last change after all the others: anything lost or repeated before it would show by then.
        Write(1);
        await watch.WaitForAsync(w => w.Changes.Any(c => c.Key == expected[^1]), $"change of {expected[^1]}");

        Assert.Equal(expected, watch.Changes.Select(c => c.Key));
        Assert.All(watch.Changes, c => Assert.Equal(StateChangeKind.Put, c.Kind));
        Assert.True(watcher.WatchReconnects >= 1, "no kill broke the watch stream: the test proved nothing");
    }

    [Fact]
    public async Task Watch_from_a_compacted_revision_resyncs_with_the_whole_prefix_then_follows_changes()
    {
        var store = NewStore();
        store.PutMany([Kv("services/a", "1"), Kv("services/b", "1")]);
        var old = store.ListWithRevision("services").Revision;
        store.Delete("services/a");
        store.Put("services/c", "1");
        store.Put("services/b", "2");
        var now = store.ListWithRevision("services").Revision;
        store.Connection.Call("compact", o => store.Connection.Kv.Compact(new Etcdserverpb.CompactionRequest { Revision = now, Physical = true }, o));

        await using var watch = new WatchRecorder(ct => store.WatchAsync("services", old + 1, ct));
        await watch.WaitForAsync(w => w.Events.Count >= 1, "the resync");
        store.Put("services/d", "1");
        await watch.WaitForAsync(w => w.Changes.Count >= 1, "the change after the resync");

        var resync = Assert.IsType<StateResync>(watch.Events[0]);
        Assert.Equal(now, resync.CompactRevision);
        Assert.True(resync.Revision >= now);
        Assert.Equal([Kv("services/b", "2"), Kv("services/c", "1")], resync.Items);
        Assert.Equal([(StateChangeKind.Put, "services/d", "1")], watch.Changes.Select(c => (c.Kind, c.Key, c.Value)));
    }

    [Fact]
    public async Task Keys_of_a_renewed_lease_outlive_its_ttl_and_vanish_once_the_node_stops_renewing()
    {
        var store = NewStore();
        // Renewed every second: two missed renewals in a row (a loaded machine) still keep it.
        var lease = store.GrantLease(TimeSpan.FromSeconds(3));
        store.PutWithLease("nodes/n1", "alive", lease);
        store.Put("nodes/permanent", "x");

        // Renewed in the background: still there two TTLs later.
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < 2 * lease.Ttl)
        {
            Assert.Equal("alive", store.Get("nodes/n1"));
            await Task.Delay(250);
        }
        Assert.False(lease.Lost.IsCancellationRequested);

        lease.Dispose(); // the node dies: no more renewals, and nobody revokes the lease
        await Eventually.TrueAsync(() => store.Get("nodes/n1") is null, "the dead node's key is gone", lease.Ttl + TimeSpan.FromSeconds(30));
        Assert.Equal("x", store.Get("nodes/permanent"));
    }

    [Fact]
    public async Task A_lease_that_no_longer_exists_is_reported_lost_and_cannot_take_keys()
    {
        var store = NewStore();
        var lease = store.GrantLease(TimeSpan.FromSeconds(3));
        store.PutWithLease("nodes/n1", "alive", lease);

        // What an expiry during a partition looks like to the node when it gets through again.
        var other = NewStore();
        other.Connection.Call("revoke", o => other.Connection.Lease.LeaseRevoke(new Etcdserverpb.LeaseRevokeRequest { ID = lease.Id }, o));

        await Eventually.TrueAsync(() => lease.Lost.IsCancellationRequested, "the lease is reported lost", TimeSpan.FromSeconds(30));
        Assert.Null(store.Get("nodes/n1"));
        var ex = Assert.Throws<EtcdException>(() => store.PutWithLease("nodes/n1", "again", lease));
        Assert.Contains("lease", ex.Message);
        lease.Dispose();
    }

    [Fact]
    public void Revoke_deletes_the_lease_keys_at_once_and_twice_is_harmless()
    {
        var store = NewStore();
        var lease = store.GrantLease(TimeSpan.FromSeconds(60));
        store.PutWithLease("nodes/n1", "alive", lease);
        store.PutWithLease("nodes/n1-ref", "alive", lease);

        lease.Revoke();

        Assert.Empty(store.List("nodes"));
        lease.Revoke();
        lease.Dispose();
    }
}
