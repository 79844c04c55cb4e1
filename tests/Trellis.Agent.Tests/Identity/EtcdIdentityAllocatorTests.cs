using Trellis.Agent.Identity;
using Trellis.Agent.State;
using Trellis.Agent.State.Etcd;
using Trellis.Agent.Tests.State.Etcd;
using Trellis.Policy;

namespace Trellis.Agent.Tests.Identity;

/// <summary>Cluster-wide identities on the real 3-member etcd: each "node" is an allocator with its own client and
/// lease, all in one cluster prefix per test (deleted afterwards).</summary>
[Collection(EtcdCollection.Name)]
public sealed class EtcdIdentityAllocatorTests(EtcdCluster cluster) : IAsyncLifetime
{
    private readonly EtcdScratch _etcd = new(cluster);

    public Task InitializeAsync() => _etcd.InitializeAsync();
    public Task DisposeAsync() => _etcd.DisposeAsync();

    private EtcdStateStore Store() => _etcd.NewStore();

    private (EtcdIdentityAllocator Allocator, EtcdStateStore Store, INodeLease Lease) Node(string name, int ttlSeconds = 60)
    {
        var store = Store();
        var lease = store.GrantLease(TimeSpan.FromSeconds(ttlSeconds));
        _etcd.Own(lease);
        return (new EtcdIdentityAllocator(store, name, lease, new Random(name.GetHashCode())), store, lease);
    }

    private static Labels App(string app, string ns = "shop") =>
        Labels.From(("k8s:app", app), ("k8s:io.kubernetes.pod.namespace", ns));

    [Fact]
    public void Allocators_racing_on_several_nodes_give_each_label_set_one_id_and_no_id_twice()
    {
        const int nodes = 4;
        var allocators = Enumerable.Range(0, nodes).Select(n => Node($"node{n}").Allocator).ToList();
        var all = new Dictionary<Labels, uint>();
        // Rounds of new label sets until some transaction lost a race (the first round nearly always does; a round
        // where the threads happened not to overlap proves nothing).
        int round = 0;
        do
        {
            var labelSets = Enumerable.Range(0, 12).Select(i => App($"app{i % 6}-r{round}", i < 6 ? "shop" : "data")).ToList();
            var got = Race(allocators, labelSets);
            foreach (var labels in labelSets)
                all.Add(labels, Assert.Single(got.Select(g => g[labels]).Distinct()));
            round++;
        } while (allocators.Sum(a => a.LostRaces) == 0 && round < 5);
        Assert.True(allocators.Sum(a => a.LostRaces) > 0, "no allocation ever lost a race: the nodes did not race");

        Assert.Equal(all.Count, all.Values.Distinct().Count());
        Assert.All(all.Values, id => Assert.InRange(id, ReservedIdentity.MinimumAllocated, ReservedIdentity.MaximumAllocated));
        // etcd holds exactly that: one id key per label set, naming it, and one reference per node and label set.
        var store = Store();
        var idKeys = store.List("identities/v1/id");
        Assert.Equal(all.Count, idKeys.Count);
        Assert.All(idKeys, kv => Assert.Equal(all[Labels.FromKey(kv.Value)].ToString(), kv.Key.Split('/')[^1]));
        Assert.Equal(nodes * all.Count, store.List("identities/v1/value").Count);
        // And a second request on any node is answered from what it holds.
        var (someLabels, someId) = all.First();
        Assert.Equal(someId, allocators[2].GetOrAllocate(someLabels, out var created));
        Assert.False(created);
    }

