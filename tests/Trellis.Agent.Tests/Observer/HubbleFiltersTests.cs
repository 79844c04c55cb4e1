using Google.Protobuf;
using Grpc.Core;
using Trellis.Agent.Observer;
using Trellis.Api;
using H = Trellis.Hubble;

namespace Trellis.Agent.Tests.Observer;

/// <summary>Hubble FlowFilters → what Trellis evaluates: every field either maps with Hubble's meaning or is refused
/// with INVALID_ARGUMENT naming it.</summary>
public sealed class HubbleFiltersTests
{
    private static FlowEndpointDto Ep(string ip, int port, uint id, string? ns, string? pod, params string[] labels) => new(ip, port, id, ns, pod, labels);

    private static readonly FlowEndpointDto Client = Ep("10.200.0.2", 41000, 256, "shop", "client", "k8s:app=client");
    private static readonly FlowEndpointDto Server = Ep("10.200.0.3", 7000, 257, "shop", "server", "k8s:app=server");
    private static readonly FlowEndpointDto Intruder = Ep("10.200.0.4", 42000, 258, "data", "intruder", "k8s:app=client");

    private static FlowDto Flow(FlowEndpointDto src, string verdict = "FORWARDED", string? reason = null, IReadOnlyList<string>? flags = null,
        string proto = "TCP", bool reply = false) =>
        new(DateTimeOffset.UnixEpoch, "node1", verdict, reason, "INGRESS", reply, src, Server, proto, flags ?? ["SYN"], null, null, 60);

    private static readonly FlowDto Allowed = Flow(Client);
    private static readonly FlowDto Denied = Flow(Intruder, "DROPPED", "policy denied");
    private static readonly FlowDto ReplyAck = Flow(Client, flags: ["ACK"], reply: true);
    private static readonly FlowDto Udp = Flow(Client, proto: "UDP", flags: []);

    private static CompiledFlowFilter? Compile(H.FlowFilter f) => HubbleFilters.Compile(f, "node1");

    [Fact]
    public void Supported_fields_map_to_the_same_fields_of_FlowFilterDto()
    {
        var f = new H.FlowFilter
        {
            SourceIp = { "10.200.0.0/24" }, DestinationIp = { "10.200.0.3" },
            SourcePod = { "shop/" }, DestinationPod = { "/server" },
            SourceLabel = { "app==client" }, DestinationLabel = { "k8s:app=server" },
            SourceIdentity = { 256 }, DestinationIdentity = { 257 },
            DestinationService = { "shop/backend" },
            Verdict = { H.Verdict.Forwarded, H.Verdict.Dropped },
            Protocol = { "TCP", "icmpv4" },
            SourcePort = { "41000" }, DestinationPort = { "7000" },
            HttpStatusCode = { "5+" }, HttpMethod = { "GET" },
            TrafficDirection = { H.TrafficDirection.Ingress },
            Reply = { false },
            NodeName = { "node*" },
            IpVersion = { H.IPVersion.Ipv4 },
        };
        var dto = Compile(f)!.Dto;
        Assert.Equal(["10.200.0.0/24"], dto.SourceIp!);
        Assert.Equal(["10.200.0.3"], dto.DestinationIp!);
        Assert.Equal(["shop/"], dto.SourcePod!);
        Assert.Equal(["server"], dto.DestinationPod!); // Hubble's "/name" = any namespace
        Assert.Equal(["app=client"], dto.SourceLabel!);
        Assert.Equal(["k8s:app=server"], dto.DestinationLabel!);
        Assert.Equal([256u], dto.SourceIdentity!);
        Assert.Equal([257u], dto.DestinationIdentity!);
        Assert.Equal(["shop/backend"], dto.DestinationService!);
        Assert.Equal(["FORWARDED", "DROPPED"], dto.Verdict!);
        Assert.Equal(["tcp", "icmp"], dto.Protocol!);
        Assert.Equal(["41000"], dto.SourcePort!);
        Assert.Equal(["7000"], dto.DestinationPort!);
        Assert.Equal(["5+"], dto.HttpStatusCode!);
        Assert.Equal(["GET"], dto.HttpMethod!);
        Assert.Equal(["INGRESS"], dto.TrafficDirection!);
        Assert.False(dto.Reply);
        Assert.Equal(["node1"], dto.NodeName!);
    }

    [Fact]
    public void An_empty_filter_matches_everything_and_reply_with_both_values_does_not_constrain()
    {
        var all = Compile(new H.FlowFilter())!;
        Assert.True(all.Matches(Allowed) && all.Matches(Denied));
        Assert.Null(Compile(new H.FlowFilter { Reply = { true, false } })!.Dto.Reply);
        Assert.True(Compile(new H.FlowFilter { Reply = { true } })!.Matches(ReplyAck));
        Assert.False(Compile(new H.FlowFilter { Reply = { true } })!.Matches(Allowed));
    }

