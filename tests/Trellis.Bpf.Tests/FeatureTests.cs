namespace Trellis.Bpf.Tests;

/// <summary>Needs root. The kernels Trellis targets (and this CI) have every feature the datapath uses.</summary>
public sealed class FeatureTests
{
    [Theory]
    [InlineData("prog:sched_cls (tc)")]
    [InlineData("prog:cgroup_sock_addr")]
    [InlineData("map:ringbuf")]
    [InlineData("map:lpm_trie")]
    [InlineData("map:hash_of_maps")]
    [InlineData("map:lru_hash")]
    [InlineData("map:percpu_array")]
    [InlineData("btf:vmlinux")]
    public void Feature_is_reported_supported_on_this_kernel(string name)
    {
        var probe = Assert.Single(Features.Probe(), p => p.Name == name);
        Assert.True(probe.Supported, $"{name} probed as unsupported on {Environment.OSVersion}");
    }

    [Fact]
    public void MissingRequired_names_unknown_features_only()
    {
        Assert.Equal(["map:no_such_thing"], Features.MissingRequired(["map:ringbuf", "map:no_such_thing"]));
    }
}