    // Every allocator on a thread of its own, started together; two in the same order (racing for the same label set),
    // two in orders of their own (racing for the same free ids with different label sets).
    private static Dictionary<Labels, uint>[] Race(List<EtcdIdentityAllocator> allocators, List<Labels> labelSets)
    {
        var got = new Dictionary<Labels, uint>[allocators.Count];
        var failures = new List<Exception>();
        using var start = new Barrier(allocators.Count);
        var threads = allocators.Select((allocator, n) => new Thread(() =>
        {
            try
            {
                var order = n < 2 ? labelSets.ToList() : labelSets.OrderBy(_ => Random.Shared.Next()).ToList();
                start.SignalAndWait();
                got[n] = order.ToDictionary(l => l, l => allocator.GetOrAllocate(l, out _));
            }
            catch (Exception e)
            {
                lock (failures) failures.Add(e);
            }
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        Assert.Empty(failures);
        return got;
    }

    [Fact]
    public void An_identity_is_freed_when_its_last_reference_goes_and_its_number_is_reused()
    {
        var (a, store, _) = Node("a");
        var (b, _, _) = Node("b");
        var web = App("web");

        var id = a.GetOrAllocate(web, out var created);
        Assert.True(created);
        Assert.Equal(ReservedIdentity.MinimumAllocated, id); // the lowest free id, as node-local allocation does
        Assert.Equal(id, b.GetOrAllocate(web, out var createdOnB));
        Assert.True(createdOnB); // new to node b
        Assert.Equal(web, a.LabelsOf(id));
        Assert.Contains(a.All, i => i.Id == id && i.Labels == web);

        a.Release(id);
        Assert.Equal(web.Key, store.Get($"identities/v1/id/{id}")); // b still uses it
        Assert.Single(store.List("identities/v1/value"));

        b.Release(id);
        Assert.Empty(store.List("identities"));
        Assert.Null(b.LabelsOf(id));

        Assert.Equal(id, a.GetOrAllocate(App("db"), out _));
        b.Release(id); // not held by b: nothing happens
        Assert.NotNull(store.Get($"identities/v1/id/{id}"));
    }

    [Fact]
    public async Task Identities_only_a_dead_node_used_are_collected_after_its_lease_expires()
    {
        var (dead, _, deadLease) = Node("dead", ttlSeconds: 2);
        var (live, store, _) = Node("live");
        var onlyDead = dead.GetOrAllocate(App("batch"), out _);
        var shared = dead.GetOrAllocate(App("web"), out _);
        Assert.Equal(shared, live.GetOrAllocate(App("web"), out _));
        Assert.Equal(0, live.CollectGarbage()); // everything is referenced

        deadLease.Dispose(); // the node dies: its lease is no longer renewed
        await Eventually.TrueAsync(() => store.List("identities/v1/value").Count == 1, "the dead node's references expired",
            TimeSpan.FromSeconds(40));

        Assert.Equal(1, live.CollectGarbage());
        Assert.Null(store.Get($"identities/v1/id/{onlyDead}"));
        Assert.Equal(App("web").Key, store.Get($"identities/v1/id/{shared}"));
        Assert.Equal(shared, live.GetOrAllocate(App("web"), out _));
        Assert.Equal(0, live.CollectGarbage());
    }

    [Fact]
    public void After_a_lost_lease_Reattach_keeps_the_ids_it_can_and_reports_the_one_reused_meanwhile()
    {
        var (a, aStore, aLease) = Node("a");
        var (b, _, _) = Node("b");
        var web = a.GetOrAllocate(App("web"), out _);
        var db = a.GetOrAllocate(App("db"), out _);

        aLease.Revoke(); // a's references vanish, as when its lease expires during a partition
        Assert.Equal(2, b.CollectGarbage());
        Assert.Equal(web, b.GetOrAllocate(App("cache"), out _)); // web's number, free again, taken by other labels

        var newLease = aStore.GrantLease(TimeSpan.FromSeconds(60));
        _etcd.Own(newLease);
        var lost = a.Reattach(newLease);

        Assert.Equal([(App("web"), web)], lost);
        Assert.Equal(db, b.GetOrAllocate(App("db"), out _)); // db kept its number: a allocated it again
        var webAgain = a.GetOrAllocate(App("web"), out _);
        Assert.NotEqual(web, webAgain);
        Assert.NotEqual(db, webAgain);
    }

    [Fact]
    public async Task SyncAsync_learns_the_identities_other_nodes_allocate_and_free()
    {
        var (a, _, _) = Node("a");
        var (b, _, _) = Node("b");
        var before = a.GetOrAllocate(App("before"), out _);
        using var stop = new CancellationTokenSource();
        var sync = b.SyncAsync(null, stop.Token);

        await Eventually.TrueAsync(() => b.LabelsOf(before) == App("before"), "b learned the identity allocated before", TimeSpan.FromSeconds(30));
        var after = a.GetOrAllocate(App("after"), out _);
        await Eventually.TrueAsync(() => b.LabelsOf(after) == App("after"), "b learned the identity allocated after", TimeSpan.FromSeconds(30));
        a.Release(before);
        await Eventually.TrueAsync(() => b.LabelsOf(before) is null, "b saw the freed identity go", TimeSpan.FromSeconds(30));
        Assert.Equal([after], b.All.Select(i => i.Id));

        stop.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => sync);
    }
}
