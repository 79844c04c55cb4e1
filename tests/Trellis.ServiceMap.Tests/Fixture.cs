using Trellis.Api;

namespace Trellis.ServiceMap.Tests;

/// <summary>A known set of flows, as the agent reports them, over the window [T0, T0+5m].</summary>
internal static class Fixture
{
    public static readonly DateTimeOffset T0 = new(2025, 1, 1, 12, 0, 0, TimeSpan.Zero);
    public static readonly DateTimeOffset T1 = T0.AddMinutes(5);

    public static FlowEndpointDto Frontend(int port = 40001) => Pod("shop", "frontend-7d9f", "10.200.0.2", port, 300, "k8s:app=frontend", "k8s:tier=web");
    public static FlowEndpointDto Backend1(int port = 8080) => Pod("shop", "backend-1", "10.200.0.3", port, 301, "k8s:app=backend");
    public static FlowEndpointDto Backend2(int port = 8080) => Pod("shop", "backend-2", "10.200.0.5", port, 301, "k8s:app=backend");
    public static FlowEndpointDto Db(int port = 5432) => Pod("data", "db", "10.200.0.4", port, 302, "k8s:app=db");
    /// <summary>No app label: the workload is the pod's name.</summary>
    public static FlowEndpointDto Web(int port = 8080) => Pod("shop", "web", "10.200.0.6", port, 303, "k8s:tier=edge");
    public static FlowEndpointDto World(string ip = "203.0.113.7", int port = 51000) => new(ip, port, 2, null, null, ["reserved:world"]);
    public static FlowEndpointDto Host(int port = 33000) => new("10.200.0.1", port, 1, null, null, ["reserved:host"]);

    public static FlowEndpointDto Pod(string ns, string pod, string ip, int port, uint identity, params string[] labels) =>
        new(ip, port, identity, ns, pod, labels);

    public static FlowDto Flow(FlowEndpointDto src, FlowEndpointDto dst, string verdict = "FORWARDED", string direction = "EGRESS",
        bool reply = false, string? reason = null, string? service = null, int second = 10, string protocol = "TCP") =>
        new(T0.AddSeconds(second), "node1", verdict, reason, direction, reply, src, dst, protocol, protocol == "TCP" ? ["SYN"] : [],
            reason is null ? null : "db-ingress", reason is null ? null : "data", 60, service);

    /// <summary>
    /// frontend → backend (two pods, one connection seen at both ends, one via the backend service): 2 forwarded.
    /// frontend → db: 2 connections dropped by policy (one SYN retransmitted three times), after frontend's egress let them out.
    /// backend → db: 1 audit. world → web via shop/web:http: 1 forwarded. host → frontend: 1 forwarded.
    /// Replies, a TRANSLATED trace and a flow before the window are noise that must not show.
    /// </summary>
    public static List<FlowDto> Flows() =>
    [
        Flow(Frontend(40001), Backend1(), direction: "EGRESS", second: 10),
        Flow(Frontend(40001), Backend1(), direction: "INGRESS", second: 10),
        Flow(Backend1(), Frontend(40001), direction: "EGRESS", reply: true, second: 10),
        Flow(Frontend(40002), new FlowEndpointDto("10.96.0.10", 80, 0, null, null, []), verdict: "TRANSLATED", service: "shop/backend:http", second: 20),
        Flow(Frontend(40002), Backend2(), direction: "EGRESS", service: "shop/backend:http", second: 20),

        Flow(Frontend(40010), Db(), direction: "EGRESS", second: 30),
        Flow(Frontend(40010), Db(), verdict: "DROPPED", direction: "INGRESS", reason: "policy denied", second: 30),
        Flow(Frontend(40010), Db(), verdict: "DROPPED", direction: "INGRESS", reason: "policy denied", second: 31),
        Flow(Frontend(40010), Db(), verdict: "DROPPED", direction: "INGRESS", reason: "policy denied", second: 33),
        Flow(Frontend(40011), Db(), verdict: "DROPPED", direction: "INGRESS", reason: "policy denied", second: 40),

        Flow(Backend1(40020), Db(), verdict: "AUDIT", direction: "INGRESS", reason: "policy denied", second: 50),

        Flow(World(), Web(), direction: "INGRESS", service: "shop/web:http", second: 60),
        Flow(Web(), World(), direction: "EGRESS", reply: true, service: "shop/web:http", second: 60),

        Flow(Host(), Frontend(8080), direction: "INGRESS", second: 70),

        Flow(Frontend(40099), Db(9999), verdict: "DROPPED", direction: "INGRESS", reason: "policy denied", second: -60),
    ];
}
