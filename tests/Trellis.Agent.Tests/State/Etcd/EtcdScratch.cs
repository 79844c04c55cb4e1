using Trellis.Agent.State.Etcd;

namespace Trellis.Agent.Tests.State.Etcd;

/// <summary>What an etcd test owns: a key prefix of its own on the shared cluster (every member up at the start), the
/// stores and leases it opened. Disposing brings every member back, deletes the prefix and closes the stores.</summary>
internal sealed class EtcdScratch(EtcdCluster cluster)
{
    private readonly List<IDisposable> _owned = [];

    public EtcdCluster Cluster => cluster;
    public EtcdOptions Options { get; } = cluster.Options();

    public EtcdStateStore NewStore(EtcdOptions? options = null) => Own(new EtcdStateStore(options ?? Options));

    public T Own<T>(T disposable) where T : IDisposable
    {
        _owned.Add(disposable);
        return disposable;
    }

    public Task InitializeAsync() => cluster.EnsureAllRunningAsync();

    public async Task DisposeAsync()
    {
        await cluster.EnsureAllRunningAsync();
        var store = NewStore();
        var (from, end) = store.RangeOf("");
        store.Connection.Call("test cleanup", o => store.Connection.Kv.DeleteRange(new Etcdserverpb.DeleteRangeRequest { Key = from, RangeEnd = end }, o));
        foreach (var o in Enumerable.Reverse(_owned)) o.Dispose();
    }
}
