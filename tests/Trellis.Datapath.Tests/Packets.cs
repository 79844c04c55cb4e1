using System.Buffers.Binary;
using System.Net;

namespace Trellis.Datapath.Tests;

/// <summary>Crafted Ethernet frames for BPF_PROG_TEST_RUN. Checksums are not filled: the datapath does not read them.</summary>
internal static class Packets
{
    public const byte Tcp = 6, Udp = 17, Icmp = 1;
    public const byte Syn = 0x02, Ack = 0x10, Fin = 0x01, Rst = 0x04;

    public static byte[] TcpPacket(string src, ushort sport, string dst, ushort dport, byte flags = Syn, int payload = 0) =>
        Ipv4(src, dst, Tcp, L4Tcp(sport, dport, flags), payload);

    public static byte[] UdpPacket(string src, ushort sport, string dst, ushort dport, int payload = 4)
    {
        var udp = new byte[8];
        BinaryPrimitives.WriteUInt16BigEndian(udp.AsSpan(0), sport);
        BinaryPrimitives.WriteUInt16BigEndian(udp.AsSpan(2), dport);
        BinaryPrimitives.WriteUInt16BigEndian(udp.AsSpan(4), (ushort)(8 + payload));
        return Ipv4(src, dst, Udp, udp, payload);
    }

    public static byte[] IcmpEcho(string src, string dst, bool reply, ushort id, ushort seq = 1)
    {
        var icmp = new byte[8];
        icmp[0] = reply ? (byte)0 : (byte)8;
        BinaryPrimitives.WriteUInt16BigEndian(icmp.AsSpan(4), id);
        BinaryPrimitives.WriteUInt16BigEndian(icmp.AsSpan(6), seq);
        return Ipv4(src, dst, Icmp, icmp, 16);
    }

    /// <summary>IPv4 whose protocol says TCP but carries only <paramref name="l4Bytes"/> bytes of it.</summary>
    public static byte[] TruncatedTcp(string src, string dst, int l4Bytes) =>
        Ipv4(src, dst, Tcp, L4Tcp(1000, 80, Syn)[..l4Bytes], 0);

    /// <summary>A non-first fragment (offset 185 * 8 bytes) of a UDP datagram.</summary>
    public static byte[] LaterFragment(string src, string dst)
    {
        var p = UdpPacket(src, 5000, dst, 53);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(14 + 6), 185);
        return p;
    }

    /// <summary>The same packet with 4 bytes of IP options (NOPs) after the fixed header (IHL 6).</summary>
    public static byte[] WithIpOptions(byte[] packet)
    {
        var p = new byte[packet.Length + 4];
        packet.AsSpan(0, 34).CopyTo(p);
        p.AsSpan(34, 4).Fill(1); // IPOPT_NOOP
        packet.AsSpan(34).CopyTo(p.AsSpan(38));
        p[14] = 0x46;
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(16), (ushort)(BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(16)) + 4));
        return p;
    }

    public static byte[] Arp()
    {
        var p = new byte[14 + 28];
        Ethernet(p, 0x0806);
        return p;
    }

    public static byte[] Ipv6Udp()
    {
        var p = new byte[14 + 40 + 8];
        Ethernet(p, 0x86DD);
        p[14] = 0x60;
        p[14 + 6] = Udp;
        return p;
    }

    /// <summary>Fills the IPv4 header checksum and the TCP/UDP checksum (over the pseudo header), so a test can
    /// check that a rewrite kept them right.</summary>
    public static byte[] WithChecksums(byte[] p)
    {
        var ip = p.AsSpan(14);
        int ihl = (ip[0] & 0xF) * 4;
        ip[10] = ip[11] = 0;
        BinaryPrimitives.WriteUInt16BigEndian(ip[10..], Fold(Sum(ip[..ihl])));
        int l4Len = BinaryPrimitives.ReadUInt16BigEndian(ip[2..]) - ihl;
        var l4 = ip.Slice(ihl, l4Len);
        int csumOff = ip[9] == Tcp ? 16 : 6;
        l4[csumOff] = l4[csumOff + 1] = 0;
        var c = Fold(PseudoSum(ip, l4Len) + Sum(l4));
        BinaryPrimitives.WriteUInt16BigEndian(l4[csumOff..], c == 0 && ip[9] == Udp ? (ushort)0xFFFF : c);
        return p;
    }

    /// <summary>Whether the IPv4 header checksum and the TCP/UDP checksum verify (a UDP checksum of 0 means none).</summary>
    public static (bool Ip, bool L4) ChecksumsValid(byte[] p)
    {
        var ip = p.AsSpan(14);
        int ihl = (ip[0] & 0xF) * 4;
        bool ipOk = Fold(Sum(ip[..ihl])) == 0;
        int l4Len = BinaryPrimitives.ReadUInt16BigEndian(ip[2..]) - ihl;
        var l4 = ip.Slice(ihl, l4Len);
        if (ip[9] == Udp && BinaryPrimitives.ReadUInt16BigEndian(l4[6..]) == 0) return (ipOk, true);
        return (ipOk, Fold(PseudoSum(ip, l4Len) + Sum(l4)) == 0);
    }

    private static long PseudoSum(ReadOnlySpan<byte> ip, int l4Len) => Sum(ip.Slice(12, 8)) + ip[9] + l4Len;

    private static long Sum(ReadOnlySpan<byte> b)
    {
        long s = 0;
        for (int i = 0; i + 1 < b.Length; i += 2) s += BinaryPrimitives.ReadUInt16BigEndian(b[i..]);
        if (b.Length % 2 == 1) s += b[^1] << 8;
        return s;
    }

    private static ushort Fold(long s)
    {
        while (s >> 16 != 0) s = (s & 0xFFFF) + (s >> 16);
        return (ushort)~s;
    }

    private static byte[] L4Tcp(ushort sport, ushort dport, byte flags)
    {
        var tcp = new byte[20];
        BinaryPrimitives.WriteUInt16BigEndian(tcp.AsSpan(0), sport);
        BinaryPrimitives.WriteUInt16BigEndian(tcp.AsSpan(2), dport);
        tcp[12] = 5 << 4; // data offset
        tcp[13] = flags;
        return tcp;
    }

    private static byte[] Ipv4(string src, string dst, byte proto, byte[] l4, int payload)
    {
        var p = new byte[14 + 20 + l4.Length + payload];
        Ethernet(p, 0x0800);
        var ip = p.AsSpan(14);
        ip[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(ip[2..], (ushort)(20 + l4.Length + payload));
        ip[8] = 64;
        ip[9] = proto;
        IPAddress.Parse(src).TryWriteBytes(ip[12..], out _);
        IPAddress.Parse(dst).TryWriteBytes(ip[16..], out _);
        l4.CopyTo(ip[20..]);
        return p;
    }

    private static void Ethernet(byte[] p, ushort type)
    {
        p[0] = 0x02; p[5] = 0x02; // dst 02:00:00:00:00:02
        p[6] = 0x02; p[11] = 0x01; // src 02:00:00:00:00:01
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(12), type);
    }
}
