using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Trellis.Datapath;

// C# mirrors of bpf/lib/maps.h, common.h and drop_reasons.h: the one contract across the kernel boundary.
// tests/Trellis.Datapath.Tests/AbiLayoutTests.cs compares every struct here with the BTF of bpf/abi.c.

public static class Identities
{
    public const uint Unknown = 0;
    public const uint Host = 1;
    public const uint World = 2;
    public const uint MinAllocated = 256;
}

public enum TrafficDirection : byte
{
    Ingress = 0, // towards the pod
    Egress = 1,  // from the pod
}

/// <summary>Never renumbered: stored in flow records and shown to users.</summary>
public enum Verdict : byte
{
    Unknown = 0,
    Forwarded = 1,
    Dropped = 2,
    Audit = 3,
    Redirected = 4,
    Error = 5,
    /// <summary>A socket was load-balanced to a service backend (a trace event, not a packet verdict).</summary>
    Translated = 6,
}

/// <summary>The drop-reason catalogue of bpf/lib/drop_reasons.h. Never renumbered.</summary>
public enum DropReason : byte
{
    None = 0,
    PolicyDenied = 1,
    InvalidSource = 2,
    InvalidPacket = 3,
    UnsupportedL3 = 4,
    NoIdentity = 5,
    PolicyDenyRule = 6,
    CtMapFull = 7,
    Fragment = 8,
    NoServiceBackend = 9,
    L7Denied = 10,
    AuthRequired = 11,
}

public static class DropReasons
{
    public static string Describe(DropReason r) => r switch
    {
        DropReason.None => "",
        DropReason.PolicyDenied => "policy denied",
        DropReason.InvalidSource => "invalid source address",
        DropReason.InvalidPacket => "invalid packet",
        DropReason.UnsupportedL3 => "unsupported L3 protocol",
        DropReason.NoIdentity => "endpoint has no identity",
        DropReason.PolicyDenyRule => "policy deny rule",
        DropReason.CtMapFull => "conntrack map full",
        DropReason.Fragment => "IP fragment not supported",
        DropReason.NoServiceBackend => "no service backend",
        DropReason.L7Denied => "L7 policy denied",
        DropReason.AuthRequired => "authentication required",
        _ => $"reason {(byte)r}",
    };
}

[StructLayout(LayoutKind.Explicit, Size = 8)]
public struct IpcacheKey
{
    [FieldOffset(0)] public uint PrefixLen;
    [FieldOffset(4)] public uint Addr; // network byte order

    public static IpcacheKey Host(uint addrNetworkOrder) => new() { PrefixLen = 32, Addr = addrNetworkOrder };
}

[StructLayout(LayoutKind.Explicit, Size = 12)]
public struct IpcacheValue
{
    public const uint FlagLocalEndpoint = 1;
    /// <summary>The local endpoint's ingress policy redirects some keys to the L7 proxy.</summary>
    public const uint FlagL7Ingress = 2;
    [FieldOffset(0)] public uint Identity;
    [FieldOffset(4)] public uint Flags;
    [FieldOffset(8)] public uint EndpointId; // local endpoints only
}

[StructLayout(LayoutKind.Explicit, Size = 28)]
public struct EndpointInfo
{
    public const uint FlagEnforceIngress = 1;
    public const uint FlagEnforceEgress = 2;
    public const uint FlagAudit = 4;
    public const uint FlagDenyIngress = 8;
    public const uint FlagDenyEgress = 16;
    /// <summary>The policy map has L7 redirect entries for ingress: looked up even when ingress is not enforced.</summary>
    public const uint FlagRedirectIngress = 32;
    public const uint FlagRedirectEgress = 64;
    /// <summary>Mac and HostMac are set: pods of this node deliver to this one straight into its interface.</summary>
    public const uint FlagDirect = 128;
    [FieldOffset(0)] public uint EndpointId;
    [FieldOffset(4)] public uint Identity;
    [FieldOffset(8)] public uint Ipv4; // network byte order
    [FieldOffset(12)] public uint Flags;
    [FieldOffset(16)] public Mac Mac;     // the pod's interface
    [FieldOffset(22)] public Mac HostMac; // the host side of its veth
}

/// <summary>A MAC address as the datapath stores it: 6 bytes in wire order.</summary>
[System.Runtime.CompilerServices.InlineArray(6)]
public struct Mac
{
    private byte _first;

