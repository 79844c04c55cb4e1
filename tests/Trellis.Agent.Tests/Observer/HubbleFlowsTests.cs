using Google.Protobuf.Reflection;
using Trellis.Agent.Observer;
using Trellis.Api;
using Trellis.Datapath;
using H = Trellis.Hubble;

namespace Trellis.Agent.Tests.Observer;

/// <summary>Trellis flow records as Hubble flows: the numbers a Hubble client decodes must be Hubble's.</summary>
public sealed class HubbleFlowsTests
{
    private static readonly DateTimeOffset T0 = new(2026, 1, 2, 3, 4, 5, 678, TimeSpan.Zero);

    private static FlowEndpointDto Ep(string ip, int port, uint id, string? ns, string? pod, params string[] labels) => new(ip, port, id, ns, pod, labels);

    private static readonly FlowEndpointDto Client = Ep("10.200.0.2", 41000, 256, "shop", "client", "k8s:app=client", "k8s:io.kubernetes.pod.namespace=shop");
    private static readonly FlowEndpointDto Server = Ep("10.200.0.3", 7000, 257, "shop", "server", "k8s:app=server");
    private static readonly FlowEndpointDto World = Ep("192.0.2.10", 5555, 2, null, null, "reserved:world");

    private static FlowDto Flow(string verdict = "FORWARDED", string? reason = null, string direction = "INGRESS", string proto = "TCP",
        FlowEndpointDto? src = null, FlowEndpointDto? dst = null, IReadOnlyList<string>? flags = null, string? policy = null, string? policyNs = null,
        string? service = null, L7RecordDto? l7 = null, bool reply = false) =>
        new(T0, "node1", verdict, reason, direction, reply, src ?? Client, dst ?? Server, proto, flags ?? [], policy, policyNs, 74, service, l7);

    [Theory]
    [InlineData("FORWARDED", 1)]
    [InlineData("DROPPED", 2)]
    [InlineData("ERROR", 3)]
    [InlineData("AUDIT", 4)]
    [InlineData("REDIRECTED", 5)]
    [InlineData("TRANSLATED", 7)]
    [InlineData("UNKNOWN", 0)]
    public void Verdicts_get_Hubbles_numbers(string verdict, int hubble)
    {
        Assert.Equal(hubble, (int)HubbleFlows.ToHubble(Flow(verdict)).Verdict);
        if (hubble != 0) Assert.Equal(verdict, HubbleFlows.VerdictName((H.Verdict)hubble));
    }

    [Fact]
    public void Traced_and_unknown_verdicts_have_no_Trellis_name()
    {
        Assert.Null(HubbleFlows.VerdictName(H.Verdict.Traced));
        Assert.Null(HubbleFlows.VerdictName(H.Verdict.Unknown));
    }

    [Theory]
    [InlineData(DropReason.PolicyDenied, 133)]
    [InlineData(DropReason.InvalidSource, 132)]
    [InlineData(DropReason.InvalidPacket, 134)]
    [InlineData(DropReason.UnsupportedL3, 139)]
    [InlineData(DropReason.NoIdentity, 171)]
    [InlineData(DropReason.PolicyDenyRule, 181)]
    [InlineData(DropReason.CtMapFull, 155)]
    [InlineData(DropReason.Fragment, 157)]
    [InlineData(DropReason.NoServiceBackend, 158)]
    [InlineData(DropReason.L7Denied, 133)]
    [InlineData(DropReason.AuthRequired, 189)]
    public void Drop_reasons_map_to_the_closest_Hubble_reason_in_both_fields(DropReason reason, int hubble)
    {
        var f = HubbleFlows.ToHubble(Flow("DROPPED", DropReasons.Describe(reason)));
        Assert.Equal(hubble, (int)f.DropReasonDesc);
#pragma warning disable CS0612
        Assert.Equal((uint)hubble, f.DropReason);
#pragma warning restore CS0612
        Assert.Equal(HubbleFlows.MessageTypeDrop, f.EventType.Type);
        Assert.Equal(hubble, f.EventType.SubType);
    }

