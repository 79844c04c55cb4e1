using Trellis.Bpf.Interop;

namespace Trellis.Bpf;

public sealed record FeatureProbe(string Name, bool Supported);

/// <summary>Kernel BPF feature probes (libbpf loads a tiny program or creates a tiny map). Results are cached.</summary>
public static class Features
{
    private static IReadOnlyList<FeatureProbe>? _cached;

    public static IReadOnlyList<FeatureProbe> Probe()
    {
        LibBpfLog.Install();
        return _cached ??= new List<FeatureProbe>
        {
            Prog("prog:sched_cls (tc)", BpfProgramType.SchedCls),
            Prog("prog:cgroup_skb", BpfProgramType.CgroupSkb),
            Prog("prog:cgroup_sock_addr", BpfProgramType.CgroupSockAddr),
            Prog("prog:sock_ops", BpfProgramType.SockOps),
            Prog("prog:sk_msg", BpfProgramType.SkMsg),
            Map("map:hash", BpfMapType.Hash),
            Map("map:lru_hash", BpfMapType.LruHash),
            Map("map:lpm_trie", BpfMapType.LpmTrie),
            Map("map:hash_of_maps", BpfMapType.HashOfMaps),
            Map("map:percpu_array", BpfMapType.PerCpuArray),
            Map("map:ringbuf", BpfMapType.RingBuf),
            Map("map:sockhash", BpfMapType.SockHash),
            new("btf:vmlinux", File.Exists("/sys/kernel/btf/vmlinux")),
        };
    }

    /// <summary>Names of probed features the datapath cannot run without that are missing.</summary>
    public static IEnumerable<string> MissingRequired(IEnumerable<string> required) =>
        required.Where(r => Probe().FirstOrDefault(p => p.Name == r) is not { Supported: true });

    private static FeatureProbe Prog(string name, BpfProgramType t) => new(name, LibBpf.ProbeProgType((int)t, IntPtr.Zero) == 1);
    private static FeatureProbe Map(string name, BpfMapType t) => new(name, LibBpf.ProbeMapType((int)t, IntPtr.Zero) == 1);
}
