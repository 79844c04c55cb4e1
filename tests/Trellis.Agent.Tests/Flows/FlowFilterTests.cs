using Trellis.Api;

namespace Trellis.Agent.Tests.Flows;

/// <summary>Hubble's filter semantics on flow records: AND across fields, OR within a field and across filters.</summary>
public sealed class FlowFilterTests
{
    private static FlowEndpointDto Ep(string ip, int port, uint id, string? ns, string? pod, params string[] labels) => new(ip, port, id, ns, pod, labels);

    private static FlowDto Flow(FlowEndpointDto src, FlowEndpointDto dst, string verdict = "FORWARDED", string proto = "TCP",
        string direction = "EGRESS", bool reply = false, string? reason = null, string? service = null, L7RecordDto? l7 = null) =>
        new(DateTimeOffset.UnixEpoch, "node1", verdict, reason, direction, reply, src, dst, proto, [], null, null, 60, service, l7);

    private static readonly FlowEndpointDto Frontend = Ep("10.200.0.2", 41000, 256, "shop", "frontend-7d9", "k8s:app=frontend", "k8s:tier=web");
    private static readonly FlowEndpointDto Backend = Ep("10.200.0.3", 8080, 257, "shop", "backend", "k8s:app=backend");
    private static readonly FlowEndpointDto Db = Ep("10.200.0.4", 5432, 258, "data", "db", "k8s:app=db");
    private static readonly FlowEndpointDto World = Ep("192.0.2.10", 5555, 2, null, null, "reserved:world");

    private static readonly FlowDto FrontToBack = Flow(Frontend, Backend, service: "shop/backend:http");
    private static readonly FlowDto FrontToDbDropped = Flow(Frontend, Db, "DROPPED", reason: "policy denied", direction: "INGRESS");
    private static readonly FlowDto WorldToBackUdp = Flow(World, Backend with { Port = 53 }, proto: "UDP", direction: "INGRESS");
    private static readonly FlowDto Http500 = Flow(Frontend, Backend, l7: new L7RecordDto("RESPONSE", 1_500_000, new HttpRecordDto("POST", "http://backend/cart", 503, "HTTP/1.1")));
    private static readonly FlowDto[] All = [FrontToBack, FrontToDbDropped, WorldToBackUdp, Http500];

    private static FlowDto[] Pass(params FlowFilterDto[] whitelist) => All.Where(f => FlowFilters.Passes(f, whitelist, null)).ToArray();

    public static TheoryData<string, FlowFilterDto, int[]> Single => new()
    {
        { "source pod in namespace", new() { SourcePod = ["shop/"] }, [0, 1, 3] },
        { "source pod prefix, any namespace", new() { SourcePod = ["frontend"] }, [0, 1, 3] },
        { "destination pod exact namespace", new() { DestinationPod = ["data/db"] }, [1] },
        { "destination pod in another namespace", new() { DestinationPod = ["shop/db"] }, [] },
        { "source label k=v", new() { SourceLabel = ["app=frontend"] }, [0, 1, 3] },
        { "source label with source prefix", new() { SourceLabel = ["k8s:tier=web"] }, [0, 1, 3] },
        { "label presence", new() { SourceLabel = ["reserved:world"] }, [2] },
        { "label negation", new() { DestinationLabel = ["app!=backend"] }, [1] },
        { "identity", new() { DestinationIdentity = [258] }, [1] },
        { "ip exact", new() { SourceIp = ["192.0.2.10"] }, [2] },
        { "ip cidr", new() { DestinationIp = ["10.200.0.0/30"] }, [0, 2, 3] },
        { "verdict", new() { Verdict = ["dropped"] }, [1] },
        { "two verdicts (OR)", new() { Verdict = ["DROPPED", "FORWARDED"] }, [0, 1, 2, 3] },
        { "L4 protocol", new() { Protocol = ["udp"] }, [2] },
        { "L7 protocol http", new() { Protocol = ["http"] }, [3] },
        { "destination port", new() { DestinationPort = ["5432"] }, [1] },
        { "http status prefix", new() { HttpStatusCode = ["5+"] }, [3] },
        { "http status exact miss", new() { HttpStatusCode = ["500"] }, [] },
        { "http method", new() { HttpMethod = ["post"] }, [3] },
        { "direction", new() { TrafficDirection = ["INGRESS"] }, [1, 2] },
        { "service", new() { DestinationService = ["shop/backend"] }, [0] },
        { "drop reason", new() { DropReason = ["policy denied"] }, [1] },
        { "AND across fields", new() { SourcePod = ["shop/frontend"], Verdict = ["DROPPED"] }, [1] },
        { "AND with no match", new() { SourcePod = ["shop/frontend"], Protocol = ["udp"] }, [] },
    };

