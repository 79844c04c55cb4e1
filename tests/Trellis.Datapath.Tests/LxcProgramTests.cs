using System.Diagnostics;
using System.Net;
using System.Runtime.InteropServices;
using Trellis.Bpf;

namespace Trellis.Datapath.Tests;

/// <summary>Needs root and bpffs. The real lxc object, loaded per test under its own pin root, run with
/// BPF_PROG_TEST_RUN on crafted packets. A test run's skb device is the netns' loopback, so the endpoint
/// under test is keyed by ifindex 1 (checked by <see cref="Test_runs_see_the_loopback_ifindex"/>).</summary>
public sealed class LxcProgramTests : IDisposable
{
    private const int TestIfindex = 1;
    private const uint EpId = 7;
    private const uint EpIdentity = 1000;
    private const uint PeerIdentity = 2000;
    private const string EpIp = "10.200.0.7";
    private const string PeerIp = "10.200.0.9";
    private const string UnknownIp = "192.0.2.50"; // not in the ipcache

    private const uint TcActOk = 0;
    private const uint TcActShot = 2;

    private readonly string _pinRoot = $"/sys/fs/bpf/trellis-test-{Guid.NewGuid().ToString("N")[..8]}";
    private readonly NodeDatapath _dp;
    private readonly RingBuffer _ring;
    private readonly List<FlowEvent> _events = new();

    public LxcProgramTests()
    {
        _dp = NodeDatapath.Load(_pinRoot);
        _ring = new RingBuffer(_dp.Events, r => _events.Add(MemoryMarshal.Read<FlowEvent>(r)));
        _dp.SetIpcache(Addr(PeerIp), PeerIdentity);
    }

    public void Dispose()
    {
        _ring.Dispose();
        _dp.Dispose();
        NodeDatapath.RemovePins(_pinRoot);
    }

    // --- helpers ---

    private static uint Addr(string ip) => NetOrder.FromAddress(IPAddress.Parse(ip));

    private void AddEndpoint(uint flags)
    {
        var info = new EndpointInfo { EndpointId = EpId, Identity = EpIdentity, Ipv4 = Addr(EpIp), Flags = flags };
        _dp.Endpoints.Update((uint)TestIfindex, info);
        _dp.Ipcache.Update(IpcacheKey.Host(info.Ipv4), new IpcacheValue { Identity = EpIdentity, Flags = IpcacheValue.FlagLocalEndpoint });
    }

    private uint FromContainer(byte[] packet) => _dp.FromContainer.TestRun(packet).ReturnValue;
    private uint ToContainer(byte[] packet) => _dp.ToContainer.TestRun(packet).ReturnValue;

    private List<FlowEvent> TakeEvents()
    {
        _ring.Consume(); // the programs submit without waking a consumer
        Assert.Equal(0, _ring.HandlerErrors);
        var e = _events.ToList();
        _events.Clear();
        return e;
    }

    // Port 0 = any port, as the rules are written in these tests.
    private void Allow(params (uint Identity, ushort Port, byte Proto, TrafficDirection Dir, uint PolicyId)[] rules) =>
        _dp.ReplacePolicy(EpId, rules.Select(r => Statement(r.Identity, r.Port, r.Proto, r.Dir, r.PolicyId, deny: false)));

    private static PolicyStatement Statement(uint identity, ushort port, byte proto, TrafficDirection dir, uint policyId, bool deny,
        ushort? endPort = null) =>
        new(identity, dir, proto, port, endPort ?? (port == 0 ? ushort.MaxValue : port), policyId, deny);

    private static CtKey Ct(string src, ushort sport, string dst, ushort dport, byte proto, TrafficDirection dir) =>
        new() { SAddr = Addr(src), DAddr = Addr(dst), SPort = sport, DPort = dport, Proto = proto, Dir = (byte)dir };

    private static ulong MonotonicNowNs() => (ulong)(Stopwatch.GetTimestamp() * (1_000_000_000.0 / Stopwatch.Frequency));

    private static void AssertDropped(FlowEvent e, DropReason reason)
    {
        Assert.Equal((byte)Verdict.Dropped, e.Verdict);
        Assert.Equal((byte)reason, e.Reason);
    }

    // --- forwarding and drops ---

    [Fact]
    public void Test_runs_see_the_loopback_ifindex()
    {
        AddEndpoint(0);
        FromContainer(Packets.TcpPacket(EpIp, 40000, PeerIp, 80));
        Assert.Equal((uint)TestIfindex, Assert.Single(TakeEvents()).Ifindex);
    }

    [Fact]
    public void Egress_with_http_rules_fails_closed_without_a_proxy_and_other_ports_never_see_it()
    {
        AddEndpoint(EndpointInfo.FlagEnforceEgress);
        Allow((PeerIdentity, 80, Packets.Tcp, TrafficDirection.Egress, 5));
        var entries = _dp.ReadPolicy(EpId).ToDictionary(e => e.Key, e => e.Value with { Flags = e.Value.Flags | PolicyValue.FlagRedirect });
        _dp.ReplacePolicy(EpId, entries);

        // No proxy configured: the flow needs L7 and nothing can check it, so it fails closed.
        Assert.Equal(TcActShot, FromContainer(Packets.TcpPacket(EpIp, 40000, PeerIp, 80)));
        var drop = Assert.Single(TakeEvents());
        AssertDropped(drop, DropReason.L7Denied);

        // (Handing the SYN to a listener needs a real TC ingress: BPF_PROG_TEST_RUN skbs are not "at TC ingress",
        // so bpf_sk_assign refuses them. That path is covered with real traffic once the agent runs the proxy; the
        // mechanism is verified in docs/l7-proxy.md.)
        // Ports without HTTP rules never see the proxy.
        Allow((PeerIdentity, 81, Packets.Tcp, TrafficDirection.Egress, 6));
        Assert.Equal(TcActOk, FromContainer(Packets.TcpPacket(EpIp, 40002, PeerIp, 81)));
        Assert.Equal((byte)Verdict.Forwarded, Assert.Single(TakeEvents()).Verdict);
    }

    // --- L7 redirection: what BPF_PROG_TEST_RUN can check (no bpf_sk_assign success outside a real TC ingress) ---

    private const uint MarkFromProxy = ProxyMarks.FromProxy;

