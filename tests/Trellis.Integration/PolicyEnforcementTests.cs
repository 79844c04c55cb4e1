using Trellis.Integration.Infrastructure;
using static Trellis.Integration.Infrastructure.Labs;

namespace Trellis.Integration;

/// <summary>Policies applied through the agent API decide which connections pass; the flows say so.</summary>
[Collection(LabCollectionA.Name)]
[Trait("Requires", "root")]
public sealed class PolicyEnforcementTests
{
    [Fact]
    public async Task Allowed_tcp_connect_succeeds_and_denied_one_is_dropped_and_reported_as_policy_denied()
    {
        await using var lab = await ShopAsync();
        var client = lab.Pod("shop", "client");
        var intruder = lab.Pod("data", "intruder");
        var serverIp = await lab.IpAsync("shop", "server");
        var intruderIp = await lab.IpAsync("data", "intruder");

        var before = await intruder.TcpConnectAsync(serverIp, TcpEcho);
        Assert.True(before.Ok, $"without policy data/intruder should reach the server: {before}");

        await lab.ApplyPolicyAsync(ServerIngressFromClient("server-from-client", (TcpEcho, "TCP")));
        var server = await lab.EndpointAsync("shop", "server");
        Assert.True(server.IngressEnforced);
        Assert.False(server.EgressEnforced);

        var allowed = await client.TcpConnectAsync(serverIp, TcpEcho);
        Assert.True(allowed.Ok, $"shop/client -> server:{TcpEcho} is allowed: {allowed}");
        var denied = await intruder.TcpConnectAsync(serverIp, TcpEcho);
        Assert.False(denied.Ok, $"data/intruder -> server:{TcpEcho} is not allowed: {denied}");
        var deniedPort = await client.HttpGetAsync(serverIp, Http, timeoutSeconds: 1);
        Assert.False(deniedPort.Ok, $"shop/client -> server:{Http} is not allowed: {deniedPort}");

        var fwd = await lab.WaitForFlowAsync(f => f.Verdict == "FORWARDED" && f.Source.Pod == "client" && f.Destination.Pod == "server"
            && f.Destination.Port == TcpEcho && f.Protocol == "TCP", "FORWARDED shop/client -> shop/server:7000");
        Assert.Equal("shop", fwd.Source.Namespace);
        Assert.Equal("shop", fwd.Destination.Namespace);
        Assert.Equal(serverIp, fwd.Destination.Ip);
        Assert.Null(fwd.DropReason);
        Assert.Contains("SYN", fwd.TcpFlags);

        var drop = await lab.WaitForFlowAsync(f => f.Verdict == "DROPPED" && f.Source.Ip == intruderIp && f.Destination.Port == TcpEcho,
            "DROPPED data/intruder -> shop/server:7000");
        Assert.Equal("policy denied", drop.DropReason);
        Assert.Equal(("data", "intruder"), (drop.Source.Namespace, drop.Source.Pod));
        Assert.Equal(("shop", "server"), (drop.Destination.Namespace, drop.Destination.Pod));
        Assert.Equal("INGRESS", drop.Direction);
        Assert.Equal("TCP", drop.Protocol);
        Assert.Equal(lab.Node, drop.Node);
        Assert.Equal(server.Identity, drop.Destination.Identity);
        Assert.Equal((await lab.EndpointAsync("data", "intruder")).Identity, drop.Source.Identity);

        await lab.WaitForFlowAsync(f => f.Verdict == "DROPPED" && f.Source.Pod == "client" && f.Destination.Port == Http && f.DropReason == "policy denied",
            "DROPPED shop/client -> shop/server:8080 (port not allowed)");
    }

