using System.Text.Json;
using Microsoft.Extensions.Logging;
using Trellis.Agent.Identity;
using Trellis.Agent.State;
using Trellis.Agent.State.Etcd;
using Trellis.Api;

namespace Trellis.Agent.Cluster;

/// <summary>What a node publishes about itself under "nodes/&lt;name&gt;" (with its lease: the key vanishes when the node
/// stops renewing it).</summary>
public sealed record NodeRecord(string Name, string PodCidr, string RouterIp, DateTimeOffset StartedAt);

/// <summary>This node's membership of a cluster kept in etcd (after Cilium's kvstore mode): the node registered under a
/// lease, cluster-wide identities (<see cref="EtcdIdentityAllocator"/>) kept in sync by a watch, identities of dead nodes
/// collected now and then, and the store's health. While etcd cannot be reached nothing here stops the datapath: the
/// node keeps enforcing what it has, reports itself degraded, and everything resumes (watch, lease, registration) when
/// etcd answers again.</summary>
public sealed class ClusterMembership : IDisposable
{
    public const string NodesPrefix = "nodes";
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    private readonly EtcdStateStore _store;
    private readonly NodeRecord _self;
    private readonly TimeSpan _ttl;
    private readonly ILogger _log;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Task> _loops = [];
    private INodeLease _lease;
    private Timer? _gc;

    // Health, as the last probe saw it (read by status without touching etcd).
    private readonly Lock _healthGate = new();
    private string? _error;
    private DateTimeOffset? _unreachableSince;
    private DateTimeOffset? _nodesAsOf;
    private IReadOnlyList<NodeRecord> _nodes = [];

    public EtcdIdentityAllocator Identities { get; }
    public string Cluster { get; }
    public IReadOnlyList<string> Endpoints => _store.Endpoints;
    /// <summary>How many times the node lease was lost (etcd unreachable for longer than its TTL) and taken again.</summary>
    public int LeaseRenewals { get; private set; }

    private ClusterMembership(EtcdStateStore store, string cluster, NodeRecord self, TimeSpan ttl, INodeLease lease, ILogger log)
    {
        _store = store;
        Cluster = cluster;
        _self = self;
        _ttl = ttl;
        _lease = lease;
        _log = log;
        Identities = new EtcdIdentityAllocator(store, self.Name, lease, log: log);
    }

    /// <summary>Connects, takes the node's lease and registers the node. Throws <see cref="EtcdException"/> naming the
    /// endpoints when etcd does not answer: an agent starting without its cluster store has no identities to enforce with.</summary>
    public static ClusterMembership Join(EtcdOptions options, NodeRecord self, TimeSpan leaseTtl, ILogger log)
    {
        var store = new EtcdStateStore(options, log);
        try
        {
            var lease = store.GrantLease(leaseTtl);
            store.PutWithLease($"{NodesPrefix}/{self.Name}", JsonSerializer.Serialize(self, Json), lease);
            var m = new ClusterMembership(store, options.Cluster, self, leaseTtl, lease, log);
            m.Identities.Refresh();
            m.Probe();
            log.LogInformation("node {Node} joined cluster {Cluster} (etcd {Endpoints}, lease {Lease:x}, TTL {Ttl} s)",
                self.Name, options.Cluster, string.Join(",", store.Endpoints), lease.Id, leaseTtl.TotalSeconds);
            return m;
        }
        catch (EtcdException e)
        {
            store.Dispose();
            throw new EtcdException($"cannot join cluster '{options.Cluster}' in etcd ({string.Join(", ", store.Endpoints)}): {e.Message.TrimEnd('.')}. " +
                "Check that etcd runs and is reachable from this node, or start the agent without --etcd (single node)", e);
        }
    }

    /// <summary>Starts the background work. <paramref name="identitiesChanged"/> runs after the cluster's identities
    /// changed (another node allocated or freed one); <paramref name="leaseRetaken"/> after the lease was lost and the
    /// node registered again (its identity references were put back; some ids may have to be allocated anew).</summary>
    public void Start(Action identitiesChanged, Action leaseRetaken, TimeSpan probeInterval, TimeSpan gcInterval)
    {
        // The agent's API calls etcd synchronously under its state lock, and gRPC completes those calls on pool threads:
        // on a 2-core node the default minimum (one thread per core) starves for seconds while the watch callback and
        // the probe each hold one, long enough for the probe's timeout to report a healthy etcd unreachable.
        ThreadPool.GetMinThreads(out var workers, out var io);
        ThreadPool.SetMinThreads(Math.Max(workers, 32), io);
        var stop = _stop.Token;
        _loops.Add(Task.Run(() => SyncLoopAsync(identitiesChanged, stop)));
        _loops.Add(Task.Run(() => ProbeLoopAsync(probeInterval, stop)));
        _loops.Add(Task.Run(() => LeaseLoopAsync(leaseRetaken, stop)));
        _gc = new Timer(_ => CollectGarbage(), null, gcInterval, gcInterval);
    }