    /// <summary>Parses "aa:bb:cc:dd:ee:ff" (or with '-'); null unless it is a unicast address other than all zeroes.</summary>
    public static Mac? ParseUnicast(string? text)
    {
        if (text is null) return null;
        var parts = text.Split(':', '-');
        if (parts.Length != 6) return null;
        var mac = new Mac();
        for (int i = 0; i < 6; i++)
        {
            if (parts[i].Length != 2 || !byte.TryParse(parts[i], System.Globalization.NumberStyles.HexNumber, null, out var b)) return null;
            mac[i] = b;
        }
        if ((mac[0] & 1) != 0 || ((ReadOnlySpan<byte>)mac).IndexOfAnyExcept((byte)0) < 0) return null; // multicast/broadcast, or zero
        return mac;
    }

    public override readonly string ToString() => Convert.ToHexStringLower(this).Chunk(2).Select(c => new string(c)).Aggregate((a, b) => a + ":" + b);
}

/// <summary>LPM key of an endpoint's policy map (see bpf/lib/maps.h): identity | dir | proto | port,
/// PrefixLen bits of it significant. Build keys with <see cref="PolicyMapBuilder"/>.</summary>
[StructLayout(LayoutKind.Explicit, Size = 12)]
public struct PolicyKey : IEquatable<PolicyKey>
{
    public const uint FullPrefix = 64;
    [FieldOffset(0)] public uint PrefixLen;
    [FieldOffset(4)] public uint Identity; // 0 = any peer
    [FieldOffset(8)] public byte Dir;      // TrafficDirection
    [FieldOffset(9)] public byte Proto;    // 0 = any (with PrefixLen 40)
    [FieldOffset(10)] public ushort DPortBe; // network byte order: port blocks are prefixes of it

    /// <summary>The port (or ICMP type) in host order.</summary>
    public ushort DPort
    {
        readonly get => BinaryPrimitives.ReverseEndianness(DPortBe);
        set => DPortBe = BinaryPrimitives.ReverseEndianness(value);
    }

    public readonly bool Equals(PolicyKey o) => PrefixLen == o.PrefixLen && Identity == o.Identity && DPortBe == o.DPortBe && Proto == o.Proto && Dir == o.Dir;
    public override readonly bool Equals(object? obj) => obj is PolicyKey k && Equals(k);
    public override readonly int GetHashCode() => HashCode.Combine(PrefixLen, Identity, DPortBe, Proto, Dir);
    public override readonly string ToString() => $"{Identity}/{(TrafficDirection)Dir}/{Proto}/{DPort} /{PrefixLen}";
}

[StructLayout(LayoutKind.Explicit, Size = 8)]
public struct PolicyValue
{
    public const uint FlagDeny = 1;
    /// <summary>Allowed through the node's L7 proxy (the key has HTTP rules).</summary>
    public const uint FlagRedirect = 2;
    /// <summary>With <see cref="FlagRedirect"/>: L7 visibility only (no proxy path = the flow passes unobserved).</summary>
    public const uint FlagVisibility = 4;
    [FieldOffset(0)] public uint PolicyId;
    [FieldOffset(4)] public uint Flags;
}

[StructLayout(LayoutKind.Explicit, Size = 16)]
public struct CtKey
{
    [FieldOffset(0)] public uint SAddr;
    [FieldOffset(4)] public uint DAddr;
    [FieldOffset(8)] public ushort SPort;
    [FieldOffset(10)] public ushort DPort;
    [FieldOffset(12)] public byte Proto;
    [FieldOffset(13)] public byte Dir;
    [FieldOffset(14)] public ushort Pad;
}

[StructLayout(LayoutKind.Explicit, Size = 48)]
public struct CtEntry
{
    [FieldOffset(0)] public ulong ExpiresNs;
    [FieldOffset(8)] public ulong Packets;
    [FieldOffset(16)] public ulong Bytes;
    [FieldOffset(24)] public uint SrcIdentity;
    [FieldOffset(28)] public uint PolicyId;
    [FieldOffset(32)] public byte TxClosing;
    [FieldOffset(33)] public byte RxClosing;
    [FieldOffset(34)] public byte SeenReply;
    [FieldOffset(35)] public byte LbNat;
    [FieldOffset(36)] public byte FromProxy;
    /// <summary>The trellis_policy_gen value under which the cached verdict was decided (0 = none).</summary>
    [FieldOffset(40)] public uint PolicyGen;
    [FieldOffset(44)] public uint PolicyFlags;
}