    private uint ToContainerWithMark(byte[] packet, uint mark)
    {
        // struct __sk_buff up to queue_mapping: len, pkt_type must be 0; mark is the one field set.
        var ctx = new byte[16];
        BitConverter.TryWriteBytes(ctx.AsSpan(8), mark);
        return _dp.ToContainer.TestRun(packet, ctx).ReturnValue;
    }

    private void SetPolicy(uint endpointId, params (uint Identity, ushort Port, TrafficDirection Dir, uint PolicyId, uint Flags)[] rules) =>
        _dp.ReplacePolicy(endpointId, rules.SelectMany(r => PolicyMapBuilder.Blocks(Statement(r.Identity, r.Port, Packets.Tcp, r.Dir, r.PolicyId, false))
            .Select(k => (k, new PolicyValue { PolicyId = r.PolicyId, Flags = r.Flags }))).ToDictionary(x => x.k, x => x.Item2));

    [Fact]
    public void Ingress_http_rules_of_a_local_destination_redirect_at_the_clients_from_container()
    {
        const uint serverEp = 77;
        AddEndpoint(0); // the client: nothing enforced of its own
        _dp.Ipcache.Update(IpcacheKey.Host(Addr(PeerIp)), new IpcacheValue
        {
            Identity = PeerIdentity, Flags = IpcacheValue.FlagLocalEndpoint | IpcacheValue.FlagL7Ingress, EndpointId = serverEp,
        });
        SetPolicy(serverEp,
            (EpIdentity, 80, TrafficDirection.Ingress, 3, PolicyValue.FlagRedirect),
            (EpIdentity, 81, TrafficDirection.Ingress, 4, 0),
            (EpIdentity, 82, TrafficDirection.Ingress, 5, PolicyValue.FlagRedirect | PolicyValue.FlagVisibility));

        // Port 80 needs the proxy and none listens: refused at the client's veth, named by the server's policy.
        Assert.Equal(TcActShot, FromContainer(Packets.TcpPacket(EpIp, 40000, PeerIp, 80)));
        var drop = Assert.Single(TakeEvents());
        AssertDropped(drop, DropReason.L7Denied);
        Assert.Equal(3u, drop.PolicyId);
        // An L4-only port of the same server, and a visibility-only port (no proxy: passes unobserved).
        Assert.Equal(TcActOk, FromContainer(Packets.TcpPacket(EpIp, 40001, PeerIp, 81)));
        Assert.Equal(TcActOk, FromContainer(Packets.TcpPacket(EpIp, 40002, PeerIp, 82)));
        Assert.All(TakeEvents(), e => Assert.Equal((byte)Verdict.Forwarded, e.Verdict));
        // Without the flag in the ipcache the server's map is not consulted at all.
        _dp.Ipcache.Update(IpcacheKey.Host(Addr(PeerIp)), new IpcacheValue { Identity = PeerIdentity, Flags = IpcacheValue.FlagLocalEndpoint, EndpointId = serverEp });
        Assert.Equal(TcActOk, FromContainer(Packets.TcpPacket(EpIp, 40003, PeerIp, 80)));
    }

    [Fact]
    public void To_container_refuses_an_http_flow_that_bypassed_the_proxy_and_tracks_the_proxys_upstream()
    {
        AddEndpoint(EndpointInfo.FlagEnforceIngress | EndpointInfo.FlagRedirectIngress);
        SetPolicy(EpId, (PeerIdentity, 8080, TrafficDirection.Ingress, 9, PolicyValue.FlagRedirect),
            (PeerIdentity, 8081, TrafficDirection.Ingress, 10, PolicyValue.FlagRedirect | PolicyValue.FlagVisibility));

        // From the host or outside: no TC ingress left to redirect from, so an enforced L7 port fails closed...
        Assert.Equal(TcActShot, ToContainer(Packets.TcpPacket(PeerIp, 40000, EpIp, 8080, Packets.Syn)));
        AssertDropped(Assert.Single(TakeEvents()), DropReason.L7Denied);
        // ...and a visibility-only port passes unobserved.
        Assert.Equal(TcActOk, ToContainer(Packets.TcpPacket(PeerIp, 40005, EpIp, 8081, Packets.Syn)));
        Assert.Equal((byte)Verdict.Forwarded, Assert.Single(TakeEvents()).Verdict);

        // The proxy's upstream connection (its socket mark) passed the proxy's check: forwarded, remembered.
        Assert.Equal(TcActOk, ToContainerWithMark(Packets.TcpPacket(PeerIp, 40001, EpIp, 8080, Packets.Syn), MarkFromProxy | 0x1000));
        var e = Assert.Single(TakeEvents());
        Assert.Equal((byte)Verdict.Forwarded, e.Verdict);
        Assert.Equal(PeerIdentity, e.SrcIdentity);
        Assert.True(_dp.Conntrack.TryLookup(Ct(PeerIp, 40001, EpIp, 8080, Packets.Tcp, TrafficDirection.Ingress), out CtEntry ct));
        Assert.Equal(1, ct.FromProxy);

        // The server's reply belongs to the proxy's socket; with no such socket (test run) it is dropped, not
        // delivered to the client, which never opened this connection.
        Assert.Equal(TcActShot, FromContainer(Packets.TcpPacket(EpIp, 8080, PeerIp, 40001, (byte)(Packets.Syn | Packets.Ack))));
        AssertDropped(Assert.Single(TakeEvents()), DropReason.L7Denied);

        // Another mark is not the proxy's.
        Assert.Equal(TcActShot, ToContainerWithMark(Packets.TcpPacket(PeerIp, 40002, EpIp, 8080, Packets.Syn), ProxyMarks.ToProxy));
        AssertDropped(Assert.Single(TakeEvents()), DropReason.L7Denied);
    }