    [Fact]
    public void Every_Trellis_drop_reason_has_a_Hubble_counterpart()
    {
        foreach (var r in Enum.GetValues<DropReason>().Where(r => r != DropReason.None))
            Assert.NotEqual(H.DropReason.Unknown, HubbleFlows.DropReason(r));
    }

    [Fact]
    public void An_unknown_drop_reason_is_DROP_REASON_UNKNOWN_and_forwarded_flows_have_none()
    {
        Assert.Equal(H.DropReason.Unknown, HubbleFlows.ToHubble(Flow("DROPPED", "reason 77")).DropReasonDesc);
        var forwarded = HubbleFlows.ToHubble(Flow());
        Assert.Equal(H.DropReason.Unknown, forwarded.DropReasonDesc);
        // An audited flow carries the reason it would have been dropped for in Trellis, but Hubble's field is for drops only.
        Assert.Equal(H.DropReason.Unknown, HubbleFlows.ToHubble(Flow("AUDIT", "policy denied")).DropReasonDesc);
    }

    [Fact]
    public void Time_addresses_endpoints_and_node_are_carried()
    {
        var f = HubbleFlows.ToHubble(Flow(), new HubbleLookups((ns, pod) => ns == "shop" && pod == "server" ? 12u : null));
        Assert.Equal(T0, f.Time.ToDateTimeOffset());
        Assert.Equal("10.200.0.2", f.IP.Source);
        Assert.Equal("10.200.0.3", f.IP.Destination);
        Assert.Equal(H.IPVersion.Ipv4, f.IP.IpVersion);
        Assert.Equal(256u, f.Source.Identity);
        Assert.Equal("shop", f.Source.Namespace);
        Assert.Equal("client", f.Source.PodName);
        Assert.Equal(["k8s:app=client", "k8s:io.kubernetes.pod.namespace=shop"], f.Source.Labels);
        Assert.Equal(0u, f.Source.ID); // the lookup does not know it
        Assert.Equal(12u, f.Destination.ID);
        Assert.Equal("server", f.Destination.PodName);
        Assert.Equal("node1", f.NodeName);
        Assert.Equal(H.FlowType.L3L4, f.Type);
        Assert.Equal(H.TrafficDirection.Ingress, f.TrafficDirection);
        Assert.False(f.IsReply);
        Assert.Equal(H.TraceObservationPoint.ToEndpoint, f.TraceObservationPoint);
        Assert.Equal(HubbleFlows.MessageTypeTrace, f.EventType.Type);
        Assert.False(string.IsNullOrEmpty(f.Uuid));
    }

    [Fact]
    public void A_peer_outside_the_cluster_has_its_identity_and_labels_but_no_pod()
    {
        var f = HubbleFlows.ToHubble(Flow(src: World, direction: "INGRESS"));
        Assert.Equal(2u, f.Source.Identity);
        Assert.Equal("", f.Source.PodName);
        Assert.Equal("", f.Source.Namespace);
        Assert.Equal(["reserved:world"], f.Source.Labels);
    }

    [Fact]
    public void The_uuid_is_stable_for_a_record_and_differs_between_records()
    {
        Assert.Equal(HubbleFlows.ToHubble(Flow()).Uuid, HubbleFlows.ToHubble(Flow()).Uuid);
        Assert.NotEqual(HubbleFlows.ToHubble(Flow()).Uuid, HubbleFlows.ToHubble(Flow(reply: true)).Uuid);
        Assert.True(Guid.TryParse(HubbleFlows.ToHubble(Flow()).Uuid, out _));
    }

    [Fact]
    public void Tcp_ports_and_flags()
    {
        var f = HubbleFlows.ToHubble(Flow(flags: ["SYN", "ACK"], direction: "EGRESS", reply: true));
        Assert.Equal(H.Layer4.ProtocolOneofCase.TCP, f.L4.ProtocolCase);
        Assert.Equal(41000u, f.L4.TCP.SourcePort);
        Assert.Equal(7000u, f.L4.TCP.DestinationPort);
        Assert.True(f.L4.TCP.Flags.SYN);
        Assert.True(f.L4.TCP.Flags.ACK);
        Assert.False(f.L4.TCP.Flags.FIN);
        Assert.True(f.IsReply);
        Assert.Equal(H.TrafficDirection.Egress, f.TrafficDirection);
        Assert.Equal(H.TraceObservationPoint.FromEndpoint, f.TraceObservationPoint);
#pragma warning disable CS0612
        Assert.Equal("TCP Flags: SYN, ACK", f.Summary);
#pragma warning restore CS0612
    }