[StructLayout(LayoutKind.Explicit, Size = 64)]
public struct FlowEvent
{
    [FieldOffset(0)] public ulong TimestampNs; // CLOCK_MONOTONIC
    [FieldOffset(8)] public uint EndpointId;
    [FieldOffset(12)] public uint Ifindex;
    [FieldOffset(16)] public uint SrcIdentity;
    [FieldOffset(20)] public uint DstIdentity;
    [FieldOffset(24)] public uint SAddr; // network byte order
    [FieldOffset(28)] public uint DAddr;
    [FieldOffset(32)] public ushort SPort; // host order
    [FieldOffset(34)] public ushort DPort;
    [FieldOffset(36)] public byte Proto;
    [FieldOffset(37)] public byte Verdict;
    [FieldOffset(38)] public byte Reason;
    [FieldOffset(39)] public byte Dir;
    [FieldOffset(40)] public byte TcpFlags;
    [FieldOffset(41)] public byte IsReply;
    [FieldOffset(44)] public uint PolicyId;
    [FieldOffset(48)] public uint PktLen;
    [FieldOffset(52)] public uint FrontendId; // 0 = not load-balanced
    [FieldOffset(56)] public ulong CgroupId;  // socket events: the calling task's cgroup
}

[StructLayout(LayoutKind.Explicit, Size = 8)]
public struct NodeConfig
{
    public const uint FlagAudit = 1;
    public const uint FlagNoFlowEvents = 2;
    /// <summary>Same-node socket acceleration (sock_ops + sk_msg) is on.</summary>
    public const uint FlagSockAccel = 4;
    [FieldOffset(0)] public uint Flags;
    [FieldOffset(4)] public ushort ProxyPortBe; // 0 = no L7 proxy
}

[StructLayout(LayoutKind.Explicit, Size = 8)]
public struct Lb4FrontendKey : IEquatable<Lb4FrontendKey>
{
    [FieldOffset(0)] public uint Address; // network byte order
    [FieldOffset(4)] public ushort PortBe;
    [FieldOffset(6)] public byte Proto;

    public static Lb4FrontendKey Of(uint addressNetworkOrder, ushort port, byte proto) =>
        new() { Address = addressNetworkOrder, PortBe = BinaryPrimitives.ReverseEndianness(port), Proto = proto };

    public readonly bool Equals(Lb4FrontendKey o) => Address == o.Address && PortBe == o.PortBe && Proto == o.Proto;
    public override readonly bool Equals(object? obj) => obj is Lb4FrontendKey k && Equals(k);
    public override readonly int GetHashCode() => HashCode.Combine(Address, PortBe, Proto);
}

[StructLayout(LayoutKind.Explicit, Size = 16)]
public struct Lb4Frontend
{
    [FieldOffset(0)] public uint Id;
    [FieldOffset(4)] public uint Count;
    [FieldOffset(8)] public uint AffinityTimeoutSeconds; // 0 = no session affinity
    [FieldOffset(12)] public uint Flags;

    /// <summary>Reachable from outside the node: translated per packet at TC (NodePort).</summary>
    public const uint FlagExternal = 1;
    /// <summary>Per-packet selection by the frontend's Maglev table.</summary>
    public const uint FlagMaglev = 2;
    /// <summary>Entries of one Maglev table (LB4_MAGLEV_M).</summary>
    public const int MaglevTableSize = 4093;
}

[StructLayout(LayoutKind.Explicit, Size = 16)]
public struct Lb4AffinityKey
{
    [FieldOffset(0)] public ulong NetnsCookie;
    [FieldOffset(8)] public uint FrontendId;
}

[StructLayout(LayoutKind.Explicit, Size = 24)]
public struct Lb4Affinity
{
    [FieldOffset(0)] public ulong LastUsedNs;
    [FieldOffset(8)] public uint Slot;
    [FieldOffset(12)] public uint BackendAddress;
    [FieldOffset(16)] public ushort BackendPortBe;
}

[StructLayout(LayoutKind.Explicit, Size = 8)]
public struct Lb4BackendKey
{
    [FieldOffset(0)] public uint FrontendId;
    [FieldOffset(4)] public uint Slot;
}