    [Fact]
    public void Egress_redirect_entries_are_looked_up_even_where_egress_is_not_enforced()
    {
        AddEndpoint(EndpointInfo.FlagRedirectEgress); // visibility on an unenforced direction
        SetPolicy(EpId, (0, 80, TrafficDirection.Egress, 0, PolicyValue.FlagRedirect));
        Assert.Equal(TcActShot, FromContainer(Packets.TcpPacket(EpIp, 40000, PeerIp, 80)));
        AssertDropped(Assert.Single(TakeEvents()), DropReason.L7Denied);
        Assert.Equal(TcActOk, FromContainer(Packets.TcpPacket(EpIp, 40001, PeerIp, 81))); // not enforced: other ports pass
        Assert.Equal((byte)Verdict.Forwarded, Assert.Single(TakeEvents()).Verdict);

        AddEndpoint(0); // without the flag the map is not consulted
        Assert.Equal(TcActOk, FromContainer(Packets.TcpPacket(EpIp, 40002, PeerIp, 80)));
    }

    [Fact]
    public void With_flow_events_off_verdicts_and_counters_stay_and_nothing_is_reported()
    {
        AddEndpoint(EndpointInfo.FlagEnforceIngress);
        _dp.SetNodeConfig(audit: false, flowEvents: false);
        Assert.Equal(TcActOk, FromContainer(Packets.TcpPacket(EpIp, 40000, PeerIp, 80)));
        Assert.Equal(TcActShot, ToContainer(Packets.TcpPacket(PeerIp, 40001, EpIp, 80)));
        Assert.Empty(TakeEvents());
        Assert.Equal(1UL, _dp.Counter(Counters.Dropped));
        _dp.SetNodeConfig(audit: false, flowEvents: true);
        Assert.Equal(TcActShot, ToContainer(Packets.TcpPacket(PeerIp, 40002, EpIp, 80)));
        Assert.Single(TakeEvents());
    }

    [Fact]
    public void Egress_with_enforcement_off_is_forwarded_and_reported()
    {
        AddEndpoint(0);
        var packet = Packets.TcpPacket(EpIp, 40000, PeerIp, 80, Packets.Syn);
        Assert.Equal(TcActOk, FromContainer(packet));

        var e = Assert.Single(TakeEvents());
        Assert.Equal((byte)Verdict.Forwarded, e.Verdict);
        Assert.Equal((byte)DropReason.None, e.Reason);
        Assert.Equal((byte)TrafficDirection.Egress, e.Dir);
        Assert.Equal(EpId, e.EndpointId);
        Assert.Equal(EpIdentity, e.SrcIdentity);
        Assert.Equal(PeerIdentity, e.DstIdentity);
        Assert.Equal(Addr(EpIp), e.SAddr);
        Assert.Equal(Addr(PeerIp), e.DAddr);
        Assert.Equal((ushort)40000, e.SPort);
        Assert.Equal((ushort)80, e.DPort);
        Assert.Equal(Packets.Tcp, e.Proto);
        Assert.Equal(Packets.Syn, e.TcpFlags);
        Assert.Equal(0, e.IsReply);
        Assert.Equal(0u, e.PolicyId);
        Assert.Equal((uint)packet.Length, e.PktLen);
        Assert.InRange(e.TimestampNs, 1UL, MonotonicNowNs());
    }

    [Fact]
    public void Second_packet_of_a_flow_is_forwarded_without_another_event()
    {
        AddEndpoint(0);
        FromContainer(Packets.TcpPacket(EpIp, 40000, PeerIp, 80, Packets.Syn));
        Assert.Equal(TcActOk, FromContainer(Packets.TcpPacket(EpIp, 40000, PeerIp, 80, Packets.Ack)));
        Assert.Single(TakeEvents());
        Assert.True(_dp.Conntrack.TryLookup(Ct(EpIp, 40000, PeerIp, 80, Packets.Tcp, TrafficDirection.Egress), out CtEntry ct));
        Assert.Equal(2UL, ct.Packets);
    }

    [Fact]
    public void Ingress_without_matching_policy_is_dropped_as_policy_denied()
    {
        AddEndpoint(EndpointInfo.FlagEnforceIngress);
        Assert.Equal(TcActShot, ToContainer(Packets.TcpPacket(PeerIp, 40000, EpIp, 8080)));

        var e = Assert.Single(TakeEvents());
        AssertDropped(e, DropReason.PolicyDenied);
        Assert.Equal((byte)TrafficDirection.Ingress, e.Dir);
        Assert.Equal(PeerIdentity, e.SrcIdentity);
        Assert.Equal(EpIdentity, e.DstIdentity);
        Assert.Equal((ushort)40000, e.SPort);
        Assert.Equal((ushort)8080, e.DPort);
        Assert.Equal(EpId, e.EndpointId);
        Assert.False(_dp.Conntrack.TryLookup(Ct(PeerIp, 40000, EpIp, 8080, Packets.Tcp, TrafficDirection.Ingress), out CtEntry _));
    }

    [Fact]
    public void Ingress_policy_for_another_port_does_not_allow()
    {
        AddEndpoint(EndpointInfo.FlagEnforceIngress);
        Allow((PeerIdentity, 443, Packets.Tcp, TrafficDirection.Ingress, 1), (PeerIdentity, 8080, Packets.Udp, TrafficDirection.Ingress, 2),
              (PeerIdentity, 8080, Packets.Tcp, TrafficDirection.Egress, 3), (PeerIdentity + 1, 8080, Packets.Tcp, TrafficDirection.Ingress, 4));
        Assert.Equal(TcActShot, ToContainer(Packets.TcpPacket(PeerIp, 40000, EpIp, 8080)));
        AssertDropped(Assert.Single(TakeEvents()), DropReason.PolicyDenied);
    }

    [Fact]
    public void Ingress_allowed_by_exact_rule_is_forwarded_and_creates_conntrack_entry()
    {
        AddEndpoint(EndpointInfo.FlagEnforceIngress);
        Allow((PeerIdentity, 8080, Packets.Tcp, TrafficDirection.Ingress, 42));
        var packet = Packets.TcpPacket(PeerIp, 40000, EpIp, 8080);
        Assert.Equal(TcActOk, ToContainer(packet));

        var e = Assert.Single(TakeEvents());
        Assert.Equal((byte)Verdict.Forwarded, e.Verdict);
        Assert.Equal(42u, e.PolicyId);
        Assert.Equal(PeerIdentity, e.SrcIdentity);

        Assert.True(_dp.Conntrack.TryLookup(Ct(PeerIp, 40000, EpIp, 8080, Packets.Tcp, TrafficDirection.Ingress), out CtEntry ct));
        Assert.Equal(1UL, ct.Packets);
        Assert.Equal((ulong)packet.Length, ct.Bytes);
        Assert.Equal(PeerIdentity, ct.SrcIdentity);
        Assert.Equal(42u, ct.PolicyId);
        Assert.Equal(0, ct.SeenReply);
        Assert.True(ct.ExpiresNs > MonotonicNowNs(), "a new entry expires in the future");
    }

