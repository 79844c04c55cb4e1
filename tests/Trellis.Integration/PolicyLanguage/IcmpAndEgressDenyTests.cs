using Trellis.Integration.Infrastructure;
using static Trellis.Integration.Infrastructure.Labs;

namespace Trellis.Integration.PolicyLanguage;

/// <summary>ICMP rules (`icmps`) and `egressDeny`, with real packets between pods.</summary>
[Collection(LabCollectionA.Name)]
[Trait("Requires", "root")]
public sealed class IcmpAndEgressDenyTests
{
    // An ICMP echo over a raw socket (no ping binary needed): prints "reply" or "timeout".
    private const string Ping = """
        import socket, struct, sys, time
        def csum(b):
            s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
            s = (s >> 16) + (s & 0xffff); s += s >> 16
            return ~s & 0xffff
        ident = 4242
        hdr = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"trellis!"
        pkt = struct.pack("!BBHHH", 8, 0, csum(hdr), ident, 1) + b"trellis!"
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        s.settimeout(1.0)
        s.sendto(pkt, (sys.argv[1], 0))
        deadline = time.time() + 1.0
        try:
            while time.time() < deadline:
                data, addr = s.recvfrom(1024)
                icmp = data[20:28]
                if addr[0] == sys.argv[1] and icmp[0] == 0 and struct.unpack("!H", icmp[4:6])[0] == ident:
                    print("reply"); sys.exit(0)
        except socket.timeout:
            pass
        print("timeout")
        """;

    private static async Task<string> PingAsync(Pod from, string ip) =>
        (await from.ExecAsync(TimeSpan.FromSeconds(10), "python3", "-c", Ping, ip)).Stdout.Trim();

    [Fact]
    public async Task Icmp_echo_passes_only_where_an_icmps_rule_allows_its_type()
    {
        await using var lab = await ShopAsync();
        var client = lab.Pod("shop", "client");
        var serverIp = await lab.IpAsync("shop", "server");
        Assert.Equal("reply", await PingAsync(client, serverIp));

        // Ingress enforced on the server, TCP only: echo requests are dropped.
        await lab.ApplyPolicyAsync(ServerIngressFromClient("server-tcp", (TcpEcho, "TCP")));
        Assert.Equal("timeout", await PingAsync(client, serverIp));
        await lab.WaitForFlowAsync(f => f.Verdict == "DROPPED" && f.Protocol == "ICMP" && f.Destination.Ip == serverIp, "ICMP drop");

        // An icmps rule for type 8 (EchoRequest) lets it through; the reply passes as a reply.
        await lab.ApplyPolicyAsync("""
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata: {name: server-ping, namespace: shop}
            spec:
              endpointSelector: {matchLabels: {app: server}}
              ingress:
                - fromEndpoints: [{matchLabels: {app: client}}]
                  icmps: [{fields: [{type: 8, family: IPv4}]}]
            """);
        Assert.Equal("reply", await PingAsync(client, serverIp));

        // A rule for another type (13, timestamp) does not.
        await lab.Agent.DeletePolicyAsync("shop", "server-ping");
        await lab.ApplyPolicyAsync("""
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata: {name: server-timestamp, namespace: shop}
            spec:
              endpointSelector: {matchLabels: {app: server}}
              ingress:
                - fromEndpoints: [{matchLabels: {app: client}}]
                  icmps: [{fields: [{type: 13}]}]
            """);
        Assert.Equal("timeout", await PingAsync(client, serverIp));
    }

    [Fact]
    public async Task EgressDeny_blocks_the_denied_port_and_wins_over_an_egress_allow()
    {
        await using var lab = await ShopAsync();
        var client = lab.Pod("shop", "client");
        var serverIp = await lab.IpAsync("shop", "server");
        await lab.ApplyPolicyAsync("""
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata: {name: client-egress, namespace: shop}
            spec:
              endpointSelector: {matchLabels: {app: client}}
              egress:
                - toEndpoints: [{matchLabels: {app: server}}]
              egressDeny:
                - toEndpoints: [{matchLabels: {app: server}}]
                  toPorts: [{ports: [{port: "7100", protocol: TCP}]}]
            """);
        await client.AssertConnectsAsync(serverIp, TcpEcho, "egress allowed to the server");
        var since = DateTimeOffset.UtcNow;
        await client.AssertBlockedAsync(serverIp, TcpEcho2, "egressDeny on 7100");
        var drop = await lab.WaitForFlowSinceAsync(since, f => f.Verdict == "DROPPED" && f.Destination.Port == TcpEcho2, "egress deny drop");
        Assert.Equal(("policy deny rule", "EGRESS", "client-egress"), (drop.DropReason, drop.Direction, drop.PolicyName));
        var trace = await lab.Agent.TraceAsync(new("shop", "client", null, "shop", "server", null, TcpEcho2, "TCP"));
        Assert.False(trace.Allowed);
    }
}
