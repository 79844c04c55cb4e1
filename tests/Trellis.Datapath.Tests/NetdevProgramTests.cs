using System.Buffers.Binary;
using System.Net;
using System.Runtime.InteropServices;
using Trellis.Bpf;

namespace Trellis.Datapath.Tests;

/// <summary>Needs root and bpffs. The per-packet load balancer (bpf/netdev.c: NodePort DNAT) and its reverse
/// (bpf/lxc.c from_container), run with BPF_PROG_TEST_RUN on crafted packets with real checksums.</summary>
public sealed class NetdevProgramTests : IDisposable
{
    private const string NodeIp = "192.0.2.1";
    private const string Client = "198.51.100.7";
    private const string BackendA = "10.200.0.5";
    private const string BackendB = "10.200.0.6";
    private const ushort NodePort = 30080;
    private const ushort Target = 8080;
    private const uint FrontendId = 5 << 8 | 1;
    private const uint TcActOk = 0, TcActRedirect = 7;

    private readonly string _pinRoot = $"/sys/fs/bpf/trellis-test-{Guid.NewGuid().ToString("N")[..8]}";
    private readonly NodeDatapath _dp;
    private readonly RingBuffer _ring;
    private readonly List<FlowEvent> _events = new();

    public NetdevProgramTests()
    {
        _dp = NodeDatapath.Load(_pinRoot);
        _ring = new RingBuffer(_dp.Events, r => _events.Add(MemoryMarshal.Read<FlowEvent>(r)));
    }

    public void Dispose()
    {
        _ring.Dispose();
        _dp.Dispose();
        NodeDatapath.RemovePins(_pinRoot);
    }