    [Theory]
    [InlineData(0u, (ushort)8080, Packets.Tcp)]          // any peer
    [InlineData(PeerIdentity, (ushort)0, Packets.Tcp)]   // any port
    [InlineData(PeerIdentity, (ushort)0, (byte)0)]       // any protocol
    [InlineData(0u, (ushort)0, (byte)0)]                 // allow all
    public void Ingress_allowed_by_wildcard_rule(uint identity, ushort port, byte proto)
    {
        AddEndpoint(EndpointInfo.FlagEnforceIngress);
        Allow((identity, port, proto, TrafficDirection.Ingress, 9));
        Assert.Equal(TcActOk, ToContainer(Packets.TcpPacket(PeerIp, 40000, EpIp, 8080)));
        Assert.Equal(9u, Assert.Single(TakeEvents()).PolicyId);
    }

    [Fact]
    public void Most_specific_rule_wins_and_its_policy_id_is_reported()
    {
        AddEndpoint(EndpointInfo.FlagEnforceIngress);
        Allow((0, 0, 0, TrafficDirection.Ingress, 1), (PeerIdentity, 8080, Packets.Tcp, TrafficDirection.Ingress, 2));
        ToContainer(Packets.TcpPacket(PeerIp, 40000, EpIp, 8080));
        Assert.Equal(2u, Assert.Single(TakeEvents()).PolicyId);
    }

    [Fact]
    public void Deny_rule_drops_with_its_own_reason()
    {
        AddEndpoint(EndpointInfo.FlagEnforceIngress);
        _dp.ReplacePolicy(EpId, [Statement(PeerIdentity, 8080, Packets.Tcp, TrafficDirection.Ingress, 5, deny: true)]);
        Assert.Equal(TcActShot, ToContainer(Packets.TcpPacket(PeerIp, 40000, EpIp, 8080)));
        AssertDropped(Assert.Single(TakeEvents()), DropReason.PolicyDenyRule);
    }

    [Fact]
    public void Reply_of_an_allowed_ingress_flow_passes_egress_enforcement_without_an_egress_rule()
    {
        AddEndpoint(EndpointInfo.FlagEnforceIngress | EndpointInfo.FlagEnforceEgress);
        Allow((PeerIdentity, 8080, Packets.Tcp, TrafficDirection.Ingress, 1));
        Assert.Equal(TcActOk, ToContainer(Packets.TcpPacket(PeerIp, 40000, EpIp, 8080, Packets.Syn)));
        TakeEvents();

        // The SYN-ACK leaves the pod with the reversed tuple: a reply, not a new egress flow.
        Assert.Equal(TcActOk, FromContainer(Packets.TcpPacket(EpIp, 8080, PeerIp, 40000, (byte)(Packets.Syn | Packets.Ack))));
        Assert.Empty(TakeEvents());
        Assert.True(_dp.Conntrack.TryLookup(Ct(PeerIp, 40000, EpIp, 8080, Packets.Tcp, TrafficDirection.Ingress), out CtEntry ct));
        Assert.Equal(1, ct.SeenReply);
        Assert.False(_dp.Conntrack.TryLookup(Ct(EpIp, 8080, PeerIp, 40000, Packets.Tcp, TrafficDirection.Egress), out CtEntry _));

        // Egress really is enforced: the same pod opening a new connection is dropped.
        Assert.Equal(TcActShot, FromContainer(Packets.TcpPacket(EpIp, 8080, PeerIp, 40001, Packets.Syn)));
        AssertDropped(Assert.Single(TakeEvents()), DropReason.PolicyDenied);
    }

    [Fact]
    public void Egress_from_a_spoofed_source_is_dropped_as_invalid_source()
    {
        AddEndpoint(0);
        Assert.Equal(TcActShot, FromContainer(Packets.TcpPacket("10.200.0.66", 40000, PeerIp, 80)));
        var e = Assert.Single(TakeEvents());
        AssertDropped(e, DropReason.InvalidSource);
        Assert.Equal(Identities.Unknown, e.SrcIdentity);
        Assert.Equal(PeerIdentity, e.DstIdentity);
        Assert.Equal(Addr("10.200.0.66"), e.SAddr);
    }

    [Fact]
    public void Ingress_from_an_address_not_in_the_ipcache_has_the_world_identity()
    {
        AddEndpoint(EndpointInfo.FlagEnforceIngress);
        Assert.Equal(TcActShot, ToContainer(Packets.TcpPacket(UnknownIp, 40000, EpIp, 80)));
        Assert.Equal(Identities.World, Assert.Single(TakeEvents()).SrcIdentity);

        Allow((Identities.World, 80, Packets.Tcp, TrafficDirection.Ingress, 3));
        Assert.Equal(TcActOk, ToContainer(Packets.TcpPacket(UnknownIp, 40000, EpIp, 80)));
        var e = Assert.Single(TakeEvents());
        Assert.Equal((byte)Verdict.Forwarded, e.Verdict);
        Assert.Equal(Identities.World, e.SrcIdentity);
    }

    [Fact]
    public void Egress_to_an_address_not_in_the_ipcache_has_the_world_identity()
    {
        AddEndpoint(0);
        FromContainer(Packets.UdpPacket(EpIp, 5353, UnknownIp, 53));
        Assert.Equal(Identities.World, Assert.Single(TakeEvents()).DstIdentity);
    }

    [Fact]
    public void Packet_on_an_interface_without_endpoint_is_dropped_as_no_identity()
    {
        Assert.Equal(TcActShot, FromContainer(Packets.TcpPacket(EpIp, 40000, PeerIp, 80)));
        Assert.Equal(TcActShot, ToContainer(Packets.TcpPacket(PeerIp, 40000, EpIp, 80)));
        var events = TakeEvents();
        Assert.Equal(2, events.Count);
        Assert.All(events, e =>
        {
            AssertDropped(e, DropReason.NoIdentity);
            Assert.Equal(0u, e.EndpointId);
        });
    }

