using Trellis.Agent.State;
using Trellis.Agent.State.Etcd;

namespace Trellis.Agent.Tests.State.Etcd;

/// <summary>The <see cref="IStateStore"/> contract on <see cref="EtcdStateStore"/> against the real 3-member cluster,
/// each test in a key prefix of its own, deleted afterwards.</summary>
[Collection(EtcdCollection.Name)]
public sealed class EtcdStateStoreContractTests(EtcdCluster cluster) : StateStoreContractTests, IAsyncLifetime
{
    private readonly EtcdScratch _etcd = new(cluster);
    private EtcdStateStore? _store;

    protected override IStateStore Store => _store ??= _etcd.NewStore();
    protected override IStateStore Reopen() => _etcd.NewStore();

    public Task InitializeAsync() => _etcd.InitializeAsync();
    public Task DisposeAsync() => _etcd.DisposeAsync();
}
