using Trellis.Api;
using Trellis.Integration.Infrastructure;
using static Trellis.Integration.Infrastructure.Labs;

namespace Trellis.Integration.Acceleration;

/// <summary>
/// Same-node socket acceleration (`trellis config --socket-acceleration on`): TCP between two pods of the node is
/// spliced socket to socket after the handshake, so its data skips TCP/IP and the TC programs — and still the policy
/// cuts it, a half-close delivers every byte before the EOF, a reset is a reset, and flows through the L7 proxy are
/// left alone.
/// </summary>
[Collection(LabCollectionA.Name)]
[Trait("Requires", "root")]
public sealed class SocketAccelerationTests
{
    private static async Task<ulong> TcPacketsAsync(TestLab lab) => (await lab.Agent.StatusAsync()).PacketsForwarded;

    /// <summary>Sends 20 MB from <paramref name="client"/> through the echo server at ip:port and reads them back (then
    /// EOF); returns how many packets crossed the TC programs meanwhile.</summary>
    private static async Task<ulong> EchoTwentyMegabytesAsync(TestLab lab, Pod client, string ip, int port)
    {
        var before = await TcPacketsAsync(lab);
        var bulk = await client.ExecAsync(TimeSpan.FromSeconds(60), "sh", "-c",
            $"head -c 20000000 /dev/zero | socat -t5 - TCP:{ip}:{port} | wc -c");
        var tcPackets = await TcPacketsAsync(lab) - before;
        Assert.True(bulk.Ok && bulk.Stdout.Trim() == "20000000", $"every byte came back, then EOF: {bulk}");
        return tcPackets;
    }

    private static bool SockOpsAttached(TestLab lab) =>
        Trellis.Bpf.Cgroup.Query(Trellis.Lab.Cgroups.NodeDir(lab.Node), Trellis.Bpf.CgroupAttachType.SockOps)
            .Any(id => Trellis.Bpf.BpfProgram.InfoById(id)?.Name == "sock_accel_ops");

    [Fact]
    public async Task Spliced_connection_skips_tc_and_a_policy_change_still_cuts_it()
    {
        await using var lab = await ShopAsync();
        Assert.True((await lab.Agent.SetConfigAsync(new ConfigDto(SocketAcceleration: true))).SocketAcceleration);
        var client = lab.Pod("shop", "client");
        var serverIp = await lab.IpAsync("shop", "server");

        // 20 MB through the echo server and back: with splicing only the handshake and the FINs cross TC.
        var tcPackets = await EchoTwentyMegabytesAsync(lab, client, serverIp, TcpEcho);
        Assert.True(tcPackets < 100, $"{tcPackets} packets crossed the TC programs for 40 MB of spliced data");

        Assert.True(SockOpsAttached(lab), "acceleration on: sock_accel_ops is attached to the pods' cgroup");

        // The same without acceleration: the data crosses TC (the control for the check above), and no sock_ops
        // program runs for the node's sockets.
        await lab.Agent.SetConfigAsync(new ConfigDto(SocketAcceleration: false));
        Assert.False(SockOpsAttached(lab), "acceleration off: no sock_ops program on the pods' cgroup");
        Assert.True(await EchoTwentyMegabytesAsync(lab, client, serverIp, TcpEcho) > 1000, "without acceleration the data crosses TC");

        // An open spliced connection is cut when the policy stops allowing it (the agent takes the pod's sockets out of
        // the splice map, and TC drops their packets), like any other connection.
        await lab.Agent.SetConfigAsync(new ConfigDto(SocketAcceleration: true));
        var conn = client.OpenEcho(serverIp, TcpEcho);
        await conn.AssertWorksAsync("spliced, without policy");
        var before = await TcPacketsAsync(lab);
        await Task.Delay(1000);
        Assert.True(await TcPacketsAsync(lab) - before < 5, "the open echo connection's data does not cross TC while spliced");

        await lab.ApplyPolicyAsync(ServerIngressFromClient("other-port-only", (TcpEcho2, "TCP")));
        var applied = DateTime.UtcNow;
        await Task.Delay(TimeSpan.FromSeconds(2));
        Assert.False(await conn.EchoesSinceAsync(DateTime.UtcNow, TimeSpan.FromSeconds(1.5)),
            $"the spliced connection still carried echoes after the policy (last {conn.LastEcho:HH:mm:ss.fff}, applied {applied:HH:mm:ss.fff})");
        await lab.WaitForFlowAsync(f => f.Verdict == "DROPPED" && f.Source.Pod == "client" && f.Destination.Port == TcpEcho
            && f.DropReason == "policy denied" && !f.TcpFlags.Contains("SYN"), "DROPPED (established) client -> server:7000");
    }