    [Fact]
    public void Arp_passes_untouched_even_without_an_endpoint()
    {
        Assert.Equal(TcActOk, FromContainer(Packets.Arp()));
        AddEndpoint(EndpointInfo.FlagEnforceIngress | EndpointInfo.FlagEnforceEgress);
        Assert.Equal(TcActOk, FromContainer(Packets.Arp()));
        Assert.Equal(TcActOk, ToContainer(Packets.Arp()));
        Assert.Empty(TakeEvents());
    }

    [Fact]
    public void Ipv6_is_dropped_as_unsupported_l3()
    {
        AddEndpoint(0);
        Assert.Equal(TcActShot, FromContainer(Packets.Ipv6Udp()));
        var e = Assert.Single(TakeEvents());
        AssertDropped(e, DropReason.UnsupportedL3);
        Assert.Equal(EpId, e.EndpointId);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(12)]
    [InlineData(19)]
    public void Truncated_tcp_header_is_dropped_as_invalid_packet(int tcpBytes)
    {
        AddEndpoint(0);
        Assert.Equal(TcActShot, FromContainer(Packets.TruncatedTcp(EpIp, PeerIp, tcpBytes)));
        AssertDropped(Assert.Single(TakeEvents()), DropReason.InvalidPacket);
    }

    [Fact]
    public void Ports_are_read_after_ip_options()
    {
        AddEndpoint(0);
        FromContainer(Packets.WithIpOptions(Packets.TcpPacket(EpIp, 40000, PeerIp, 80)));
        var e = Assert.Single(TakeEvents());
        Assert.Equal((byte)Verdict.Forwarded, e.Verdict);
        Assert.Equal((ushort)40000, e.SPort);
        Assert.Equal((ushort)80, e.DPort);
    }

    [Fact]
    public void Non_first_fragment_is_dropped_as_fragment()
    {
        AddEndpoint(0);
        Assert.Equal(TcActShot, FromContainer(Packets.LaterFragment(EpIp, PeerIp)));
        AssertDropped(Assert.Single(TakeEvents()), DropReason.Fragment);
    }

    [Fact]
    public void Udp_flow_is_tracked_with_its_ports()
    {
        AddEndpoint(EndpointInfo.FlagEnforceEgress);
        Allow((PeerIdentity, 53, Packets.Udp, TrafficDirection.Egress, 8));
        Assert.Equal(TcActOk, FromContainer(Packets.UdpPacket(EpIp, 5353, PeerIp, 53)));
        Assert.True(_dp.Conntrack.TryLookup(Ct(EpIp, 5353, PeerIp, 53, Packets.Udp, TrafficDirection.Egress), out CtEntry ct));
        Assert.Equal(8u, ct.PolicyId);
        Assert.Equal(TcActShot, FromContainer(Packets.UdpPacket(EpIp, 5353, PeerIp, 54)));
    }

    [Fact]
    public void Icmp_echo_allowed_by_a_protocol_rule_and_its_reply_passes_as_a_reply()
    {
        AddEndpoint(EndpointInfo.FlagEnforceIngress | EndpointInfo.FlagEnforceEgress);
        Allow((0, 0, Packets.Icmp, TrafficDirection.Egress, 11));

        Assert.Equal(TcActOk, FromContainer(Packets.IcmpEcho(EpIp, PeerIp, reply: false, id: 0x1234)));
        var e = Assert.Single(TakeEvents());
        Assert.Equal((byte)Verdict.Forwarded, e.Verdict);
        Assert.Equal(11u, e.PolicyId);
        Assert.Equal(Packets.Icmp, e.Proto);
        Assert.Equal((ushort)0x1234, e.SPort);

        // Ingress is enforced and has no rule, yet the echo reply passes: conntrack knows it.
        Assert.Equal(TcActOk, ToContainer(Packets.IcmpEcho(PeerIp, EpIp, reply: true, id: 0x1234)));
        Assert.Empty(TakeEvents());
        Assert.True(_dp.Conntrack.TryLookup(Ct(EpIp, 0x1234, PeerIp, 0, Packets.Icmp, TrafficDirection.Egress), out CtEntry ct));
        Assert.Equal(1, ct.SeenReply);

        // A reply with another id is not a reply to anything; a ping towards the pod is a new, unallowed flow.
        Assert.Equal(TcActShot, ToContainer(Packets.IcmpEcho(PeerIp, EpIp, reply: true, id: 0x9999)));
        Assert.Equal(TcActShot, ToContainer(Packets.IcmpEcho(PeerIp, EpIp, reply: false, id: 0x1234)));
        Assert.All(TakeEvents(), ev => AssertDropped(ev, DropReason.PolicyDenied));
    }

    [Fact]
    public void Removing_the_policy_drops_the_next_packet_of_an_established_flow()
    {
        AddEndpoint(EndpointInfo.FlagEnforceIngress);
        Allow((PeerIdentity, 8080, Packets.Tcp, TrafficDirection.Ingress, 1));
        Assert.Equal(TcActOk, ToContainer(Packets.TcpPacket(PeerIp, 40000, EpIp, 8080, Packets.Syn)));
        Assert.Equal(TcActOk, ToContainer(Packets.TcpPacket(PeerIp, 40000, EpIp, 8080, Packets.Ack)));
        TakeEvents();

        _dp.ReplacePolicy(EpId, Array.Empty<PolicyStatement>());
        Assert.Equal(TcActShot, ToContainer(Packets.TcpPacket(PeerIp, 40000, EpIp, 8080, Packets.Ack)));
        AssertDropped(Assert.Single(TakeEvents()), DropReason.PolicyDenied);
    }