    [Theory]
    [InlineData(H.FlowFilter.SourceFqdnFieldNumber, "source_fqdn")]
    [InlineData(H.FlowFilter.DestinationFqdnFieldNumber, "destination_fqdn")]
    [InlineData(H.FlowFilter.SourceServiceFieldNumber, "source_service")]
    [InlineData(H.FlowFilter.DnsQueryFieldNumber, "dns_query")]
    [InlineData(H.FlowFilter.HttpPathFieldNumber, "http_path")]
    [InlineData(H.FlowFilter.HttpUrlFieldNumber, "http_url")]
    [InlineData(H.FlowFilter.TraceIdFieldNumber, "trace_id")]
    public void An_unsupported_field_is_refused_by_name(int number, string name)
    {
        var f = new H.FlowFilter();
        var field = H.FlowFilter.Descriptor.FindFieldByNumber(number);
        ((System.Collections.IList)field.Accessor.GetValue(f)).Add("x");
        var e = Assert.Throws<UnsupportedFilterException>(() => Compile(f));
        Assert.Contains(name, e.Message);
    }

    [Fact]
    public void Workload_and_header_filters_are_refused_by_name()
    {
        Assert.Contains("source_workload", Assert.Throws<UnsupportedFilterException>(() =>
            Compile(new H.FlowFilter { SourceWorkload = { new H.Workload { Name = "x" } } })).Message);
        Assert.Contains("http_header", Assert.Throws<UnsupportedFilterException>(() =>
            Compile(new H.FlowFilter { HttpHeader = { new H.HTTPHeader { Key = "k" } } })).Message);
    }

    [Fact]
    public void A_field_newer_than_Trellis_copy_of_the_API_is_refused_by_number()
    {
        // Field 45 as a newer client would send it (a string): it arrives as an unknown field.
        var extra = new MemoryStream();
        using (var o = new CodedOutputStream(extra, leaveOpen: true))
        {
            o.WriteTag(45, WireFormat.WireType.LengthDelimited);
            o.WriteString("x");
        }
        var f = H.FlowFilter.Parser.ParseFrom(new H.FlowFilter { SourcePod = { "shop/" } }.ToByteArray().Concat(extra.ToArray()).ToArray());
        var e = Assert.Throws<UnsupportedFilterException>(() => Compile(f));
        Assert.Contains("field number 45", e.Message);
    }

    [Fact]
    public void Errors_name_the_list_and_the_filter()
    {
        var e = Assert.Throws<UnsupportedFilterException>(() =>
            HubbleFilters.Compile([new H.FlowFilter(), new H.FlowFilter { DestinationPort = { "http" } }], "blacklist", "node1"));
        Assert.StartsWith("blacklist[1]: ", e.Message);
        Assert.Contains("'http'", e.Message);
        Assert.Contains("'a in (b)'", Assert.Throws<UnsupportedFilterException>(() => Compile(new H.FlowFilter { SourceLabel = { "a in (b)" } })).Message);
        Assert.Contains("'smtp'", Assert.Throws<UnsupportedFilterException>(() => Compile(new H.FlowFilter { Protocol = { "smtp" } })).Message);
    }

    [Fact]
    public void Filters_no_Trellis_flow_can_match_compile_to_null_and_let_nothing_through()
    {
        Assert.Null(Compile(new H.FlowFilter { Verdict = { H.Verdict.Traced } }));
        Assert.Null(Compile(new H.FlowFilter { IpVersion = { H.IPVersion.Ipv6 } }));
        Assert.Null(Compile(new H.FlowFilter { NodeName = { "other-node" } }));
        Assert.Null(Compile(new H.FlowFilter { Protocol = { "icmpv6" } }));
        Assert.Null(Compile(new H.FlowFilter { TrafficDirection = { H.TrafficDirection.Unknown } }));
        var whitelist = HubbleFilters.Compile([new H.FlowFilter { Verdict = { H.Verdict.Traced } }], "whitelist", "node1");
        Assert.False(HubbleFilters.Passes(Allowed, whitelist, []));
        // In a blacklist such a filter excludes nothing.
        Assert.True(HubbleFilters.Passes(Allowed, [], whitelist));
    }