[StructLayout(LayoutKind.Explicit, Size = 8)]
public struct Lb4Backend
{
    [FieldOffset(0)] public uint Address; // network byte order
    [FieldOffset(4)] public ushort PortBe;

    public static Lb4Backend Of(uint addressNetworkOrder, ushort port) =>
        new() { Address = addressNetworkOrder, PortBe = BinaryPrimitives.ReverseEndianness(port) };
}

[StructLayout(LayoutKind.Explicit, Size = 16)]
public struct Lb4NatKey
{
    public const byte Forward = 0;
    public const byte Reverse = 1;
    [FieldOffset(0)] public uint SAddr;
    [FieldOffset(4)] public uint DAddr;
    [FieldOffset(8)] public ushort SPortBe;
    [FieldOffset(10)] public ushort DPortBe;
    [FieldOffset(12)] public byte Proto;
    [FieldOffset(13)] public byte Dir;
}

[StructLayout(LayoutKind.Explicit, Size = 16)]
public struct Lb4Nat
{
    [FieldOffset(0)] public uint Address;
    [FieldOffset(4)] public ushort PortBe;
    [FieldOffset(6)] public byte Closing;
    [FieldOffset(8)] public uint FrontendId;
    [FieldOffset(12)] public uint Ifindex;
}

[StructLayout(LayoutKind.Explicit, Size = 12)]
public struct Lb4Revnat
{
    [FieldOffset(0)] public uint FrontendAddress;
    [FieldOffset(4)] public uint BackendAddress;
    [FieldOffset(8)] public ushort FrontendPortBe;
    [FieldOffset(10)] public ushort BackendPortBe;
}

public static class Counters
{
    public const uint EventsLost = 0;
    public const uint Forwarded = 1;
    public const uint Dropped = 2;
    public const uint Audit = 3;
    public const uint LbTranslated = 4;
    public const uint LbNoBackend = 5;
    public const uint LbNat = 6;
    public const uint Max = 8;
}

/// <summary>Key of trellis_sock_accel: a spliced socket's own (local, remote) addresses and ports, network order.</summary>
[StructLayout(LayoutKind.Explicit, Size = 12)]
public struct SockKey
{
    [FieldOffset(0)] public uint Local;
    [FieldOffset(4)] public uint Remote;
    [FieldOffset(8)] public ushort LocalPortBe;
    [FieldOffset(10)] public ushort RemotePortBe;
}

/// <summary>skb marks shared by the datapath, the node's policy routing and the L7 proxy's sockets (bpf/lib/maps.h).</summary>
public static class ProxyMarks
{
    /// <summary>Set by the datapath on packets handed to the proxy; the node routes them locally.</summary>
    public const uint ToProxy = 0x200;
    /// <summary>SO_MARK of the proxy's upstream sockets.</summary>
    public const uint FromProxy = 0xA00;
    public const uint Mask = 0xF00;
    /// <summary>The policy routing table with the local default route for <see cref="ToProxy"/> packets (Cilium uses the same number).</summary>
    public const int RouteTable = 2004;
}

/// <summary>Map and program names as declared in bpf/.</summary>
public static class Names
{
    public const string Ipcache = "trellis_ipcache";
    public const string Endpoints = "trellis_endpoints";
    public const string Policy = "trellis_policy";
    public const string Conntrack = "trellis_ct";
    public const string Events = "trellis_events";
    public const string Counters = "trellis_counters";
    public const string Config = "trellis_config";
    public const string PolicyGen = "trellis_policy_gen";
    public const string Lxc = "trellis_lxc";
    public const string Lb4Frontends = "trellis_lb4_frontends";
    public const string Lb4Backends = "trellis_lb4_backends";
    public const string Lb4Sockets = "trellis_lb4_sockets";
    public const string Lb4Nat = "trellis_lb4_nat";
    public const string Lb4Maglev = "trellis_lb4_maglev";
    public const string FromNetdev = "from_netdev";
    public const string FromContainer = "from_container";
    public const string ToContainer = "to_container";
    public const string ProxyLookup = "proxy_lookup";
    public const string SockAccel = "trellis_sock_accel";
    public const string SockAccelMsg = "sock_accel_msg";
    public const string ProxySock = "trellis_proxy_sock";
    public const uint PolicyMaxEntries = 16384;
}
