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

/// <summary>Identity 0 = any peer, Port 0 = any port, Proto Any = any protocol.</summary>
public readonly record struct PolicyKey(uint Identity, ushort Port, L4Proto Proto, Direction Direction) : IComparable<PolicyKey>
{
    public int CompareTo(PolicyKey other)
    {
        var c = Direction.CompareTo(other.Direction);
        if (c == 0) c = Identity.CompareTo(other.Identity);
        if (c == 0) c = Port.CompareTo(other.Port);
        if (c == 0) c = Proto.CompareTo(other.Proto);
        return c;
    }
}

public readonly record struct PolicyEntry(uint PolicyId, bool Deny);

/// <summary>
/// The policy of one endpoint. A direction that is not enforced allows everything, whatever <see cref="Entries"/> holds.
/// Entries are ordered by direction, identity, port, protocol.
/// </summary>
public sealed record EndpointPolicy(bool IngressEnforced, bool EgressEnforced, IReadOnlyDictionary<PolicyKey, PolicyEntry> Entries);

public sealed record IdentityInfo(uint Id, Labels Labels);

public sealed record CompiledPolicySource(uint PolicyId, PolicyResource Policy);