    [Fact]
    public void Udp_sctp_and_icmp()
    {
        var udp = HubbleFlows.ToHubble(Flow(proto: "UDP"));
        Assert.Equal(H.Layer4.ProtocolOneofCase.UDP, udp.L4.ProtocolCase);
        Assert.Equal(7000u, udp.L4.UDP.DestinationPort);
        Assert.Equal(H.Layer4.ProtocolOneofCase.SCTP, HubbleFlows.ToHubble(Flow(proto: "SCTP")).L4.ProtocolCase);

        // The datapath keeps an echo's id in the ports: request = source port, reply = destination port.
        var request = HubbleFlows.ToHubble(Flow(proto: "ICMP", src: Client with { Port = 4242 }, dst: Server with { Port = 0 }));
        Assert.Equal(H.Layer4.ProtocolOneofCase.ICMPv4, request.L4.ProtocolCase);
        Assert.Equal(8u, request.L4.ICMPv4.Type);
        var reply = HubbleFlows.ToHubble(Flow(proto: "ICMP", src: Server with { Port = 0 }, dst: Client with { Port = 4242 }, reply: true));
        Assert.Equal(0u, reply.L4.ICMPv4.Type);
        var unreachable = HubbleFlows.ToHubble(Flow(proto: "ICMP", src: Server with { Port = 3 }, dst: Client with { Port = 3 }));
        Assert.Equal((3u, 3u), (unreachable.L4.ICMPv4.Type, unreachable.L4.ICMPv4.Code));
        Assert.Null(HubbleFlows.ToHubble(Flow(proto: "proto-47")).L4);
    }

    [Fact]
    public void The_service_becomes_destination_service()
    {
        var f = HubbleFlows.ToHubble(Flow(service: "shop/backend:http"));
        Assert.Equal("backend", f.DestinationService.Name);
        Assert.Equal("shop", f.DestinationService.Namespace);
        Assert.Null(HubbleFlows.ToHubble(Flow()).DestinationService);
        Assert.Equal("backend", HubbleFlows.ParseService("shop/backend:8080")!.Name);
    }

    [Fact]
    public void A_forwarded_flow_names_the_policy_that_allowed_it_on_its_side()
    {
        var lookups = new HubbleLookups(PolicyKind: (ns, name) => ns == "shop" && name == "server-from-client" ? "CiliumNetworkPolicy" : null);
        var ingress = HubbleFlows.ToHubble(Flow(policy: "server-from-client", policyNs: "shop"), lookups);
        var p = Assert.Single(ingress.IngressAllowedBy);
        Assert.Equal("server-from-client", p.Name);
        Assert.Equal("shop", p.Namespace);
        Assert.Equal("CiliumNetworkPolicy", p.Kind);
        Assert.Contains("k8s:io.cilium.k8s.policy.name=server-from-client", p.Labels);
        Assert.Empty(ingress.EgressAllowedBy);
        Assert.Empty(ingress.IngressDeniedBy);

        var egress = HubbleFlows.ToHubble(Flow(direction: "EGRESS", policy: "allow-out", policyNs: null));
        Assert.Equal("CiliumClusterwideNetworkPolicy", Assert.Single(egress.EgressAllowedBy).Kind);
        Assert.Empty(HubbleFlows.ToHubble(Flow()).IngressAllowedBy);
    }

