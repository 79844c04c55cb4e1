using Trellis.Api;
using static Trellis.ServiceMap.Tests.Fixture;

namespace Trellis.ServiceMap.Tests;

public sealed class ServiceMapBuilderTests
{
    private static ServiceGraph Graph(IReadOnlyCollection<string>? namespaces = null) => ServiceMapBuilder.Build(Flows(), T0, T1, namespaces);

    [Fact]
    public void Nodes_are_workloads_grouped_by_namespace_and_app_label_plus_world_and_host()
    {
        var g = Graph();

        Assert.Equal(["pod:data/db", "pod:shop/backend", "pod:shop/frontend", "pod:shop/web", "host", "world"], g.Nodes.Select(n => n.Id));
        var backend = g.Node("pod:shop/backend");
        Assert.Equal((NodeKind.Workload, "shop", "backend"), (backend.Kind, backend.Namespace, backend.Name));
        Assert.Equal(["backend-1", "backend-2"], backend.Pods);
        Assert.Equal(["10.200.0.3", "10.200.0.5"], backend.Ips);
        Assert.Equal(["frontend-7d9f"], g.Node("pod:shop/frontend").Pods);
        Assert.Equal("web", g.Node("pod:shop/web").Name); // no app label: the pod's name
        var world = g.Node("world");
        Assert.Equal((NodeKind.World, null, "world"), (world.Kind, world.Namespace, world.Name));
        Assert.Equal(["203.0.113.7"], world.Ips);
        Assert.Equal(["10.200.0.1"], g.Node("host").Ips);
        Assert.DoesNotContain(g.Nodes, n => n.Ips.Contains("10.96.0.10")); // the TRANSLATED trace's service address
    }

    [Fact]
    public void Edges_count_each_connection_once_with_its_worst_verdict_and_skip_replies_and_translated_traces()
    {
        var g = Graph();

        Assert.Equal(
        [
            ("host", "pod:shop/frontend", "TCP", 8080, 1, 0, 0),
            ("pod:shop/backend", "pod:data/db", "TCP", 5432, 0, 0, 1),
            ("pod:shop/frontend", "pod:data/db", "TCP", 5432, 0, 2, 0),
            ("pod:shop/frontend", "pod:shop/backend", "TCP", 8080, 2, 0, 0),
            ("world", "pod:shop/web", "TCP", 8080, 1, 0, 0),
        ], g.Edges.Select(e => (e.From, e.To, e.Protocol, e.Port, e.Forwarded, e.Dropped, e.Audit)));

        var denied = g.Edges.Single(e => e.To == "pod:data/db" && e.From == "pod:shop/frontend");
        Assert.Equal(EdgeVerdict.Dropped, denied.Verdict);
        Assert.Equal(["policy denied"], denied.DropReasons);
        Assert.Equal(2 / 300.0, denied.PerSecond, 9);
        Assert.Equal(["shop/backend:http"], g.Edges.Single(e => e.To == "pod:shop/backend").Services);
        Assert.Equal(["shop/web:http"], g.Edges.Single(e => e.From == "world").Services);
        var audit = g.Edges.Single(e => e.From == "pod:shop/backend");
        Assert.Equal((EdgeVerdict.Audit, "policy denied"), (audit.Verdict, audit.AuditReasons.Single()));
        Assert.DoesNotContain(g.Edges, e => e.Port == 9999); // before the window
        Assert.DoesNotContain(g.Edges, e => e.From == "pod:shop/backend" && e.To == "pod:shop/frontend"); // a reply
    }

    [Fact]
    public void Namespace_filter_keeps_connections_with_an_end_in_the_namespace()
    {
        var g = Graph(["data"]);

        Assert.Equal([("pod:shop/backend", "pod:data/db"), ("pod:shop/frontend", "pod:data/db")], g.Edges.Select(e => (e.From, e.To)));
        Assert.Equal(["pod:data/db", "pod:shop/backend", "pod:shop/frontend"], g.Nodes.Select(n => n.Id));
        Assert.Empty(ServiceMapBuilder.Build(Flows(), T0, T1, ["nowhere"]).Edges);
    }

    [Fact]
    public void A_connection_forwarded_at_one_end_and_dropped_at_the_other_is_dropped_and_mixed_edges_keep_both_counts()
    {
        var flows = new List<FlowDto>
        {
            Flow(Frontend(41000), Db(), direction: "EGRESS"),
            Flow(Frontend(41000), Db(), verdict: "DROPPED", direction: "INGRESS", reason: "policy denied"),
            Flow(Frontend(41001), Db(), direction: "EGRESS"),
            Flow(Frontend(41001), Db(), direction: "INGRESS"),
        };
        var e = Assert.Single(ServiceMapBuilder.Build(flows, T0, T1).Edges);
        Assert.Equal((1, 1, EdgeVerdict.Dropped), (e.Forwarded, e.Dropped, e.Verdict));
        Assert.Equal("TCP/5432 · 0.4/min (2 flows)\n✓ 1 forwarded\n✗ 1 dropped (policy denied)", DotWriter.EdgeLabel(e));
    }

    [Fact]
    public void Non_pods_are_host_world_cidr_or_unknown_and_a_gone_pod_is_named_from_its_identity_labels()
    {
        Assert.Equal("cidr:192.0.2.0/24", ServiceMapBuilder.Classify(new("192.0.2.9", 443, 16777217, null, null, ["cidr:192.0.2.0/24", "reserved:world"])).Id);
        Assert.Equal("unknown", ServiceMapBuilder.Classify(new("10.9.9.9", 1, 0, null, null, [])).Id);
        Assert.Equal("host", ServiceMapBuilder.Classify(Host()).Id);
        var gone = ServiceMapBuilder.Classify(new("10.200.0.9", 1, 305, null, null, ["k8s:app=api", "k8s:io.kubernetes.pod.namespace=shop"]));
        Assert.Equal(("pod:shop/api", NodeKind.Workload, "shop"), (gone.Id, gone.Kind, gone.Namespace));
        var named = ServiceMapBuilder.Classify(Pod("shop", "cart-5f6d7", "10.200.0.8", 1, 306, "k8s:app.kubernetes.io/name=cart"));
        Assert.Equal("pod:shop/cart", named.Id);
    }

    [Theory]
    [InlineData("5m", 300)]
    [InlineData("30s", 30)]
    [InlineData("1h", 3600)]
    [InlineData("1h30m", 5400)]
    [InlineData("2m5s", 125)]
    public void Durations_parse(string text, int seconds)
    {
        Assert.True(Durations.TryParse(text, out var t, out var error), error);
        Assert.Equal(TimeSpan.FromSeconds(seconds), t);
    }

    [Theory]
    [InlineData("", "not a duration")]
    [InlineData("5", "not a duration")]
    [InlineData("5x", "not a duration")]
    [InlineData("-5m", "not a duration")]
    [InlineData("m", "not a duration")]
    [InlineData("5m1h", "not a duration")]
    [InlineData("0s", "zero")]
    [InlineData("200h", "longer than 7 days")]
    [InlineData("99999999999999999999h", "longer than 7 days")]
    public void Bad_durations_are_rejected_with_a_reason(string text, string reason)
    {
        Assert.False(Durations.TryParse(text, out _, out var error));
        Assert.Contains(reason, error);
    }

    [Fact]
    public void An_empty_window_is_an_argument_error()
    {
        Assert.Throws<ArgumentException>(() => ServiceMapBuilder.Build([], T1, T0));
    }
}