    [Theory]
    [InlineData("node1", true)]
    [InlineData("node*", true)]
    [InlineData("*1", true)]
    [InlineData("default/node1", true)]
    [InlineData("default/", true)]
    [InlineData("/node1", true)]
    [InlineData("other-cluster/node1", false)]
    [InlineData("node2", false)]
    public void Node_name_patterns_follow_Hubble(string pattern, bool matches) =>
        Assert.Equal(matches, HubbleFilters.NodeNameMatches(pattern, "node1"));

    [Fact]
    public void Whitelist_and_blacklist_combine_as_in_Hubble()
    {
        var dropped = HubbleFilters.Compile([new H.FlowFilter { Verdict = { H.Verdict.Dropped } }], "whitelist", "node1");
        Assert.True(HubbleFilters.Passes(Denied, dropped, []));
        Assert.False(HubbleFilters.Passes(Allowed, dropped, []));
        var fromShop = HubbleFilters.Compile([new H.FlowFilter { SourcePod = { "shop/" } }], "blacklist", "node1");
        Assert.False(HubbleFilters.Passes(Allowed, [], fromShop));
        Assert.True(HubbleFilters.Passes(Denied, [], fromShop));
        Assert.True(HubbleFilters.Passes(Allowed, [], []));
    }

    [Fact]
    public void Event_type_tcp_flags_and_uuid_are_evaluated_on_the_Hubble_view_of_the_flow()
    {
        var drops = Compile(new H.FlowFilter { EventType = { new H.EventTypeFilter { Type = HubbleFlows.MessageTypeDrop } } })!;
        Assert.True(drops.Matches(Denied));
        Assert.False(drops.Matches(Allowed));
        var policyDenied = Compile(new H.FlowFilter { EventType = { new H.EventTypeFilter { Type = 1, MatchSubType = true, SubType = 133 } } })!;
        Assert.True(policyDenied.Matches(Denied));
        var otherReason = Compile(new H.FlowFilter { EventType = { new H.EventTypeFilter { Type = 1, MatchSubType = true, SubType = 181 } } })!;
        Assert.False(otherReason.Matches(Denied));

        var syn = Compile(new H.FlowFilter { TcpFlags = { new H.TCPFlags { SYN = true } } })!;
        Assert.True(syn.Matches(Allowed));
        Assert.False(syn.Matches(ReplyAck));
        Assert.False(syn.Matches(Udp));

        var uuid = HubbleFlows.Uuid(Denied);
        var one = Compile(new H.FlowFilter { Uuid = { uuid } })!;
        Assert.True(one.Matches(Denied));
        Assert.False(one.Matches(Allowed));
    }

    [Fact]
    public void Prepare_refuses_first_with_follow_and_bad_filters_as_invalid_argument()
    {
        var e = Assert.Throws<RpcException>(() => ObserverService.Prepare(new H.GetFlowsRequest { First = true, Follow = true }, "node1"));
        Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
        e = Assert.Throws<RpcException>(() => ObserverService.Prepare(new H.GetFlowsRequest { Whitelist = { new H.FlowFilter { SourceFqdn = { "x.example" } } } }, "node1"));
        Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
        Assert.Contains("whitelist[0]", e.Status.Detail);
        Assert.Contains("source_fqdn", e.Status.Detail);
        e = Assert.Throws<RpcException>(() => ObserverService.Prepare(new H.GetFlowsRequest
        {
            Since = Google.Protobuf.WellKnownTypes.Timestamp.FromDateTimeOffset(DateTimeOffset.UnixEpoch.AddDays(2)),
            Until = Google.Protobuf.WellKnownTypes.Timestamp.FromDateTimeOffset(DateTimeOffset.UnixEpoch),
        }, "node1"));
        Assert.Contains("since", e.Status.Detail);
        e = Assert.Throws<RpcException>(() => ObserverService.Prepare(new H.GetFlowsRequest { FieldMask = new() { Paths = { "no_such_field" } } }, "node1"));
        Assert.Contains("field_mask", e.Status.Detail);
    }

    [Fact]
    public void Prepare_maps_number_follow_and_time_window()
    {
        var (r, passes, mask) = ObserverService.Prepare(new H.GetFlowsRequest
        {
            Number = 50,
            Whitelist = { new H.FlowFilter { Verdict = { H.Verdict.Dropped } } },
            FieldMask = new() { Paths = { "verdict", "source.pod_name" } },
        }, "node1");
        Assert.Equal(50, r.Last);
        Assert.False(r.Follow);
        Assert.True(passes(Denied));
        Assert.False(passes(Allowed));
        Assert.NotNull(mask);
        Assert.Equal(0, ObserverService.Prepare(new H.GetFlowsRequest { Follow = true }, "node1").Request.Last); // only new flows
        Assert.Equal(int.MaxValue, ObserverService.Prepare(new H.GetFlowsRequest(), "node1").Request.Last);
    }
}