    [Fact]
    public void An_established_flow_reuses_its_cached_verdict_until_the_policy_generation_moves()
    {
        AddEndpoint(EndpointInfo.FlagEnforceIngress);
        Allow((PeerIdentity, 8080, Packets.Tcp, TrafficDirection.Ingress, 1));
        Assert.Equal(TcActOk, ToContainer(Packets.TcpPacket(PeerIp, 40000, EpIp, 8080, Packets.Syn)));
        var key = Ct(PeerIp, 40000, EpIp, 8080, Packets.Tcp, TrafficDirection.Ingress);
        Assert.True(_dp.Conntrack.TryLookup(key, out CtEntry ct));
        Assert.NotEqual(0u, ct.PolicyGen);
        Assert.Equal(_dp.CurrentPolicyGen, ct.PolicyGen);

        // The map loses the rule behind the agent's back (no generation bump): the cached verdict still holds,
        // which shows the established packet did not look the policy up.
        Assert.True(_dp.Policy.Delete(EpId));
        Assert.Equal(TcActOk, ToContainer(Packets.TcpPacket(PeerIp, 40000, EpIp, 8080, Packets.Ack)));
        // Once the generation moves, the next packet is checked again and dropped.
        _dp.BumpPolicyGen();
        Assert.Equal(TcActShot, ToContainer(Packets.TcpPacket(PeerIp, 40000, EpIp, 8080, Packets.Ack)));
        TakeEvents();
    }

    [Fact]
    public void A_peer_changing_identity_is_checked_again_on_its_next_packet()
    {
        AddEndpoint(EndpointInfo.FlagEnforceIngress);
        Allow((PeerIdentity, 8080, Packets.Tcp, TrafficDirection.Ingress, 1));
        Assert.Equal(TcActOk, ToContainer(Packets.TcpPacket(PeerIp, 40000, EpIp, 8080, Packets.Syn)));
        Assert.Equal(TcActOk, ToContainer(Packets.TcpPacket(PeerIp, 40000, EpIp, 8080, Packets.Ack)));
        TakeEvents();

        _dp.SetIpcache(Addr(PeerIp), PeerIdentity + 1); // the peer's labels changed: an identity no rule allows
        Assert.Equal(TcActShot, ToContainer(Packets.TcpPacket(PeerIp, 40000, EpIp, 8080, Packets.Ack)));
        var drop = Assert.Single(TakeEvents());
        AssertDropped(drop, DropReason.PolicyDenied);
        Assert.Equal(PeerIdentity + 1, drop.SrcIdentity);
    }

    [Fact]
    public void A_verdict_allowed_only_by_audit_mode_is_never_cached()
    {
        AddEndpoint(EndpointInfo.FlagEnforceIngress | EndpointInfo.FlagAudit);
        Assert.Equal(TcActOk, ToContainer(Packets.TcpPacket(PeerIp, 40000, EpIp, 8080, Packets.Syn)));
        Assert.True(_dp.Conntrack.TryLookup(Ct(PeerIp, 40000, EpIp, 8080, Packets.Tcp, TrafficDirection.Ingress), out CtEntry ct));
        Assert.Equal(0u, ct.PolicyGen);
        TakeEvents();
    }

    // --- delivery straight into a pod of the node (bpf_redirect_peer) ---

    private const uint TcActRedirect = 7;
    private const int PeerIfindex = 4242; // any key: a test run's redirect is only returned, not carried out
    private const uint PeerEpId = 9;

    /// <summary>PeerIp becomes a local endpoint that takes direct delivery, enforcing ingress with the given rules.</summary>
    private void AddDirectPeer(params (uint Identity, ushort Port, byte Proto, TrafficDirection Dir, uint PolicyId)[] ingress)
    {
        var info = new EndpointInfo
        {
            EndpointId = PeerEpId, Identity = PeerIdentity, Ipv4 = Addr(PeerIp), Flags = EndpointInfo.FlagEnforceIngress | EndpointInfo.FlagDirect,
            Mac = Mac.ParseUnicast("02:aa:00:00:00:09")!.Value, HostMac = Mac.ParseUnicast("02:bb:00:00:00:09")!.Value,
        };
        _dp.ReplacePolicy(PeerEpId, ingress.Select(r => Statement(r.Identity, r.Port, r.Proto, r.Dir, r.PolicyId, deny: false)));
        _dp.Endpoints.Update((uint)PeerIfindex, info);
        _dp.SetIpcache(Addr(PeerIp), PeerIdentity, IpcacheValue.FlagLocalEndpoint, PeerEpId);
        _dp.Lxc.Update(Addr(PeerIp), (uint)PeerIfindex);
    }

    [Fact]
    public void A_packet_to_a_pod_of_the_node_is_routed_straight_into_its_interface()
    {
        AddEndpoint(EndpointInfo.FlagEnforceEgress);
        Allow((PeerIdentity, 7000, Packets.Tcp, TrafficDirection.Egress, 1));
        AddDirectPeer((EpIdentity, 7000, Packets.Tcp, TrafficDirection.Ingress, 2));

        var r = _dp.FromContainer.TestRun(Packets.WithChecksums(Packets.TcpPacket(EpIp, 40000, PeerIp, 7000, Packets.Syn, payload: 3)));
        Assert.Equal(TcActRedirect, r.ReturnValue);
        Assert.Equal("02aa00000009", Convert.ToHexStringLower(r.DataOut.AsSpan(0, 6))); // to the pod's interface
        Assert.Equal("02bb00000009", Convert.ToHexStringLower(r.DataOut.AsSpan(6, 6))); // from its gateway
        Assert.Equal(63, r.DataOut[14 + 8]); // one routed hop
        Assert.Equal((true, true), Packets.ChecksumsValid(r.DataOut));

        // Both ends' verdicts were given here: the sender's egress and the destination's ingress (with its interface).
        var events = TakeEvents();
        Assert.Equal(2, events.Count);
        Assert.Contains(events, e => e.Dir == (byte)TrafficDirection.Egress && e.EndpointId == EpId && e.Ifindex == TestIfindex && e.PolicyId == 1);
        Assert.Contains(events, e => e.Dir == (byte)TrafficDirection.Ingress && e.EndpointId == PeerEpId && e.Ifindex == PeerIfindex && e.PolicyId == 2);
        // The destination's conntrack entry exists as if its to_container had seen the packet: its replies pass.
        Assert.True(_dp.Conntrack.TryLookup(Ct(EpIp, 40000, PeerIp, 7000, Packets.Tcp, TrafficDirection.Ingress), out CtEntry _));
    }