    [Theory]
    [MemberData(nameof(Single))]
    public void Each_filter_field_selects_what_it_names(string what, FlowFilterDto filter, int[] expected)
    {
        Assert.Null(FlowFilters.Validate(filter));
        Assert.True(expected.Select(i => All[i]).SequenceEqual(Pass(filter)), what);
    }

    [Fact]
    public void Filters_in_a_list_are_ORed_and_the_blacklist_removes()
    {
        Assert.Equal([FrontToDbDropped, WorldToBackUdp], Pass(new() { Verdict = ["DROPPED"] }, new() { Protocol = ["udp"] }));
        var black = new[] { new FlowFilterDto { Protocol = ["udp"] } };
        Assert.Equal([FrontToBack, FrontToDbDropped, Http500], All.Where(f => FlowFilters.Passes(f, null, black)));
        Assert.Equal(All, Pass()); // no filter: everything
    }

    [Fact]
    public void Either_side_options_become_a_source_and_a_destination_filter_as_in_hubble()
    {
        // --pod data/db --verdict DROPPED: (source db AND dropped) OR (destination db AND dropped)
        var b = new FlowFilterBuilder();
        b.Either(f => f with { SourcePod = ["data/db"] }, f => f with { DestinationPod = ["data/db"] });
        b.Both(f => f with { Verdict = ["DROPPED"] });
        var filters = b.Build();
        Assert.Equal(2, filters.Count);
        Assert.Equal([FrontToDbDropped], All.Where(f => FlowFilters.Passes(f, filters, null)));

        // --from-pod shop/frontend --label app=backend: the label may be on either side, the source stays frontend.
        b = new FlowFilterBuilder();
        b.From(f => f with { SourcePod = ["shop/frontend"] });
        b.Either(f => f with { SourceLabel = ["app=backend"] }, f => f with { DestinationLabel = ["app=backend"] });
        Assert.Equal([FrontToBack, Http500], All.Where(f => FlowFilters.Passes(f, b.Build(), null)));

        Assert.Empty(new FlowFilterBuilder().Build());
    }

    [Theory]
    [InlineData("verdict", "PASSED")]
    [InlineData("protocol", "quic")]
    [InlineData("port", "http")]
    [InlineData("ip", "10.0.0.300")]
    [InlineData("http status", "5xx")]
    [InlineData("traffic direction", "sideways")]
    [InlineData("label", "=x")]
    public void Malformed_filters_are_refused_with_the_field_named(string field, string value)
    {
        var f = field switch
        {
            "verdict" => new FlowFilterDto { Verdict = [value] },
            "protocol" => new FlowFilterDto { Protocol = [value] },
            "port" => new FlowFilterDto { DestinationPort = [value] },
            "ip" => new FlowFilterDto { SourceIp = [value] },
            "http status" => new FlowFilterDto { HttpStatusCode = [value] },
            "traffic direction" => new FlowFilterDto { TrafficDirection = [value] },
            _ => new FlowFilterDto { SourceLabel = [value] },
        };
        var problem = FlowFilters.Validate(f);
        Assert.NotNull(problem);
        Assert.StartsWith(field, problem);
        Assert.Contains(value, problem);
    }
}
