namespace Trellis.Agent.Endpoints;

/// <summary>What the agent persists about an endpoint (a pod on this node).</summary>
public sealed record EndpointState
{
    public required uint Id { get; init; }
    public required string Namespace { get; init; }
    public required string Pod { get; init; }
    public required Dictionary<string, string> Labels { get; init; }
    public required string Ip { get; init; }
    public required string Ifname { get; init; }
    public required string NetnsPath { get; init; }
    public required string CgroupPath { get; init; }
    public required uint Identity { get; init; }
    public List<Trellis.Api.ContainerPortDto> Ports { get; init; } = [];
    /// <summary>Policy audit mode for this endpoint alone (the node-wide switch is separate).</summary>
    public bool PolicyAuditMode { get; init; }
    /// <summary>Set when the pod is being deleted: its service backends take no new connections (open ones go
    /// on) until the endpoint is removed.</summary>
    public DateTimeOffset? TerminatingSince { get; init; }
    /// <summary>The pod's policy.cilium.io/proxy-visibility annotation (validated), or null.</summary>
    public string? ProxyVisibility { get; init; }
    /// <summary>The pod interface's and the host veth's MAC ("aa:bb:..."), when the creator gave them.</summary>
    public string? Mac { get; init; }
    public string? HostMac { get; init; }

    public string Key => $"{Namespace}/{Pod}";
}

/// <summary>Live view of an endpoint: its state plus what the datapath was given.</summary>
public sealed record EndpointRuntime(EndpointState State, int Ifindex, bool IngressEnforced, bool EgressEnforced, string Status)
{
    /// <summary>What was last installed in the kernel, so a regeneration that changes nothing writes nothing.</summary>
    public Trellis.Policy.EndpointPolicy? Installed { get; init; }
}