    [Fact]
    public void The_destinations_ingress_policy_drops_at_the_senders_veth()
    {
        AddEndpoint(EndpointInfo.FlagEnforceEgress);
        Allow((PeerIdentity, 7000, Packets.Tcp, TrafficDirection.Egress, 1));
        AddDirectPeer(); // no ingress rule

        Assert.Equal(TcActShot, FromContainer(Packets.TcpPacket(EpIp, 40000, PeerIp, 7000)));
        var events = TakeEvents();
        var drop = Assert.Single(events, e => e.Verdict == (byte)Verdict.Dropped);
        AssertDropped(drop, DropReason.PolicyDenied);
        Assert.Equal((byte)TrafficDirection.Ingress, drop.Dir);
        Assert.Equal(PeerEpId, drop.EndpointId);
        Assert.Equal((uint)PeerIfindex, drop.Ifindex);
        Assert.Equal(EpIdentity, drop.SrcIdentity);
    }

    [Fact]
    public void Without_macs_or_with_an_expiring_ttl_the_packet_takes_the_nodes_stack()
    {
        AddEndpoint(0);
        AddDirectPeer((0, 0, 0, TrafficDirection.Ingress, 2));
        var packet = Packets.WithChecksums(Packets.TcpPacket(EpIp, 40000, PeerIp, 7000));
        Assert.Equal(TcActRedirect, FromContainer(packet));

        var ttl1 = Packets.TcpPacket(EpIp, 40001, PeerIp, 7000);
        ttl1[14 + 8] = 1;
        Assert.Equal(TcActOk, FromContainer(Packets.WithChecksums(ttl1))); // the stack sends "time exceeded"

        _dp.Endpoints.TryLookup((uint)PeerIfindex, out EndpointInfo peer);
        peer.Flags &= ~EndpointInfo.FlagDirect;
        _dp.UpdateEndpoint(PeerIfindex, peer);
        Assert.Equal(TcActOk, FromContainer(packet));
        TakeEvents();
    }

    [Fact]
    public void Enabling_enforcement_on_a_live_endpoint_takes_effect_on_the_next_packet()
    {
        AddEndpoint(0);
        Assert.Equal(TcActOk, ToContainer(Packets.TcpPacket(PeerIp, 40000, EpIp, 8080)));
        _dp.UpdateEndpoint(TestIfindex, new EndpointInfo { EndpointId = EpId, Identity = EpIdentity, Ipv4 = Addr(EpIp), Flags = EndpointInfo.FlagEnforceIngress });
        Assert.Equal(TcActShot, ToContainer(Packets.TcpPacket(PeerIp, 40000, EpIp, 8080, Packets.Ack)));
    }

    [Fact]
    public void Counters_count_forwarded_and_dropped_packets()
    {
        AddEndpoint(EndpointInfo.FlagEnforceIngress);
        Assert.Equal(0UL, _dp.Counter(Counters.Forwarded));
        Assert.Equal(0UL, _dp.Counter(Counters.Dropped));

        _dp.FromContainer.TestRun(Packets.TcpPacket(EpIp, 40000, PeerIp, 80), repeat: 3);
        ToContainer(Packets.TcpPacket(PeerIp, 40000, EpIp, 8080));
        FromContainer(Packets.Ipv6Udp());

        Assert.Equal(3UL, _dp.Counter(Counters.Forwarded));
        Assert.Equal(2UL, _dp.Counter(Counters.Dropped));
        Assert.Equal(0UL, _dp.Counter(Counters.EventsLost));
    }

    // --- userspace side of the maps ---

    [Fact]
    public void ReplacePolicy_then_ReadPolicy_round_trips_and_replaces_everything()
    {
        var first = PolicyMapBuilder.Build([
            Statement(256, 80, 6, TrafficDirection.Ingress, 1, deny: false),
            Statement(0, 0, 1, TrafficDirection.Egress, 2, deny: true),
        ]);
        _dp.ReplacePolicy(EpId, first);
        var read = _dp.ReadPolicy(EpId);
        Assert.Equal(first.Count, read.Count);
        foreach (var (k, v) in first)
        {
            Assert.True(read.TryGetValue(k, out var got), $"missing {k}");
            Assert.Equal(v.PolicyId, got.PolicyId);
            Assert.Equal(v.Flags, got.Flags);
        }

        _dp.ReplacePolicy(EpId, [Statement(300, 443, 6, TrafficDirection.Ingress, 3, deny: false)]);
        var k2 = Assert.Single(_dp.ReadPolicy(EpId)).Key;
        Assert.Equal(300u, k2.Identity);
        Assert.Empty(_dp.ReadPolicy(EpId + 1));
    }

    // --- issue 3: port ranges, deny precedence, ICMP types, audit ---

    [Fact]
    public void Port_range_allows_every_port_inside_and_none_outside()
    {
        AddEndpoint(EndpointInfo.FlagEnforceIngress);
        _dp.ReplacePolicy(EpId, [Statement(PeerIdentity, 8000, Packets.Tcp, TrafficDirection.Ingress, 1, deny: false, endPort: 8099)]);
        foreach (ushort port in new ushort[] { 8000, 8001, 8063, 8064, 8098, 8099 })
            Assert.Equal(TcActOk, ToContainer(Packets.TcpPacket(PeerIp, (ushort)(30000 + port), EpIp, port)));
        foreach (ushort port in new ushort[] { 7999, 8100, 80 })
            Assert.Equal(TcActShot, ToContainer(Packets.TcpPacket(PeerIp, (ushort)(30000 + port), EpIp, port)));
    }

    [Fact]
    public void Deny_for_any_peer_wins_over_an_allow_for_the_specific_peer()
    {
        AddEndpoint(EndpointInfo.FlagEnforceIngress);
        _dp.ReplacePolicy(EpId, [
            Statement(PeerIdentity, 0, 0, TrafficDirection.Ingress, 1, deny: false),
            Statement(0, 8080, Packets.Tcp, TrafficDirection.Ingress, 2, deny: true),
        ]);
        Assert.Equal(TcActShot, ToContainer(Packets.TcpPacket(PeerIp, 40000, EpIp, 8080)));
        var e = Assert.Single(TakeEvents());
        AssertDropped(e, DropReason.PolicyDenyRule);
        Assert.Equal(2u, e.PolicyId);
        Assert.Equal(TcActOk, ToContainer(Packets.TcpPacket(PeerIp, 40001, EpIp, 9090)));
    }

