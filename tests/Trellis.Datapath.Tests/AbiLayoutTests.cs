using System.Runtime.InteropServices;
using Trellis.Bpf;

namespace Trellis.Datapath.Tests;

/// <summary>The C# mirrors in src/Trellis.Datapath/Abi.cs against the BTF of the embedded abi object
/// (bpf/abi.c) and the #defines of bpf/lib. Needs no root: BTF is parsed from the ELF file.</summary>
public sealed class AbiLayoutTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("trellis-abi-").FullName;
    private readonly Btf _btf;

    public AbiLayoutTests() => _btf = Btf.ParseElf(BpfObjects.Extract(BpfObjects.Abi, _dir));

    public void Dispose()
    {
        _btf.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    // C# field -> C member. C members named pad* may have no mirror.
    private static readonly Dictionary<string, (Type Mirror, Dictionary<string, string> Fields)> Structs = new()
    {
        ["ipcache_key"] = (typeof(IpcacheKey), new() { ["PrefixLen"] = "prefixlen", ["Addr"] = "addr" }),
        ["ipcache_value"] = (typeof(IpcacheValue), new() { ["Identity"] = "identity", ["Flags"] = "flags", ["EndpointId"] = "ep_id" }),
        ["endpoint_info"] = (typeof(EndpointInfo), new()
        {
            ["EndpointId"] = "ep_id", ["Identity"] = "identity", ["Ipv4"] = "ipv4", ["Flags"] = "flags",
            ["Mac"] = "mac", ["HostMac"] = "host_mac",
        }),
        ["policy_key"] = (typeof(PolicyKey), new() { ["PrefixLen"] = "prefixlen", ["Identity"] = "identity", ["DPortBe"] = "dport", ["Proto"] = "proto", ["Dir"] = "dir" }),
        ["node_config"] = (typeof(NodeConfig), new() { ["Flags"] = "flags", ["ProxyPortBe"] = "proxy_port" }),
        ["lb4_frontend_key"] = (typeof(Lb4FrontendKey), new() { ["Address"] = "address", ["PortBe"] = "port", ["Proto"] = "proto" }),
        ["lb4_frontend"] = (typeof(Lb4Frontend), new() { ["Id"] = "id", ["Count"] = "count", ["AffinityTimeoutSeconds"] = "affinity_timeout_s", ["Flags"] = "flags" }),
        ["lb4_nat_key"] = (typeof(Lb4NatKey), new() { ["SAddr"] = "saddr", ["DAddr"] = "daddr", ["SPortBe"] = "sport", ["DPortBe"] = "dport", ["Proto"] = "proto", ["Dir"] = "dir" }),
        ["sock_key"] = (typeof(SockKey), new() { ["Local"] = "local", ["Remote"] = "remote", ["LocalPortBe"] = "local_port", ["RemotePortBe"] = "remote_port" }),
        ["lb4_nat"] = (typeof(Lb4Nat), new() { ["Address"] = "address", ["PortBe"] = "port", ["Closing"] = "closing", ["FrontendId"] = "frontend_id", ["Ifindex"] = "ifindex" }),
        ["lb4_affinity_key"] = (typeof(Lb4AffinityKey), new() { ["NetnsCookie"] = "netns_cookie", ["FrontendId"] = "frontend_id" }),
        ["lb4_affinity"] = (typeof(Lb4Affinity), new() { ["LastUsedNs"] = "last_used_ns", ["Slot"] = "slot", ["BackendAddress"] = "backend_address", ["BackendPortBe"] = "backend_port" }),
        ["lb4_backend_key"] = (typeof(Lb4BackendKey), new() { ["FrontendId"] = "frontend_id", ["Slot"] = "slot" }),
        ["lb4_backend"] = (typeof(Lb4Backend), new() { ["Address"] = "address", ["PortBe"] = "port" }),
        ["lb4_revnat"] = (typeof(Lb4Revnat), new() { ["FrontendAddress"] = "frontend_address", ["BackendAddress"] = "backend_address", ["FrontendPortBe"] = "frontend_port", ["BackendPortBe"] = "backend_port" }),
        ["policy_value"] = (typeof(PolicyValue), new() { ["PolicyId"] = "policy_id", ["Flags"] = "flags" }),
        ["ct_key"] = (typeof(CtKey), new()
        {
            ["SAddr"] = "saddr", ["DAddr"] = "daddr", ["SPort"] = "sport", ["DPort"] = "dport",
            ["Proto"] = "proto", ["Dir"] = "dir", ["Pad"] = "pad",
        }),
        ["ct_entry"] = (typeof(CtEntry), new()
        {
            ["ExpiresNs"] = "expires_ns", ["Packets"] = "packets", ["Bytes"] = "bytes", ["SrcIdentity"] = "src_identity",
            ["PolicyId"] = "policy_id", ["TxClosing"] = "tx_closing", ["RxClosing"] = "rx_closing", ["SeenReply"] = "seen_reply",
            ["LbNat"] = "lb_nat", ["FromProxy"] = "from_proxy", ["PolicyGen"] = "policy_gen", ["PolicyFlags"] = "policy_flags",
        }),
        ["flow_event"] = (typeof(FlowEvent), new()
        {
            ["TimestampNs"] = "ts_ns", ["EndpointId"] = "ep_id", ["Ifindex"] = "ifindex", ["SrcIdentity"] = "src_identity",
            ["DstIdentity"] = "dst_identity", ["SAddr"] = "saddr", ["DAddr"] = "daddr", ["SPort"] = "sport", ["DPort"] = "dport",
            ["Proto"] = "proto", ["Verdict"] = "verdict", ["Reason"] = "reason", ["Dir"] = "dir", ["TcpFlags"] = "tcp_flags",
            ["IsReply"] = "is_reply", ["PolicyId"] = "policy_id", ["PktLen"] = "pkt_len", ["FrontendId"] = "frontend_id",
            ["CgroupId"] = "cgroup_id",
        }),
    };

    public static TheoryData<string> StructNames() => new(Structs.Keys);

    [Theory]
    [MemberData(nameof(StructNames))]
    public void Mirror_has_the_size_of_the_C_struct(string cStruct)
    {
        var (mirror, _) = Structs[cStruct];
        var btf = _btf.Struct(cStruct);
        Assert.True(btf.Size == Marshal.SizeOf(mirror), $"{mirror.Name} is {Marshal.SizeOf(mirror)} bytes, struct {cStruct} is {btf.Size}");
    }

    [Theory]
    [MemberData(nameof(StructNames))]
    public void Every_mirror_field_is_at_the_C_member_offset(string cStruct)
    {
        var (mirror, fields) = Structs[cStruct];
        var btf = _btf.Struct(cStruct);
        var declared = mirror.GetFields(System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.Instance).Select(f => f.Name);
        Assert.Equal(declared.Order(), fields.Keys.Order()); // the map above covers every C# field
        foreach (var (f, cf) in fields)
        {
            Assert.True(btf.MemberOffsets.TryGetValue(cf, out var off), $"struct {cStruct} has no member {cf}");
            Assert.True(off == Marshal.OffsetOf(mirror, f).ToInt32(), $"{mirror.Name}.{f} is at {Marshal.OffsetOf(mirror, f)}, {cStruct}.{cf} at {off}");
        }
    }

    [Theory]
    [MemberData(nameof(StructNames))]
    public void Every_C_member_except_padding_has_a_mirror(string cStruct)
    {
        var (_, fields) = Structs[cStruct];
        var unmirrored = _btf.Struct(cStruct).MemberOffsets.Keys
            .Where(m => !fields.ContainsValue(m) && !m.StartsWith("pad", StringComparison.Ordinal));
        Assert.Empty(unmirrored);
    }

    [Fact]
    public void Drop_reasons_equal_the_defines_of_drop_reasons_h()
    {
        var defines = Repo.Defines("bpf/lib/drop_reasons.h")
            .Where(d => d.Key.StartsWith("REASON_", StringComparison.Ordinal))
            .ToDictionary(d => Pascal(d.Key["REASON_".Length..]), d => d.Value);
        Assert.NotEmpty(defines);
        var mirror = Enum.GetValues<DropReason>().ToDictionary(v => v.ToString(), v => (ulong)v);
        Assert.Equal(defines.OrderBy(d => d.Key), mirror.OrderBy(d => d.Key));
    }

    [Fact]
    public void Verdicts_equal_the_defines_of_drop_reasons_h()
    {
        var defines = Repo.Defines("bpf/lib/drop_reasons.h")
            .Where(d => d.Key.StartsWith("VERDICT_", StringComparison.Ordinal))
            .ToDictionary(d => Pascal(d.Key["VERDICT_".Length..]), d => d.Value);
        Assert.NotEmpty(defines);
        // Unknown (0) is C#'s default value only; the datapath never emits it.
        var mirror = Enum.GetValues<Verdict>().Where(v => v != Verdict.Unknown).ToDictionary(v => v.ToString(), v => (ulong)v);
        Assert.Equal(defines.OrderBy(d => d.Key), mirror.OrderBy(d => d.Key));
        Assert.DoesNotContain(0UL, defines.Values);
    }

    [Fact]
    public void Every_drop_reason_has_a_description()
    {
        foreach (var r in Enum.GetValues<DropReason>().Where(r => r != DropReason.None))
            Assert.DoesNotContain("reason ", DropReasons.Describe(r));
    }

    [Fact]
    public void Constants_equal_the_defines_of_common_h_and_maps_h()
    {
        var d = Repo.Defines("bpf/lib/common.h");
        foreach (var (k, v) in Repo.Defines("bpf/lib/maps.h")) d[k] = v;

        Same(d, "IDENTITY_UNKNOWN", Identities.Unknown);
        Same(d, "IDENTITY_HOST", Identities.Host);
        Same(d, "IDENTITY_WORLD", Identities.World);
        Same(d, "IDENTITY_MIN_ALLOCATED", Identities.MinAllocated);
        Same(d, "DIR_INGRESS", (ulong)TrafficDirection.Ingress);
        Same(d, "DIR_EGRESS", (ulong)TrafficDirection.Egress);
        Same(d, "POLICY_MAX", Names.PolicyMaxEntries);
        Same(d, "IPCACHE_F_LOCAL_ENDPOINT", IpcacheValue.FlagLocalEndpoint);
        Same(d, "EP_F_ENFORCE_INGRESS", EndpointInfo.FlagEnforceIngress);
        Same(d, "EP_F_ENFORCE_EGRESS", EndpointInfo.FlagEnforceEgress);
        Same(d, "POLICY_F_DENY", PolicyValue.FlagDeny);
        Same(d, "COUNTER_EVENTS_LOST", Counters.EventsLost);
        Same(d, "COUNTER_FORWARDED", Counters.Forwarded);
        Same(d, "COUNTER_DROPPED", Counters.Dropped);
        Same(d, "COUNTER_MAX", Counters.Max);
        Same(d, "COUNTER_LB_TRANSLATED", Counters.LbTranslated);
        Same(d, "COUNTER_LB_NO_BACKEND", Counters.LbNoBackend);
        Same(d, "COUNTER_LB_NAT", Counters.LbNat);
        Same(d, "LB4_MAGLEV_M", (uint)Lb4Frontend.MaglevTableSize);
        Same(d, "LB4_F_EXTERNAL", Lb4Frontend.FlagExternal);
        Same(d, "LB4_F_MAGLEV", Lb4Frontend.FlagMaglev);
        Same(d, "CONFIG_F_AUDIT", NodeConfig.FlagAudit);
        Same(d, "CONFIG_F_NO_FLOW_EVENTS", NodeConfig.FlagNoFlowEvents);
        Same(d, "POLICY_F_REDIRECT", PolicyValue.FlagRedirect);
        Same(d, "IPCACHE_F_L7_INGRESS", IpcacheValue.FlagL7Ingress);
        Same(d, "CONFIG_F_SOCK_ACCEL", NodeConfig.FlagSockAccel);
        Same(d, "POLICY_F_VISIBILITY", PolicyValue.FlagVisibility);
        Same(d, "EP_F_REDIRECT_INGRESS", EndpointInfo.FlagRedirectIngress);
        Same(d, "EP_F_REDIRECT_EGRESS", EndpointInfo.FlagRedirectEgress);
        Same(d, "MARK_MAGIC_TO_PROXY", ProxyMarks.ToProxy);
        Same(d, "MARK_MAGIC_FROM_PROXY", ProxyMarks.FromProxy);
        Same(d, "MARK_MAGIC_MASK", ProxyMarks.Mask);
    }

    private static void Same(Dictionary<string, ulong> defines, string name, ulong mirror)
    {
        Assert.True(defines.TryGetValue(name, out var v), $"bpf/lib has no #define {name}");
        Assert.True(v == mirror, $"#define {name} is {v}, the C# mirror says {mirror}");
    }

    private static string Pascal(string upperSnake) =>
        string.Concat(upperSnake.Split('_').Select(w => w[..1] + w[1..].ToLowerInvariant()));
}
