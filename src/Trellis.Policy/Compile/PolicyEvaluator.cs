namespace Trellis.Policy;

/// <summary>
/// The verdict of one direction. <see cref="Key"/>/<see cref="Entry"/> name the deciding entry; both are null when
/// no entry matched and the default decided (allow when the direction is not enforced, drop when it is).
/// </summary>
public readonly record struct DirectionVerdict(bool Allowed, PolicyKey? Key, PolicyEntry? Entry);

/// <summary>
/// Evaluates compiled entries the way the datapath must: any matching deny drops; otherwise an unenforced direction
/// allows, and an enforced one allows only when an allow entry covers the peer, protocol and port. Identity 0 in a
/// key matches every peer; ranges are inclusive; <see cref="L4Proto.Any"/> keys match every protocol. For ICMP the
/// port is the ICMP type. Used by <c>policy trace</c> and the tests.
/// </summary>
public static class PolicyEvaluator
{
    /// <summary>Whether a connection from src to dst passes src's egress and dst's ingress policy.</summary>
    public static bool Allowed(
        EndpointPolicy srcPolicy, EndpointPolicy dstPolicy, uint srcIdentity, uint dstIdentity, L4Proto proto, ushort port) =>
        Evaluate(srcPolicy, Direction.Egress, dstIdentity, proto, port).Allowed &&
        Evaluate(dstPolicy, Direction.Ingress, srcIdentity, proto, port).Allowed;

    public static DirectionVerdict Evaluate(EndpointPolicy policy, Direction direction, uint peer, L4Proto proto, ushort port)
    {
        ArgumentNullException.ThrowIfNull(policy);
        (PolicyKey Key, PolicyEntry Entry)? allow = null;
        foreach (var (key, entry) in policy.Entries)
        {
            if (key.Direction != direction || !key.Covers(peer, proto, port))
                continue;
            if (entry.Deny)
                return new DirectionVerdict(false, key, entry);
            // Report the most specific allow: a named peer over any peer, then the narrowest range.
            if (allow is not { } best || MoreSpecific(key, best.Key))
                allow = (key, entry);
        }
        if (allow is { } a)
            return new DirectionVerdict(true, a.Key, a.Entry);
        return new DirectionVerdict(!policy.Enforced(direction), null, null);
    }

    private static bool MoreSpecific(PolicyKey a, PolicyKey b)
    {
        if ((a.Identity != 0) != (b.Identity != 0))
            return a.Identity != 0;
        if ((a.Proto != L4Proto.Any) != (b.Proto != L4Proto.Any))
            return a.Proto != L4Proto.Any;
        return a.EndPort - a.Port < b.EndPort - b.Port;
    }
}