    [Fact]
    public void Deny_range_of_the_same_peer_wins_over_a_narrower_allow()
    {
        AddEndpoint(EndpointInfo.FlagEnforceIngress);
        _dp.ReplacePolicy(EpId, [
            Statement(PeerIdentity, 8080, Packets.Tcp, TrafficDirection.Ingress, 1, deny: false),
            Statement(PeerIdentity, 8000, Packets.Tcp, TrafficDirection.Ingress, 2, deny: true, endPort: 8191),
            Statement(PeerIdentity, 9000, Packets.Tcp, TrafficDirection.Ingress, 3, deny: false),
        ]);
        Assert.Equal(TcActShot, ToContainer(Packets.TcpPacket(PeerIp, 40000, EpIp, 8080)));
        Assert.Equal(TcActOk, ToContainer(Packets.TcpPacket(PeerIp, 40001, EpIp, 9000)));
    }

    [Fact]
    public void Icmp_rule_matches_the_icmp_type()
    {
        AddEndpoint(EndpointInfo.FlagEnforceIngress);
        _dp.ReplacePolicy(EpId, [Statement(PeerIdentity, 8, Packets.Icmp, TrafficDirection.Ingress, 1, deny: false, endPort: 8)]);
        Assert.Equal(TcActOk, ToContainer(Packets.IcmpEcho(PeerIp, EpIp, reply: false, id: 7)));
        Assert.Equal(TcActShot, ToContainer(Packets.TcpPacket(PeerIp, 40000, EpIp, 8)));
    }

    [Fact]
    public void Deny_entries_drop_even_where_the_direction_is_not_enforced()
    {
        AddEndpoint(EndpointInfo.FlagDenyIngress);
        _dp.ReplacePolicy(EpId, [Statement(PeerIdentity, 22, Packets.Tcp, TrafficDirection.Ingress, 4, deny: true)]);
        Assert.Equal(TcActShot, ToContainer(Packets.TcpPacket(PeerIp, 40000, EpIp, 22)));
        AssertDropped(Assert.Single(TakeEvents()), DropReason.PolicyDenyRule);
        Assert.Equal(TcActOk, ToContainer(Packets.TcpPacket(PeerIp, 40001, EpIp, 80)));
    }

    [Fact]
    public void Audit_mode_passes_would_be_drops_and_reports_them_as_AUDIT()
    {
        AddEndpoint(EndpointInfo.FlagEnforceIngress | EndpointInfo.FlagAudit);
        Assert.Equal(TcActOk, ToContainer(Packets.TcpPacket(PeerIp, 40000, EpIp, 8080)));
        var e = Assert.Single(TakeEvents());
        Assert.Equal((byte)Verdict.Audit, e.Verdict);
        Assert.Equal((byte)DropReason.PolicyDenied, e.Reason);
        Assert.Equal(1UL, _dp.Counter(Counters.Audit));
    }

    [Fact]
    public void Node_wide_audit_mode_applies_to_every_endpoint_and_can_be_turned_off()
    {
        AddEndpoint(EndpointInfo.FlagEnforceIngress);
        _dp.SetAuditMode(true);
        Assert.True(_dp.AuditMode);
        Assert.Equal(TcActOk, ToContainer(Packets.TcpPacket(PeerIp, 40000, EpIp, 8080)));
        Assert.Equal((byte)Verdict.Audit, Assert.Single(TakeEvents()).Verdict);
        _dp.SetAuditMode(false);
        Assert.Equal(TcActShot, ToContainer(Packets.TcpPacket(PeerIp, 40001, EpIp, 8080)));
    }

    [Fact]
    public void CollectConntrack_removes_expired_entries_only()
    {
        AddEndpoint(0);
        // A live entry made by the program itself: its bpf_ktime_get_ns deadline is in this clock's future.
        FromContainer(Packets.TcpPacket(EpIp, 40000, PeerIp, 80));
        var live = Ct(EpIp, 40000, PeerIp, 80, Packets.Tcp, TrafficDirection.Egress);
        var stale = Ct(EpIp, 40001, PeerIp, 80, Packets.Tcp, TrafficDirection.Egress);
        _dp.Conntrack.Update(stale, new CtEntry { ExpiresNs = 1, Packets = 1 });
        Assert.Equal(2, _dp.Conntrack.Count());

        Assert.Equal(1, _dp.CollectConntrack(MonotonicNowNs()));
        Assert.True(_dp.Conntrack.TryLookup(live, out CtEntry _));
        Assert.False(_dp.Conntrack.TryLookup(stale, out CtEntry _));
        Assert.Equal(0, _dp.CollectConntrack(MonotonicNowNs()));
    }

    [Fact]
    public void Reloading_from_the_same_pin_root_keeps_endpoints_policy_and_conntrack()
    {
        AddEndpoint(EndpointInfo.FlagEnforceIngress);
        Allow((PeerIdentity, 8080, Packets.Tcp, TrafficDirection.Ingress, 1));
        ToContainer(Packets.TcpPacket(PeerIp, 40000, EpIp, 8080));

        using var again = NodeDatapath.Load(_pinRoot);
        Assert.Equal(_dp.Endpoints.Id, again.Endpoints.Id);
        Assert.True(again.Endpoints.TryLookup((uint)TestIfindex, out EndpointInfo ep));
        Assert.Equal(EpId, ep.EndpointId);
        Assert.Single(again.ReadPolicy(EpId));
        Assert.Equal(1, again.Conntrack.Count());
        Assert.Equal(TcActOk, again.ToContainer.TestRun(Packets.TcpPacket(PeerIp, 40000, EpIp, 8080, Packets.Ack)).ReturnValue);
        Assert.True(File.Exists(Path.Combine(_pinRoot, "progs", Names.FromContainer)));
    }

    [Fact]
    public void Fill_reports_entries_and_capacity()
    {
        AddEndpoint(0);
        var fill = _dp.Fill().ToDictionary(f => f.Name);
        Assert.Equal(1, fill[Names.Endpoints].Entries);
        Assert.Equal(2, fill[Names.Ipcache].Entries);
        Assert.Equal(0, fill[Names.Policy].Entries);
        Assert.Equal(0, fill[Names.Conntrack].Entries);
        Assert.Equal(4096u, fill[Names.Endpoints].MaxEntries);   // ENDPOINTS_MAX
        Assert.Equal(262144u, fill[Names.Conntrack].MaxEntries); // CT_MAX
    }
}