    private async Task SyncLoopAsync(Action changed, CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            try
            {
                await Identities.SyncAsync(changed, stop); // the watch itself survives outages; the first listing may not
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested) { return; }
            catch (Exception e)
            {
                _log.LogWarning("identity sync with etcd failed ({Error}); retrying", e.Message);
            }
            try { await Task.Delay(TimeSpan.FromSeconds(1), stop); }
            catch (OperationCanceledException) { return; }
        }
    }

    private async Task ProbeLoopAsync(TimeSpan interval, CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            try { await Task.Delay(interval, stop); }
            catch (OperationCanceledException) { return; }
            await Task.Run(Probe, CancellationToken.None);
        }
    }

    /// <summary>Reads the node list (a quorum read): success means etcd is usable, failure marks the store unreachable.</summary>
    private void Probe()
    {
        try
        {
            var nodes = _store.List(NodesPrefix)
                .Select(kv => JsonSerializer.Deserialize<NodeRecord>(kv.Value, Json)!)
                .OrderBy(n => n.Name, StringComparer.Ordinal).ToList();
            lock (_healthGate)
            {
                if (_error is not null)
                    _log.LogInformation("etcd reachable again ({Endpoints}) after {Seconds:0} s", string.Join(", ", Endpoints), (DateTimeOffset.UtcNow - _unreachableSince!.Value).TotalSeconds);
                _error = null;
                _unreachableSince = null;
                _nodes = nodes;
                _nodesAsOf = DateTimeOffset.UtcNow;
            }
        }
        catch (Exception e) when (e is EtcdException or JsonException)
        {
            lock (_healthGate)
            {
                if (_error is null)
                    _log.LogWarning("etcd unreachable: {Error}; the datapath keeps enforcing the last known state", e.Message);
                _error = e.Message;
                _unreachableSince ??= DateTimeOffset.UtcNow;
            }
        }
    }

    // A lost lease means the node's keys are gone (etcd was unreachable for longer than the TTL): take a new one,
    // register again, and put the identity references back.
    private async Task LeaseLoopAsync(Action retaken, CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            using var wake = CancellationTokenSource.CreateLinkedTokenSource(stop, _lease.Lost);
            try { await Task.Delay(Timeout.Infinite, wake.Token); }
            catch (OperationCanceledException) when (stop.IsCancellationRequested) { return; }
            catch (OperationCanceledException) { }
            _log.LogWarning("node {Node}: etcd lease lost; registering again", _self.Name);
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    var lease = _store.GrantLease(_ttl);
                    _store.PutWithLease($"{NodesPrefix}/{_self.Name}", JsonSerializer.Serialize(_self, Json), lease);
                    var lost = Identities.Reattach(lease);
                    var old = _lease;
                    _lease = lease;
                    old.Dispose();
                    LeaseRenewals++;
                    _log.LogInformation("node {Node} registered again (lease {Lease:x}); {Lost} identities must be allocated anew", _self.Name, lease.Id, lost.Count);
                    retaken();
                    break;
                }
                catch (EtcdException e)
                {
                    _log.LogWarning("node {Node}: registering again failed ({Error}); retrying", _self.Name, e.Message);
                    try { await Task.Delay(TimeSpan.FromSeconds(1), stop); }
                    catch (OperationCanceledException) { return; }
                }
            }
        }
    }

    private void CollectGarbage()
    {
        try
        {
            var freed = Identities.CollectGarbage();
            if (freed > 0) _log.LogInformation("{Freed} identities no node uses any more were freed", freed);
        }
        catch (EtcdException e)
        {
            _log.LogDebug("identity garbage collection skipped: {Error}", e.Message);
        }
    }

    public ClusterStatusDto Status()
    {
        lock (_healthGate)
        {
            var now = DateTimeOffset.UtcNow;
            return new ClusterStatusDto("etcd", Cluster, Endpoints, _error is null, _error, _unreachableSince,
                _nodes.Select(n => new ClusterNodeDto(n.Name, n.PodCidr, n.RouterIp, n.StartedAt, n.Name == _self.Name)).ToList(), _nodesAsOf);
        }
    }

    public static ClusterStatusDto Embedded() => new("embedded", null, [], true, null, null, [], null);

    public void Dispose()
    {
        _stop.Cancel();
        _gc?.Dispose();
        try { Task.WaitAll([.. _loops], TimeSpan.FromSeconds(5)); }
        catch (AggregateException) { }
        // Not revoked: the node's keys expire after the TTL, as if it had died. A restarted agent (the datapath kept
        // enforcing meanwhile) takes a new lease and references its identities again.
        _lease.Dispose();
        _store.Dispose();
    }
}
