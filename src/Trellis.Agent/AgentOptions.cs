using Trellis.Api;

namespace Trellis.Agent;

public sealed record AgentOptions
{
    public string Node { get; init; } = AgentPaths.DefaultNode;
    public string PodCidr { get; init; } = "10.200.0.0/24";
    public string ServiceCidr { get; init; } = "10.96.0.0/16";
    /// <summary>The cgroup v2 directory holding the node's pods (socket load balancing attaches there);
    /// null = &lt;cgroup2 mount&gt;/trellis/&lt;node&gt;.</summary>
    public string? CgroupRootOverride { get; init; }
    public int FlowStoreSize { get; init; } = 4096;
    /// <summary>Backend selection of the per-packet (NodePort) path when a service does not choose (Cilium's
    /// default is random; the service.cilium.io/lb-algorithm annotation overrides per service).</summary>
    public Trellis.Policy.LbAlgorithm LbAlgorithm { get; init; } = Trellis.Policy.LbAlgorithm.Random;
    /// <summary>How often the node's devices are looked at (a NodePort answers on each of their addresses).</summary>
    public TimeSpan DeviceScanInterval { get; init; } = TimeSpan.FromSeconds(1);
    public TimeSpan ConntrackGcInterval { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>HOST:PORT of the Prometheus metrics endpoint (GET /metrics); null or "" = no metrics endpoint.
    /// 9962 is Cilium's agent metrics port.</summary>
    public string? MetricsAddress { get; init; } = Metrics.MetricsServer.DefaultAddress;
    /// <summary>HOST:PORT where Hubble's observer gRPC API also listens over TCP (it always listens on
    /// <see cref="HubbleSocket"/>); null, "" or "off" = the unix socket only. 4244 is Hubble's port.</summary>
    public string? HubbleAddress { get; init; } = Observer.HubbleServer.DefaultAddress;
    public string? HubbleSocketOverride { get; init; }
    /// <summary>The node's L7 proxy listens on 127.0.0.1:ProxyPort in the node's network namespace; 0 = no proxy
    /// (flows whose policy has HTTP rules are then refused: fail closed). 15001 is Istio's outbound capture port.</summary>
    public ushort ProxyPort { get; init; } = 15001;
    /// <summary>Client URLs of the etcd cluster this node joins; null = no cluster (the embedded store, one node).</summary>
    public IReadOnlyList<string>? EtcdEndpoints { get; init; }
    /// <summary>The cluster's name: its keys live under /trellis/&lt;Cluster&gt;/ in etcd.</summary>
    public string Cluster { get; init; } = "default";
    /// <summary>Reach etcd from this network namespace (a path) rather than the agent's own: set by the lab, whose
    /// node namespaces have no network to the host.</summary>
    public string? EtcdNetworkNamespace { get; init; }
    /// <summary>TTL of the node's etcd lease: a node that stops renewing it disappears from the cluster after this long.</summary>
    public TimeSpan NodeLeaseTtl { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>How long one etcd call may take (retries included) before the store counts as unreachable.</summary>
    public TimeSpan EtcdRequestTimeout { get; init; } = TimeSpan.FromSeconds(5);
    public TimeSpan ClusterProbeInterval { get; init; } = TimeSpan.FromSeconds(2);
    public TimeSpan IdentityGcInterval { get; init; } = TimeSpan.FromSeconds(30);
    public string? StateDirOverride { get; init; }
    public string? PinRootOverride { get; init; }
    public string? SocketOverride { get; init; }

    public string StateDir => StateDirOverride ?? AgentPaths.StateDir(Node);
    public string PinRoot => PinRootOverride ?? AgentPaths.PinRoot(Node);
    public string SocketPath => SocketOverride ?? AgentPaths.Socket(Node);
    /// <summary>The Hubble observer's unix socket (root only, next to the API socket).</summary>
    public string HubbleSocket => HubbleSocketOverride ?? AgentPaths.HubbleSocket(Node);
}

/// <summary>A request the agent refuses, with the HTTP status it maps to and a message for the user.</summary>
public sealed class AgentException(int status, string message) : Exception(message)
{
    public int Status { get; } = status;
    public static AgentException BadRequest(string m) => new(400, m);
    public static AgentException NotFound(string m) => new(404, m);
    public static AgentException Conflict(string m) => new(409, m);
}