    [Fact]
    public void A_flow_dropped_by_a_deny_rule_names_it_as_denied_by()
    {
        var f = HubbleFlows.ToHubble(Flow("DROPPED", DropReasons.Describe(DropReason.PolicyDenyRule), policy: "no-intruder", policyNs: "shop"));
        Assert.Equal(H.DropReason.PolicyDeny, f.DropReasonDesc);
        Assert.Equal("no-intruder", Assert.Single(f.IngressDeniedBy).Name);
        Assert.Empty(f.IngressAllowedBy);
        var egress = HubbleFlows.ToHubble(Flow("DROPPED", DropReasons.Describe(DropReason.PolicyDenyRule), direction: "EGRESS", policy: "no-out", policyNs: "shop"));
        Assert.Equal("no-out", Assert.Single(egress.EgressDeniedBy).Name);
    }

    [Fact]
    public void A_translated_flow_is_a_socket_trace()
    {
        var f = HubbleFlows.ToHubble(Flow("TRANSLATED", service: "shop/backend:http"));
        Assert.Equal(H.FlowType.Sock, f.Type);
        Assert.Equal(HubbleFlows.MessageTypeTraceSock, f.EventType.Type);
        Assert.Equal(H.SocketTranslationPoint.SockXlatePointPostDirectionFwd, f.SockXlatePoint);
    }

    [Fact]
    public void An_L7_record_makes_an_L7_flow_with_its_HTTP_fields()
    {
        var f = HubbleFlows.ToHubble(Flow(l7: new L7RecordDto("RESPONSE", 1_500_000, new HttpRecordDto("GET", "http://server/cart", 503, "HTTP/1.1"))));
        Assert.Equal(H.FlowType.L7, f.Type);
        Assert.Equal(H.L7FlowType.Response, f.L7.Type);
        Assert.Equal(1_500_000ul, f.L7.LatencyNs);
        Assert.Equal(503u, f.L7.Http.Code);
        Assert.Equal("GET", f.L7.Http.Method);
        Assert.Equal("http://server/cart", f.L7.Http.Url);
        Assert.Equal("HTTP/1.1", f.L7.Http.Protocol);
        Assert.Equal(HubbleFlows.MessageTypeAccessLog, f.EventType.Type);
    }

