namespace Trellis.Policy;

/// <summary>Matches bpf DIR_INGRESS/DIR_EGRESS.</summary>
public enum Direction : byte
{
    Ingress = 0,
    Egress = 1,
}

/// <summary>IP protocol numbers; 0 means any.</summary>
public enum L4Proto : byte
{
    Any = 0,
    Icmp = 1,
    Tcp = 6,
    Udp = 17,
    Sctp = 132,
}

/// <summary>
/// One policy-map key. <see cref="Port"/>..<see cref="EndPort"/> is inclusive; any port is (0, 65535). For
/// <see cref="L4Proto.Icmp"/> the range is the ICMP type range (any type = 0..255). <see cref="L4Proto.Any"/>
/// (an L3-only rule: every protocol, ICMP included) always has (0, 65535). Identity 0 = any peer, world included.
/// Ordered by direction, identity, protocol, port, end port.
/// </summary>
public readonly record struct PolicyKey(uint Identity, Direction Direction, L4Proto Proto, ushort Port, ushort EndPort)
    : IComparable<PolicyKey>
{
    public const ushort MaxPort = 65535;
    public const ushort MaxIcmpType = 255;

    public bool Covers(uint identity, L4Proto proto, ushort port) =>
        (Identity == ReservedIdentity.Unknown || Identity == identity) &&
        (Proto == L4Proto.Any || Proto == proto) &&
        port >= Port && port <= EndPort;

    public int CompareTo(PolicyKey other)
    {
        var c = Direction.CompareTo(other.Direction);
        if (c == 0) c = Identity.CompareTo(other.Identity);
        if (c == 0) c = Proto.CompareTo(other.Proto);
        if (c == 0) c = Port.CompareTo(other.Port);
        if (c == 0) c = EndPort.CompareTo(other.EndPort);
        return c;
    }

    public override string ToString()
    {
        var peer = Identity == ReservedIdentity.Unknown ? "any" : Identity.ToString();
        var ports = Proto == L4Proto.Any ? "" :
            Port == EndPort ? $"/{Port}" :
            (Port, EndPort) is (0, MaxPort) || (Proto == L4Proto.Icmp && (Port, EndPort) is (0, MaxIcmpType)) ? "" : $"/{Port}-{EndPort}";
        return $"{Direction.ToString().ToLowerInvariant()} {peer} {Proto.ToString().ToUpperInvariant()}{ports}";
    }
}

/// <summary>The verdict of one key and the policy it comes from (the lowest id when several policies give it).</summary>
public readonly record struct PolicyEntry(uint PolicyId, bool Deny);

/// <summary>
/// The policy of one endpoint. Allow and deny entries are both listed; a key is never both (deny is kept). The
/// datapath resolves overlapping keys: any matching deny drops; otherwise a direction that is not enforced allows
/// everything, and an enforced one allows only what a matching allow entry covers. See <see cref="PolicyEvaluator"/>.
/// </summary>
public sealed record EndpointPolicy(bool IngressEnforced, bool EgressEnforced, IReadOnlyDictionary<PolicyKey, PolicyEntry> Entries)
{
    private static readonly IReadOnlyDictionary<PolicyKey, IReadOnlyList<HttpRule>> NoHttpRules =
        new System.Collections.ObjectModel.ReadOnlyDictionary<PolicyKey, IReadOnlyList<HttpRule>>(new Dictionary<PolicyKey, IReadOnlyList<HttpRule>>());

    /// <summary>
    /// The allow keys whose traffic goes to the node-local proxy, with the HTTP rules it enforces there (merged over
    /// all policies; see <see cref="PolicyCompiler"/>). Every key here is also an allow key of <see cref="Entries"/>.
    /// </summary>
    public IReadOnlyDictionary<PolicyKey, IReadOnlyList<HttpRule>> HttpRules { get; init; } = NoHttpRules;

    /// <summary>
    /// Keys of <see cref="HttpRules"/> that exist only for L7 visibility (<see cref="ProxyVisibility"/>): their rules
    /// allow everything, and where no proxy can see the flow, the datapath lets it pass rather than refuse it.
    /// </summary>
    public IReadOnlySet<PolicyKey> VisibilityOnly { get; init; } = new HashSet<PolicyKey>();