    [Fact]
    public async Task Allowed_udp_echo_answers_and_denied_udp_port_gets_no_answer()
    {
        await using var lab = await ShopAsync();
        var client = lab.Pod("shop", "client");
        var serverIp = await lab.IpAsync("shop", "server");

        var baseline = await client.UdpEchoAsync(serverIp, UdpEcho2, "baseline");
        Assert.True(baseline.Stdout.Contains("baseline"), $"without policy UDP {UdpEcho2} echoes: {baseline}");

        await lab.ApplyPolicyAsync(ServerIngressFromClient("udp-7001", (UdpEcho, "UDP")));

        var allowed = await client.UdpEchoAsync(serverIp, UdpEcho, "allowed-datagram");
        Assert.True(allowed.Stdout.Contains("allowed-datagram"), $"UDP {UdpEcho} is allowed and echoes: {allowed}");
        var denied = await client.UdpEchoAsync(serverIp, UdpEcho2, "denied-datagram");
        Assert.DoesNotContain("denied-datagram", denied.Stdout);

        var drop = await lab.WaitForFlowAsync(f => f.Verdict == "DROPPED" && f.Protocol == "UDP" && f.Destination.Port == UdpEcho2,
            "DROPPED UDP shop/client -> shop/server:7002");
        Assert.Equal("policy denied", drop.DropReason);
        Assert.Equal(("shop", "client"), (drop.Source.Namespace, drop.Source.Pod));
        await lab.WaitForFlowAsync(f => f.Verdict == "FORWARDED" && f.Protocol == "UDP" && f.Destination.Port == UdpEcho && f.Source.Pod == "client",
            "FORWARDED UDP shop/client -> shop/server:7001");
    }

    [Fact]
    public async Task Replies_pass_when_both_sides_enforce_policy_in_both_directions()
    {
        await using var lab = await ShopAsync();
        var client = lab.Pod("shop", "client");
        var server = lab.Pod("shop", "server");
        var serverIp = await lab.IpAsync("shop", "server");
        var clientIp = await lab.IpAsync("shop", "client");

        // The client may only send its request; the server may only receive it. Neither allows the other
        // direction, so the response passes only because replies are not subject to policy.
        await lab.ApplyPolicyAsync($$"""
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata:
              name: client-requests-only
              namespace: shop
            spec:
              endpointSelector:
                matchLabels:
                  app: client
              egress:
                - toEndpoints:
                    - matchLabels:
                        app: server
                  toPorts:
                    - ports:
                        - port: "{{TcpEcho}}"
                          protocol: TCP
              ingress:
                - fromEndpoints:
                    - matchLabels:
                        app: nobody
                  toPorts:
                    - ports:
                        - port: "9999"
                          protocol: TCP
            ---
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata:
              name: server-serves-only
              namespace: shop
            spec:
              endpointSelector:
                matchLabels:
                  app: server
              ingress:
                - fromEndpoints:
                    - matchLabels:
                        app: client
                  toPorts:
                    - ports:
                        - port: "{{TcpEcho}}"
                          protocol: TCP
              egress:
                - toEndpoints:
                    - matchLabels:
                        app: nobody
                  toPorts:
                    - ports:
                        - port: "9999"
                          protocol: TCP
            """);
        foreach (var e in (await lab.Agent.EndpointsAsync()).Where(e => e.Namespace == "shop"))
            Assert.True(e.IngressEnforced && e.EgressEnforced, $"{e.Pod} enforces both directions");

        // A request/response exchange, with a payload big enough to take several segments each way.
        var payload = new string('x', 20000);
        var echo = await client.ExecAsync(TimeSpan.FromSeconds(10), "/bin/sh", "-c",
            $"printf '%s\\nend\\n' \"$0\" | socat -T2 - TCP:{serverIp}:{TcpEcho},connect-timeout=2", payload);
        Assert.True(echo.Ok, $"request/response completes: {echo}");
        Assert.Contains(payload + "\nend", echo.Stdout);

        // The opposite directions are really enforced.
        var serverToClient = await server.TcpConnectAsync(clientIp, TcpEcho);
        Assert.False(serverToClient.Ok, $"server -> client is not allowed (server egress, client ingress): {serverToClient}");
        var clientToOtherPort = await client.TcpConnectAsync(serverIp, TcpEcho2);
        Assert.False(clientToOtherPort.Ok, $"client -> server:{TcpEcho2} is not allowed: {clientToOtherPort}");
        await lab.WaitForFlowAsync(f => f.Verdict == "DROPPED" && f.Source.Pod == "server" && f.Direction == "EGRESS",
            "DROPPED egress from shop/server");
        Assert.DoesNotContain(await lab.FlowsAsync(), f => f.Verdict == "DROPPED" && f.IsReply);
    }
}
