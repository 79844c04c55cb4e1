using System.Text.Json;
using Trellis.Integration.Infrastructure;
using Trellis.Lab;
using static Trellis.Integration.Infrastructure.Labs;

namespace Trellis.Integration;

/// <summary>
/// Pod to pod on one node: from_container applies both ends' policy and hands the packet straight into the
/// destination pod's interface (bpf_redirect_peer), so it never leaves through the destination's host-side veth. The
/// veth's transmit counter shows which way a packet went.
/// </summary>
[Collection(LabCollectionB.Name)]
[Trait("Requires", "root")]
public sealed class DirectDeliveryTests
{
    [Fact]
    public async Task Pod_to_pod_packets_enter_the_destination_pod_directly_and_its_ingress_policy_still_decides()
    {
        await using var lab = await ShopAsync();
        var client = lab.Pod("shop", "client");
        var intruder = lab.Pod("data", "intruder");
        var server = await lab.EndpointAsync("shop", "server");
        var clientEp = await lab.EndpointAsync("shop", "client");

        // Control: a connection from the node's own stack (not a pod) goes out through the server's veth.
        long viaStack = await TxPacketsAsync(lab, server.Ifname);
        var fromNode = await Processes.RunAsync("nsenter", TimeSpan.FromSeconds(10), $"--net={Naming.NetnsPath(Naming.NodeNetns(lab.Node))}",
            "socat", "-T1", "/dev/null", $"TCP:{server.Ip}:{TcpEcho},connect-timeout=1");
        Assert.True(fromNode.Ok, $"node -> server: {fromNode}");
        Assert.True(await TxPacketsAsync(lab, server.Ifname) - viaStack >= 3, "a connection from the node is sent through the server's host veth");

        await lab.ApplyPolicyAsync(ServerIngressFromClient("server-from-client", (TcpEcho, "TCP")));
        long serverTx = await TxPacketsAsync(lab, server.Ifname), clientTx = await TxPacketsAsync(lab, clientEp.Ifname);

        for (int i = 0; i < 10; i++)
        {
            var c = await client.TcpConnectAsync(server.Ip, TcpEcho);
            Assert.True(c.Ok, $"client -> server:{TcpEcho} is allowed: {c}");
        }
        var echo = await client.ExecAsync(TimeSpan.FromSeconds(20), "sh", "-c",
            $"head -c 300000 /dev/zero | socat -t 3 - TCP:{server.Ip}:{TcpEcho} | wc -c");
        Assert.Equal("300000", echo.Stdout.Trim());

        var denied = await intruder.TcpConnectAsync(server.Ip, TcpEcho);
        Assert.False(denied.Ok, $"data/intruder -> server is denied by the server's ingress policy: {denied}");
        var drop = await lab.WaitForFlowAsync(f => f.Verdict == "DROPPED" && f.Source.Pod == "intruder" && f.Destination.Port == TcpEcho,
            "DROPPED data/intruder -> shop/server:7000");
        Assert.Equal(("INGRESS", "policy denied"), (drop.Direction, drop.DropReason));
        await lab.WaitForFlowAsync(f => f.Verdict == "FORWARDED" && f.Direction == "INGRESS" && f.Source.Pod == "client"
            && f.Destination.Pod == "server" && f.Destination.Port == TcpEcho, "FORWARDED INGRESS shop/client -> shop/server:7000");

        // Dozens of packets each way, none sent through either host-side veth (a few for slack: nothing else talks).
        long serverSent = await TxPacketsAsync(lab, server.Ifname) - serverTx, clientSent = await TxPacketsAsync(lab, clientEp.Ifname) - clientTx;
        Assert.True(serverSent < 5, $"{serverSent} packets went out of the server's host veth: pod-to-pod packets should enter the pod directly");
        Assert.True(clientSent < 5, $"{clientSent} packets went out of the client's host veth: replies should enter the pod directly");
    }

    private static async Task<long> TxPacketsAsync(TestLab lab, string ifname)
    {
        var r = await Processes.RunAsync("ip", TimeSpan.FromSeconds(5), "-n", Naming.NodeNetns(lab.Node), "-j", "-s", "link", "show", "dev", ifname);
        Assert.True(r.Ok, $"ip -s link show {ifname}: {r}");
        using var doc = JsonDocument.Parse(r.Stdout);
        return doc.RootElement[0].GetProperty("stats64").GetProperty("tx").GetProperty("packets").GetInt64();
    }
}