    public bool Enforced(Direction direction) => direction == Direction.Ingress ? IngressEnforced : EgressEnforced;

    /// <summary>Whether <paramref name="key"/> must be redirected to the proxy.</summary>
    public bool Redirects(PolicyKey key) => HttpRules.ContainsKey(key);

    /// <summary>
    /// The HTTP rules a request on this connection must match, or null when L7 does not restrict it (no L7 rule
    /// covers it, or a port-specific L4-only allow covers it too: Cilium's "L4-only wins"). Only TCP has L7 rules.
    /// The rules of every covering key add up. Whether L4 allows the connection at all is <see cref="PolicyEvaluator"/>'s.
    /// </summary>
    public IReadOnlyList<HttpRule>? HttpRulesFor(Direction direction, uint peer, L4Proto proto, ushort port)
    {
        if (HttpRules.Count == 0)
            return null;
        List<HttpRule>? rules = null;
        bool lifted = false, visible = false;
        foreach (var (key, entry) in Entries)
        {
            if (key.Direction != direction || key.Proto == L4Proto.Any || !key.Covers(peer, proto, port))
                continue;
            if (entry.Deny)
                return null;
            if (!HttpRules.TryGetValue(key, out var keyRules))
            {
                lifted = true; // an L4-only allow of this port: no L7 restriction
                continue;
            }
            visible |= VisibilityOnly.Contains(key);
            (rules ??= []).AddRange(keyRules);
        }
        if (lifted)
            return visible ? [HttpRule.AllowAll] : null; // visibility: still seen by the proxy, never restricted
        return rules?.Distinct().ToArray();
    }
}

/// <summary>An endpoint (pod) identity with its identity labels.</summary>
public sealed record IdentityInfo(uint Id, Labels Labels);

/// <summary>A CIDR identity the agent put in the ipcache; <see cref="Cidr"/> is an IPv4 prefix in canonical form "a.b.c.d/n".</summary>
public sealed record CidrIdentity(uint Id, string Cidr);

/// <summary>A container port with a name, as a pod declares it.</summary>
public sealed record NamedPort(string Name, ushort Port, L4Proto Protocol);

/// <summary>Everything besides the policies that compiling one endpoint needs.</summary>
/// <param name="Identities">All pod identities on the node/cluster.</param>
/// <param name="CidrIdentities">One per prefix the agent put in the ipcache (see <see cref="PolicyCompiler.ReferencedCidrs"/>).</param>
/// <param name="NamedPortsOf">The named container ports of the pods having an identity (for egress named ports).</param>
public sealed record PolicyInputs(
    IReadOnlyCollection<IdentityInfo> Identities,
    IReadOnlyCollection<CidrIdentity> CidrIdentities,
    Func<uint, IReadOnlyList<NamedPort>> NamedPortsOf)
{
    public static PolicyInputs FromIdentities(IReadOnlyCollection<IdentityInfo> identities) =>
        new(identities, Array.Empty<CidrIdentity>(), _ => Array.Empty<NamedPort>());
}

/// <summary>A parsed policy with the id the agent gave it (the id ends up in <see cref="PolicyEntry.PolicyId"/>).</summary>
public sealed record CompiledPolicySource(uint PolicyId, PolicyResource Policy);

/// <summary>A rule that selects an endpoint: which policy, which rule, and which directions it affects.</summary>
/// <param name="RuleIndex">Index in <see cref="PolicyResource.Rules"/> (a Kubernetes NetworkPolicy has one rule).</param>
/// <param name="Ingress">The rule has ingress allow or deny rules, or puts ingress into default deny.</param>
/// <param name="IngressDefaultDeny">The rule puts the endpoint's ingress into default deny.</param>
public sealed record SelectingRule(
    uint PolicyId,
    PolicyKind Kind,
    string Name,
    string? Namespace,
    int RuleIndex,
    string? Description,
    bool Ingress,
    bool Egress,
    bool IngressDefaultDeny,
    bool EgressDefaultDeny,
    SourceLocation Location);
