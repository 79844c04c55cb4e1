namespace Trellis.Policy;

/// <summary>
/// One rule: a Cilium rule as written, or the single rule a Kubernetes NetworkPolicy translates to. Selectors are
/// as written (no implicit namespace added; the compiler does that).
/// </summary>
/// <remarks>
/// Default deny per direction: <see cref="EnableDefaultDenyIngress"/> when set, else (Cilium) whether the direction
/// has allow or deny rules. An empty <see cref="Ingress"/> list alone therefore does not enforce ingress.
/// </remarks>
public sealed record PolicyRule(
    EndpointSelector EndpointSelector,
    string? Description,
    IReadOnlyList<IngressRule> Ingress,
    IReadOnlyList<EgressRule> Egress,
    SourceLocation Location)
{
    public IReadOnlyList<IngressRule> IngressDeny { get; init; } = [];

    public IReadOnlyList<EgressRule> EgressDeny { get; init; } = [];

    /// <summary>enableDefaultDeny.ingress (Cilium) or policyTypes contains Ingress (Kubernetes); null = Cilium's default.</summary>
    public bool? EnableDefaultDenyIngress { get; init; }

    public bool? EnableDefaultDenyEgress { get; init; }

    public bool DefaultDenyIngress => EnableDefaultDenyIngress ?? (Ingress.Count > 0 || IngressDeny.Count > 0);

    public bool DefaultDenyEgress => EnableDefaultDenyEgress ?? (Egress.Count > 0 || EgressDeny.Count > 0);

    public IReadOnlyList<PeerRule> Allows(Direction direction) => direction == Direction.Ingress ? Ingress : Egress;

    public IReadOnlyList<PeerRule> Denies(Direction direction) => direction == Direction.Ingress ? IngressDeny : EgressDeny;

    public bool DefaultDeny(Direction direction) => direction == Direction.Ingress ? DefaultDenyIngress : DefaultDenyEgress;
}

/// <summary>
/// The peer (L3) and port (L4) part of one ingress/egress (allow or deny) rule. Each peer list is null when absent.
/// With no peer list at all, a rule with ports or ICMP types applies to any peer and a rule without them matches
/// nothing (Cilium). The peers of the lists add up.
/// </summary>
public abstract record PeerRule(IReadOnlyList<EndpointSelector>? Endpoints, IReadOnlyList<PortRule> ToPorts, SourceLocation Location)
{
    /// <summary>fromCIDR/fromCIDRSet, toCIDR/toCIDRSet, Kubernetes ipBlock.</summary>
    public IReadOnlyList<CidrRule>? Cidrs { get; init; }

    public IReadOnlyList<PolicyEntity>? Entities { get; init; }

    /// <summary>ICMP (IPv4) types; never together with <see cref="PeerRule.ToPorts"/>.</summary>
    public IReadOnlyList<byte> IcmpTypes { get; init; } = [];

    public bool HasPeers => Endpoints is not null || Cidrs is not null || Entities is not null;

    public bool HasPorts => ToPorts.Count > 0 || IcmpTypes.Count > 0;
}

/// <summary><see cref="FromEndpoints"/> is null when absent (any peer if toPorts is given), empty when written as [].</summary>
public sealed record IngressRule(IReadOnlyList<EndpointSelector>? FromEndpoints, IReadOnlyList<PortRule> ToPorts, SourceLocation Location)
    : PeerRule(FromEndpoints, ToPorts, Location);

/// <summary><see cref="ToEndpoints"/> is null when absent (any peer if toPorts is given), empty when written as [].</summary>
public sealed record EgressRule(IReadOnlyList<EndpointSelector>? ToEndpoints, IReadOnlyList<PortRule> ToPorts, SourceLocation Location)
    : PeerRule(ToEndpoints, ToPorts, Location);

/// <summary>One toPorts item (Cilium) or the ports list of a Kubernetes rule.</summary>
public sealed record PortRule(IReadOnlyList<PortProtocol> Ports, SourceLocation Location)
{
    /// <summary>The L7 rules (Cilium toPorts[].rules) of these ports; null = L4 only.</summary>
    public L7Rules? Rules { get; init; }
}

/// <summary>
/// Port 0 = any port; <see cref="EndPort"/> 0 = just <see cref="Port"/>, else the inclusive range Port..EndPort.
/// <see cref="Name"/> set = a named port (then Port is 0). <see cref="L4Proto.Any"/> = TCP, UDP and SCTP.
/// </summary>
public readonly record struct PortProtocol(ushort Port, L4Proto Protocol, ushort EndPort = 0, string? Name = null);

/// <summary>A CIDR peer: every address in <see cref="Cidr"/> outside all of <see cref="Except"/> (canonical IPv4 prefixes).</summary>
public sealed record CidrRule(string Cidr, IReadOnlyList<string> Except, SourceLocation Location)
{
    public Ipv4Prefix Prefix => Ipv4Prefix.Parse(Cidr);

    public IEnumerable<Ipv4Prefix> ExceptPrefixes => Except.Select(Ipv4Prefix.Parse);
}

/// <summary>Cilium entities (fromEntities/toEntities) that Trellis maps onto identities.</summary>
public enum PolicyEntity
{
    /// <summary>Any peer, inside or outside the cluster (identity 0).</summary>
    All,
    /// <summary>Outside the cluster: the world identity and every CIDR identity.</summary>
    World,
    /// <summary>Inside the cluster: every pod identity, host, remote nodes and health endpoints.</summary>
    Cluster,
    Host,
    RemoteNode,
    Health,
    /// <summary>Selects nothing.</summary>
    None,
}

public static class PolicyEntities
{
    private static readonly Dictionary<string, PolicyEntity> ByName = new(StringComparer.Ordinal)
    {
        ["all"] = PolicyEntity.All,
        ["world"] = PolicyEntity.World,
        ["cluster"] = PolicyEntity.Cluster,
        ["host"] = PolicyEntity.Host,
        ["remote-node"] = PolicyEntity.RemoteNode,
        ["health"] = PolicyEntity.Health,
        ["none"] = PolicyEntity.None,
    };

    /// <summary>Cilium entities Trellis has no identity for.</summary>
    public static readonly IReadOnlySet<string> Unsupported = new HashSet<string>(StringComparer.Ordinal)
        { "init", "kube-apiserver", "ingress", "unmanaged", "world-ipv4", "world-ipv6" };

    public static IEnumerable<string> Names => ByName.Keys;

    public static bool TryParse(string name, out PolicyEntity entity) => ByName.TryGetValue(name, out entity);

    public static string Name(PolicyEntity entity) => ByName.First(p => p.Value == entity).Key;
}
