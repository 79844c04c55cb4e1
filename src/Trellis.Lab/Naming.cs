using System.Security.Cryptography;
using System.Text;

namespace Trellis.Lab;

/// <summary>Names of the lab's kernel objects. '_' cannot appear in Kubernetes names, so it separates parts unambiguously.</summary>
public static class Naming
{
    public const string NetnsDir = "/run/netns";
    public static string NodeNetns(string node) => $"trellis_{node}";
    public static string PodNetnsPrefix(string node) => $"trellis_{node}_";
    public static string PodNetns(string node, string ns, string pod) => $"trellis_{node}_{ns}_{pod}";
    /// <summary>A reference to the network namespace `lab up` ran in (the host's), through which a node's agent reaches
    /// etcd. It starts with the pod prefix, so `lab down` removes it with the pods ("" is no Kubernetes namespace).</summary>
    public static string HostNetnsRef(string node) => $"trellis_{node}__host";
    public static string NetnsPath(string name) => $"{NetnsDir}/{name}";

    /// <summary>Host-side veth name: "lxc" + 8 hex digits of a hash (interface names are limited to 15 bytes).</summary>
    public static string HostVeth(string ns, string pod) => "lxc" + Hash(ns + "/" + pod)[..8];

    /// <summary>A stable locally-administered MAC for the host side, which the pod uses as its gateway.</summary>
    public static string HostMac(string ns, string pod)
    {
        var h = Hash("mac/" + ns + "/" + pod);
        return $"02:{h[0..2]}:{h[2..4]}:{h[4..6]}:{h[6..8]}:{h[8..10]}";
    }

    /// <summary>MAC of the pod's eth0: set by the lab (not random) so it can tell the agent, as a CNI plugin would.</summary>
    public static string PodMac(string ns, string pod)
    {
        var h = Hash("pod-mac/" + ns + "/" + pod);
        return $"02:{h[0..2]}:{h[2..4]}:{h[4..6]}:{h[6..8]}:{h[8..10]}";
    }

    public static string PodLog(string node, string ns, string pod) => $"/run/trellis/{node}/pods/{ns}_{pod}.log";

    private static string Hash(string s) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(s)));
}