    /// <summary>Hubble's field numbers (api/v1/flow/flow.proto, api/v1/observer/observer.proto): renumbering any of
    /// these in Trellis' copy would silently break every Hubble client.</summary>
    public static TheoryData<string, string, int> HubbleFieldNumbers => new()
    {
        { "flow.Flow", "time", 1 }, { "flow.Flow", "verdict", 2 }, { "flow.Flow", "drop_reason", 3 }, { "flow.Flow", "IP", 5 },
        { "flow.Flow", "l4", 6 }, { "flow.Flow", "source", 8 }, { "flow.Flow", "destination", 9 }, { "flow.Flow", "Type", 10 },
        { "flow.Flow", "node_name", 11 }, { "flow.Flow", "l7", 15 }, { "flow.Flow", "reply", 16 }, { "flow.Flow", "event_type", 19 },
        { "flow.Flow", "destination_service", 21 }, { "flow.Flow", "traffic_direction", 22 }, { "flow.Flow", "trace_observation_point", 24 },
        { "flow.Flow", "drop_reason_desc", 25 }, { "flow.Flow", "is_reply", 26 }, { "flow.Flow", "sock_xlate_point", 31 },
        { "flow.Flow", "uuid", 34 }, { "flow.Flow", "Summary", 100000 }, { "flow.Flow", "egress_allowed_by", 21001 },
        { "flow.Flow", "ingress_allowed_by", 21002 }, { "flow.Flow", "egress_denied_by", 21004 }, { "flow.Flow", "ingress_denied_by", 21005 },
        { "flow.Endpoint", "ID", 1 }, { "flow.Endpoint", "identity", 2 }, { "flow.Endpoint", "namespace", 3 }, { "flow.Endpoint", "labels", 4 },
        { "flow.Endpoint", "pod_name", 5 }, { "flow.Layer4", "TCP", 1 }, { "flow.Layer4", "UDP", 2 }, { "flow.Layer4", "ICMPv4", 3 },
        { "flow.Layer4", "SCTP", 5 }, { "flow.TCP", "flags", 3 }, { "flow.IP", "ipVersion", 3 }, { "flow.Policy", "kind", 5 },
        { "flow.Service", "namespace", 2 }, { "flow.Layer7", "http", 101 }, { "flow.Layer7", "dns", 100 },
        { "flow.FlowFilter", "source_ip", 1 }, { "flow.FlowFilter", "source_pod", 2 }, { "flow.FlowFilter", "destination_ip", 3 },
        { "flow.FlowFilter", "destination_pod", 4 }, { "flow.FlowFilter", "verdict", 5 }, { "flow.FlowFilter", "event_type", 6 },
        { "flow.FlowFilter", "http_status_code", 9 }, { "flow.FlowFilter", "source_label", 10 }, { "flow.FlowFilter", "destination_label", 11 },
        { "flow.FlowFilter", "protocol", 12 }, { "flow.FlowFilter", "source_port", 13 }, { "flow.FlowFilter", "destination_port", 14 },
        { "flow.FlowFilter", "reply", 15 }, { "flow.FlowFilter", "destination_service", 17 }, { "flow.FlowFilter", "source_identity", 19 },
        { "flow.FlowFilter", "destination_identity", 20 }, { "flow.FlowFilter", "http_method", 21 }, { "flow.FlowFilter", "tcp_flags", 23 },
        { "flow.FlowFilter", "node_name", 24 }, { "flow.FlowFilter", "ip_version", 25 }, { "flow.FlowFilter", "uuid", 29 },
        { "flow.FlowFilter", "traffic_direction", 30 },
        { "observer.GetFlowsRequest", "number", 1 }, { "observer.GetFlowsRequest", "follow", 3 }, { "observer.GetFlowsRequest", "blacklist", 5 },
        { "observer.GetFlowsRequest", "whitelist", 6 }, { "observer.GetFlowsRequest", "since", 7 }, { "observer.GetFlowsRequest", "until", 8 },
        { "observer.GetFlowsRequest", "first", 9 }, { "observer.GetFlowsRequest", "field_mask", 10 },
        { "observer.GetFlowsResponse", "flow", 1 }, { "observer.GetFlowsResponse", "lost_events", 3 },
        { "observer.GetFlowsResponse", "node_name", 1000 }, { "observer.GetFlowsResponse", "time", 1001 },
        { "observer.ServerStatusResponse", "num_flows", 1 }, { "observer.ServerStatusResponse", "max_flows", 2 },
        { "observer.ServerStatusResponse", "seen_flows", 3 }, { "observer.ServerStatusResponse", "uptime_ns", 4 },
        { "observer.ServerStatusResponse", "num_connected_nodes", 5 }, { "observer.ServerStatusResponse", "num_unavailable_nodes", 6 },
        { "observer.ServerStatusResponse", "version", 8 }, { "observer.ServerStatusResponse", "flows_rate", 9 },
        { "observer.Node", "state", 4 }, { "observer.Node", "seen_flows", 9 }, { "observer.Namespace", "namespace", 2 },
    };

    [Theory]
    [MemberData(nameof(HubbleFieldNumbers))]
    public void Fields_keep_Hubbles_numbers(string message, string field, int number)
    {
        var descriptor = H.FlowReflection.Descriptor.MessageTypes.Concat(H.ObserverReflection.Descriptor.MessageTypes)
            .Single(m => m.FullName == message);
        Assert.Equal(number, descriptor.FindFieldByName(field)?.FieldNumber);
    }

    [Fact]
    public void The_service_is_Hubbles_observer_Observer()
    {
        var service = Assert.Single(H.ObserverReflection.Descriptor.Services);
        Assert.Equal("observer.Observer", service.FullName);
        Assert.Equal(["GetFlows", "GetAgentEvents", "GetDebugEvents", "GetNodes", "GetNamespaces", "ServerStatus"], service.Methods.Select(m => m.Name));
        Assert.True(service.FindMethodByName("GetFlows").IsServerStreaming);
        Assert.Equal("flow", H.FlowReflection.Descriptor.Package);
        Assert.Equal("relay", H.RelayReflection.Descriptor.Package);
        Assert.Equal(FieldType.Enum, H.Flow.Descriptor.FindFieldByName("drop_reason_desc").FieldType);
    }
}
