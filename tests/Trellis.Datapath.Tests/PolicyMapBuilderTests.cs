using Trellis.Datapath;

namespace Trellis.Datapath.Tests;

public class PolicyMapBuilderTests
{
    private static PolicyStatement S(uint id, byte proto, ushort port, ushort end, bool deny = false, uint policy = 1) =>
        new(id, TrafficDirection.Ingress, proto, port, end, policy, deny);

    // Reference semantics of one identity's lookup: the longest matching prefix.
    private static PolicyValue? Lookup(Dictionary<PolicyKey, PolicyValue> map, uint id, byte proto, ushort port)
    {
        var probe = new PolicyKey { PrefixLen = PolicyKey.FullPrefix, Identity = id, Dir = 0, Proto = proto, DPort = port };
        PolicyValue? best = null;
        uint bestLen = 0;
        foreach (var (k, v) in map)
            if (PolicyMapBuilder.Covers(k, probe) && (best is null || k.PrefixLen > bestLen))
                (best, bestLen) = (v, k.PrefixLen);
        return best;
    }

    [Theory]
    [InlineData(80, 80, 1)]
    [InlineData(0, 65535, 1)]
    [InlineData(8000, 8099, 5)]
    [InlineData(1, 65534, 30)]
    public void A_port_range_becomes_aligned_blocks_that_cover_exactly_the_range(int start, int end, int maxBlocks)
    {
        var blocks = PolicyMapBuilder.Blocks(S(256, 6, (ushort)start, (ushort)end)).ToList();
        Assert.InRange(blocks.Count, 1, maxBlocks);
        var map = blocks.ToDictionary(b => b, _ => new PolicyValue { PolicyId = 1 });
        foreach (var port in new[] { start, end, (start + end) / 2, start - 1, end + 1 }.Where(p => p is >= 0 and <= 65535))
        {
            bool inside = port >= start && port <= end;
            Assert.Equal(inside, Lookup(map, 256, 6, (ushort)port) is not null);
        }
    }

    [Fact]
    public void Any_protocol_is_one_key_without_protocol_or_port_bits()
    {
        var k = Assert.Single(PolicyMapBuilder.Blocks(S(256, 0, 0, 65535)));
        Assert.Equal(40u, k.PrefixLen);
        Assert.Equal(0, k.Proto);
    }

    [Fact]
    public void An_allow_covered_by_a_deny_of_the_same_identity_is_removed()
    {
        var map = PolicyMapBuilder.Build([S(256, 6, 80, 80), S(256, 6, 0, 1023, deny: true), S(256, 6, 8080, 8080)]);
        Assert.True((Lookup(map, 256, 6, 80)!.Value.Flags & PolicyValue.FlagDeny) != 0);
        Assert.True((Lookup(map, 256, 6, 8080)!.Value.Flags & PolicyValue.FlagDeny) == 0);
    }

    [Fact]
    public void A_deny_narrower_than_an_allow_keeps_both_and_wins_where_it_applies()
    {
        var map = PolicyMapBuilder.Build([S(256, 0, 0, 65535), S(256, 6, 22, 22, deny: true)]);
        Assert.Equal(2, map.Count);
        Assert.True((Lookup(map, 256, 6, 22)!.Value.Flags & PolicyValue.FlagDeny) != 0);
        Assert.True((Lookup(map, 256, 6, 23)!.Value.Flags & PolicyValue.FlagDeny) == 0);
    }

    [Fact]
    public void Same_key_as_allow_and_deny_is_a_deny()
    {
        var map = PolicyMapBuilder.Build([S(256, 6, 80, 80, policy: 1), S(256, 6, 80, 80, deny: true, policy: 2)]);
        var v = Assert.Single(map).Value;
        Assert.Equal(PolicyValue.FlagDeny, v.Flags);
        Assert.Equal(2u, v.PolicyId);
    }

    [Fact]
    public void An_empty_range_is_rejected()
    {
        Assert.Throws<ArgumentException>(() => PolicyMapBuilder.Build([S(256, 6, 90, 80)]));
    }
}
