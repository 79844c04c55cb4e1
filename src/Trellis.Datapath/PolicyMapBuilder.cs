namespace Trellis.Datapath;

/// <summary>One policy statement before it is laid out for the kernel. Port..EndPort inclusive
/// (any port = 0..65535; for ICMP the range is of ICMP types); Proto 0 = any protocol;
/// Identity 0 = any peer. Redirect: allowed through the node's L7 proxy (the key has HTTP rules).</summary>
public readonly record struct PolicyStatement(uint Identity, TrafficDirection Direction, byte Proto, ushort Port, ushort EndPort, uint PolicyId, bool Deny,
    bool Redirect = false, bool Visibility = false);

/// <summary>Lays policy statements out as longest-prefix-match keys of an endpoint's policy map.
/// The datapath does two lookups, one for the peer's identity and one for identity 0, and a deny
/// from either wins. Within one identity the trie returns the most specific entry, so an allow that
/// a deny of the same identity covers is removed here: deny always wins.</summary>
public static class PolicyMapBuilder
{
    // Bits of the key after prefixlen: identity (32), direction (8), protocol (8), port (16).
    private const uint IdentityAndDirBits = 40;
    private const uint ProtoBits = 48;
    private const uint FullBits = 64;

    public static Dictionary<PolicyKey, PolicyValue> Build(IEnumerable<PolicyStatement> statements)
    {
        var keys = new Dictionary<PolicyKey, PolicyValue>();
        foreach (var s in statements)
        {
            if (s.EndPort < s.Port)
                throw new ArgumentException($"policy statement port range {s.Port}-{s.EndPort} is empty");
            foreach (var k in Blocks(s))
            {
                var v = new PolicyValue { PolicyId = s.PolicyId, Flags = s.Deny ? PolicyValue.FlagDeny : RedirectFlags(s) };
                // Same key twice: a deny beats an allow; between allows a redirect keeps its flag (the compiler decides
                // per key whether L7 applies); between equals the first policy keeps it.
                if (!keys.TryGetValue(k, out var old) || (s.Deny && (old.Flags & PolicyValue.FlagDeny) == 0))
                    keys[k] = v;
                else if (!s.Deny && s.Redirect && (old.Flags & (PolicyValue.FlagDeny | PolicyValue.FlagRedirect)) == 0)
                    keys[k] = old with { Flags = RedirectFlags(s) };
            }
        }
        var denies = keys.Where(kv => (kv.Value.Flags & PolicyValue.FlagDeny) != 0).Select(kv => kv.Key).ToList();
        if (denies.Count == 0) return keys;
        foreach (var (k, v) in keys.ToList())
            if ((v.Flags & PolicyValue.FlagDeny) == 0 && denies.Any(d => Covers(d, k)))
                keys.Remove(k);
        return keys;
    }

    private static uint RedirectFlags(PolicyStatement s) =>
        !s.Redirect ? 0 : PolicyValue.FlagRedirect | (s.Visibility ? PolicyValue.FlagVisibility : 0);

    /// <summary>The LPM keys of one statement: a port range is split into aligned power-of-two blocks.</summary>
    public static IEnumerable<PolicyKey> Blocks(PolicyStatement s)
    {
        var baseKey = new PolicyKey { Identity = s.Identity, Dir = (byte)s.Direction };
        if (s.Proto == 0)
        {
            yield return baseKey with { PrefixLen = IdentityAndDirBits };
            yield break;
        }
        baseKey = baseKey with { Proto = s.Proto };
        if (s.Port == 0 && s.EndPort == ushort.MaxValue)
        {
            yield return baseKey with { PrefixLen = ProtoBits };
            yield break;
        }
        uint start = s.Port, end = s.EndPort;
        while (start <= end)
        {
            int size = 0; // block of 2^size ports starting at start
            while (size < 16 && (start & ((1u << (size + 1)) - 1)) == 0 && start + (1u << (size + 1)) - 1 <= end)
                size++;
            yield return baseKey with { PrefixLen = (uint)(FullBits - size), DPort = (ushort)start };
            start += 1u << size;
        }
    }

    /// <summary>Whether key <paramref name="outer"/> matches every packet <paramref name="inner"/> matches
    /// (same identity and direction; prefix no longer and equal on its bits).</summary>
    public static bool Covers(PolicyKey outer, PolicyKey inner)
    {
        if (outer.Identity != inner.Identity || outer.Dir != inner.Dir || outer.PrefixLen > inner.PrefixLen)
            return false;
        if (outer.PrefixLen <= IdentityAndDirBits) return true;
        if (outer.Proto != inner.Proto) return false;
        int portBits = (int)(outer.PrefixLen - ProtoBits);
        if (portBits == 0) return true;
        uint mask = (0xFFFFu << (16 - portBits)) & 0xFFFF;
        return (outer.DPort & mask) == (inner.DPort & mask);
    }
}