    [Fact]
    public async Task A_server_listening_on_the_ipv6_wildcard_is_spliced_with_its_ipv4_clients()
    {
        await using var lab = await ShopAsync();
        await lab.Agent.SetConfigAsync(new ConfigDto(SocketAcceleration: true));
        var client = lab.Pod("shop", "client");
        var server = lab.Pod("shop", "server");
        var serverIp = await lab.IpAsync("shop", "server");

        // A dual-stack echo server, as iperf3, Go, Java and .NET listen by default: one AF_INET6 socket on [::] that
        // accepts IPv4 clients too, each as an AF_INET6 socket with IPv4-mapped addresses (::ffff:a.b.c.d). Started in
        // the server pod's cgroup, so the lab's teardown ends it.
        const int dualStackEcho = 7200;
        var start = await server.ExecAsync("/bin/sh", "-c",
            $"socat TCP6-LISTEN:{dualStackEcho},ipv6only=0,fork,reuseaddr EXEC:cat </dev/null >/dev/null 2>&1 &");
        Assert.True(start.Ok, start.ToString());
        await server.WaitListeningAsync(dualStackEcho);
        var listener = await server.ExecAsync("ss", "-H", "-ltn", "-f", "inet6", $"sport = :{dualStackEcho}");
        Assert.True(listener.Ok && listener.Stdout.Trim().Length > 0, $"the echo listens on an AF_INET6 socket: {listener}");

        // 20 MB through it and back over IPv4: only the handshake and the FINs cross TC when both ends are spliced (with
        // the client's socket alone in the map, every byte goes through TCP/IP and TC both ways).
        var tcPackets = await EchoTwentyMegabytesAsync(lab, client, serverIp, dualStackEcho);
        Assert.True(tcPackets < 100, $"{tcPackets} packets crossed the TC programs for 40 MB echoed by a server on [::]");

        // Both ends of an open connection are in the map (the client's AF_INET socket and the server's AF_INET6 one);
        // the agent takes the server's out by its IPv4 address like any other, so a policy change still cuts it.
        var conn = client.OpenEcho(serverIp, dualStackEcho);
        await conn.AssertWorksAsync("spliced, to a server on [::]");
        Assert.Equal(2, (await lab.Agent.StatusAsync()).AcceleratedSockets);
        await lab.ApplyPolicyAsync(ServerIngressFromClient("other-port-only", (TcpEcho2, "TCP")));
        Assert.Equal(0, (await lab.Agent.StatusAsync()).AcceleratedSockets);
        await Task.Delay(TimeSpan.FromSeconds(2));
        Assert.False(await conn.EchoesSinceAsync(DateTime.UtcNow, TimeSpan.FromSeconds(1.5)),
            $"the spliced connection to the server on [::] still carried echoes after the policy (last {conn.LastEcho:HH:mm:ss.fff})");
    }

    [Fact]
    public async Task A_reset_on_a_spliced_connection_reaches_the_other_end_as_a_reset()
    {
        await using var lab = await ShopAsync();
        await lab.Agent.SetConfigAsync(new ConfigDto(SocketAcceleration: true));
        var client = lab.Pod("shop", "client");
        var serverIp = await lab.IpAsync("shop", "server");

        // The client sends, reads the echo (spliced by then), and aborts with SO_LINGER 0 (RST) while the echo server
        // is still reading; the server side must see the reset: socat exits and a new connection is served by a new child.
        const string script = """
            import socket, struct, sys
            s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
            s.sendall(b'ping\n')
            print(s.recv(16).decode().strip())
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
            s.close()
            t = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
            t.sendall(b'again\n'); print(t.recv(16).decode().strip())
            """;
        var r = await client.ExecAsync(TimeSpan.FromSeconds(20), "/usr/bin/python3", "-c", script, serverIp, TcpEcho.ToString());
        Assert.True(r.Ok, r.ToString());
        Assert.Equal(["ping", "again"], r.Stdout.Trim().Split('\n'));
        await lab.WaitForFlowAsync(f => f.Source.Pod == "client" && f.Destination.Port == TcpEcho && f.TcpFlags.Contains("SYN"),
            "the spliced connections' handshakes still reported as flows");
    }
}