    private static uint Addr(string ip) => NetOrder.FromAddress(IPAddress.Parse(ip));
    private static string Dst(byte[] p) => new IPAddress(p.AsSpan(30, 4)).ToString();
    private static string Src(byte[] p) => new IPAddress(p.AsSpan(26, 4)).ToString();
    private static ushort DPort(byte[] p) => BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(36));
    private static ushort SPort(byte[] p) => BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(34));

    private void Frontend(uint flags, params string[] backends)
    {
        for (int i = 0; i < backends.Length; i++)
            _dp.Lb4Backends.Update(new Lb4BackendKey { FrontendId = FrontendId, Slot = (uint)i }, Lb4Backend.Of(Addr(backends[i]), Target));
        _dp.Lb4Frontends.Update(Lb4FrontendKey.Of(Addr(NodeIp), NodePort, Packets.Tcp),
            new Lb4Frontend { Id = FrontendId, Count = (uint)backends.Length, Flags = flags });
    }

    private TestRunResult FromNetdev(byte[] packet) => _dp.FromNetdev.TestRun(packet);

    private List<FlowEvent> TakeEvents()
    {
        _ring.Consume(); // the programs submit without waking a consumer
        var e = _events.ToList();
        _events.Clear();
        return e;
    }

    private static byte[] Tcp(ushort sport, byte flags) =>
        Packets.WithChecksums(Packets.TcpPacket(Client, sport, NodeIp, NodePort, flags, payload: 5));

    [Fact]
    public void A_NodePort_packet_is_DNATed_to_a_backend_with_valid_checksums()
    {
        Frontend(Lb4Frontend.FlagExternal, BackendA);
        var r = FromNetdev(Tcp(40000, Packets.Syn));
        Assert.Equal(TcActOk, r.ReturnValue);
        Assert.Equal((BackendA, Target), (Dst(r.DataOut), DPort(r.DataOut)));
        Assert.Equal((Client, (ushort)40000), (Src(r.DataOut), SPort(r.DataOut)));
        Assert.Equal((true, true), Packets.ChecksumsValid(r.DataOut));

        // Both NAT entries: the client's tuple -> backend, and the reply's tuple -> frontend (and the device).
        var fwd = new Lb4NatKey { SAddr = Addr(Client), DAddr = Addr(NodeIp), SPortBe = Be(40000), DPortBe = Be(NodePort), Proto = Packets.Tcp, Dir = Lb4NatKey.Forward };
        Assert.True(_dp.Lb4Nat.TryLookup(fwd, out Lb4Nat f));
        Assert.Equal((Addr(BackendA), Be(Target), FrontendId), (f.Address, f.PortBe, f.FrontendId));
        var rev = new Lb4NatKey { SAddr = Addr(BackendA), DAddr = Addr(Client), SPortBe = Be(Target), DPortBe = Be(40000), Proto = Packets.Tcp, Dir = Lb4NatKey.Reverse };
        Assert.True(_dp.Lb4Nat.TryLookup(rev, out Lb4Nat b));
        Assert.Equal((Addr(NodeIp), Be(NodePort), FrontendId, 1u), (b.Address, b.PortBe, b.FrontendId, b.Ifindex));
        Assert.Equal(1UL, _dp.Counter(Counters.LbNat));
    }

    [Fact]
    public void A_UDP_datagram_keeps_valid_checksums_and_a_zero_checksum_stays_zero()
    {
        _dp.Lb4Backends.Update(new Lb4BackendKey { FrontendId = FrontendId, Slot = 0 }, Lb4Backend.Of(Addr(BackendA), 5353));
        _dp.Lb4Frontends.Update(Lb4FrontendKey.Of(Addr(NodeIp), 30053, Packets.Udp), new Lb4Frontend { Id = FrontendId, Count = 1, Flags = Lb4Frontend.FlagExternal });
        var r = FromNetdev(Packets.WithChecksums(Packets.UdpPacket(Client, 5000, NodeIp, 30053, payload: 7)));
        Assert.Equal((BackendA, (ushort)5353), (Dst(r.DataOut), DPort(r.DataOut)));
        Assert.Equal((true, true), Packets.ChecksumsValid(r.DataOut));

        var none = Packets.WithChecksums(Packets.UdpPacket(Client, 5001, NodeIp, 30053, payload: 7));
        none[14 + 20 + 6] = none[14 + 20 + 7] = 0;
        r = FromNetdev(none);
        Assert.Equal(0, BinaryPrimitives.ReadUInt16BigEndian(r.DataOut.AsSpan(14 + 20 + 6)));
        Assert.True(Packets.ChecksumsValid(r.DataOut).Ip);
    }

    [Fact]
    public void An_open_flow_keeps_its_backend_and_a_new_SYN_after_close_selects_again()
    {
        Frontend(Lb4Frontend.FlagExternal, BackendA);
        Assert.Equal(BackendA, Dst(FromNetdev(Tcp(40001, Packets.Syn)).DataOut));
        // The backend leaves the service (e.g. terminating): the open flow still reaches it.
        Frontend(Lb4Frontend.FlagExternal, BackendB);
        Assert.Equal(BackendA, Dst(FromNetdev(Tcp(40001, Packets.Ack)).DataOut));
        Assert.Equal(BackendA, Dst(FromNetdev(Tcp(40001, Packets.Fin | Packets.Ack)).DataOut));
        // A retransmitted SYN of an open flow would stay; after FIN the same tuple is a new connection.
        Assert.Equal(BackendB, Dst(FromNetdev(Tcp(40001, Packets.Syn)).DataOut));
    }

    [Fact]
    public void A_ClusterIP_frontend_is_not_translated_from_outside()
    {
        Frontend(flags: 0, BackendA);
        var packet = Tcp(40002, Packets.Syn);
        var r = FromNetdev(packet);
        Assert.Equal(TcActOk, r.ReturnValue);
        Assert.Equal(packet, r.DataOut);
    }

    [Fact]
    public void No_backend_passes_the_packet_to_the_stack_and_reports_the_drop()
    {
        Frontend(Lb4Frontend.FlagExternal);
        var packet = Tcp(40003, Packets.Syn);
        var r = FromNetdev(packet);
        Assert.Equal(TcActOk, r.ReturnValue);
        Assert.Equal(packet, r.DataOut); // the node's stack answers with a RST: nothing listens on a NodePort
        var e = Assert.Single(TakeEvents());
        Assert.Equal(((byte)Verdict.Dropped, (byte)DropReason.NoServiceBackend, FrontendId), (e.Verdict, e.Reason, e.FrontendId));
        Assert.Equal(1UL, _dp.Counter(Counters.LbNoBackend));
    }

    [Fact]
    public void A_Maglev_frontend_picks_from_its_table()
    {
        Frontend(Lb4Frontend.FlagExternal | Lb4Frontend.FlagMaglev, BackendA, BackendA);
        // No table installed: treated as no backend, never a random pick.
        Assert.Equal(Tcp(40004, Packets.Syn), FromNetdev(Tcp(40004, Packets.Syn)).DataOut);
        _dp.SetMaglevTable(FrontendId, Enumerable.Repeat(Lb4Backend.Of(Addr(BackendB), Target), Lb4Frontend.MaglevTableSize).ToArray());
        for (ushort port = 41000; port < 41020; port++)
            Assert.Equal(BackendB, Dst(FromNetdev(Tcp(port, Packets.Syn)).DataOut));
    }

    [Fact]
    public void The_reply_of_a_DNATed_flow_leaves_the_pod_with_the_NodePort_address()
    {
        const uint epId = 3;
        _dp.Endpoints.Update(1u, new EndpointInfo { EndpointId = epId, Identity = 300, Ipv4 = Addr(BackendA), Flags = 0 });
        _dp.SetIpcache(Addr(BackendA), 300, IpcacheValue.FlagLocalEndpoint);
        Frontend(Lb4Frontend.FlagExternal, BackendA);
        var inbound = FromNetdev(Tcp(40005, Packets.Syn)).DataOut;
        Assert.Equal(TcActOk, _dp.ToContainer.TestRun(inbound).ReturnValue);
        var e = Assert.Single(TakeEvents());
        Assert.Equal(FrontendId, e.FrontendId); // the pod's flow names the service it came through

        var reply = Packets.WithChecksums(Packets.TcpPacket(BackendA, Target, Client, 40005, Packets.Syn | Packets.Ack, payload: 3));
        var r = _dp.FromContainer.TestRun(reply);
        Assert.Equal(TcActRedirect, r.ReturnValue); // straight to the device the request came in on
        Assert.Equal((NodeIp, NodePort), (Src(r.DataOut), SPort(r.DataOut)));
        Assert.Equal((true, true), Packets.ChecksumsValid(r.DataOut));
    }

    private static ushort Be(ushort v) => BinaryPrimitives.ReverseEndianness(v);
}
