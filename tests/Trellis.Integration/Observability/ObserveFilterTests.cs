using System.Diagnostics;
using System.Text.Json;
using Trellis.Api;
using Trellis.Integration.Infrastructure;
using static Trellis.Integration.Infrastructure.Labs;

namespace Trellis.Integration.Observability;

/// <summary>`trellis observe` filters and outputs, `trellis monitor`, and the flow pipeline's bounds, against real
/// traffic in the shop lab.</summary>
[Collection(LabCollectionB.Name)]
[Trait("Requires", "root")]
public sealed class ObserveFilterTests
{
    private static List<FlowDto> Json(ExecResult r)
    {
        Assert.True(r.Ok, $"trellis: {r}");
        return r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonSerializer.Deserialize<FlowDto>(l, AgentClient.Json)!).ToList();
    }

    [Fact]
    public async Task Filters_select_flows_like_hubble_and_every_output_format_prints_them()
    {
        await using var lab = await ShopAsync();
        var server = await lab.IpAsync("shop", "server");
        var before = DateTimeOffset.UtcNow.AddSeconds(-1);
        await lab.ApplyPolicyAsync(ServerIngressFromClient("server-from-client", (TcpEcho, "TCP"), (UdpEcho, "UDP")));
        Assert.True((await lab.Pod("shop", "client").TcpConnectAsync(server, TcpEcho)).Ok);
        Assert.True((await lab.Pod("shop", "client").UdpEchoAsync(server, UdpEcho, "hi")).Ok);
        Assert.False((await lab.Pod("data", "intruder").TcpConnectAsync(server, TcpEcho)).Ok);
        await lab.WaitForFlowAsync(f => f.Verdict == "DROPPED" && f.Source.Pod == "intruder", "the intruder's drop");
        await lab.WaitForFlowAsync(f => f.Protocol == "UDP" && f.Destination.Pod == "server", "the UDP flow");
        string[] node = ["--node", lab.Node, "--last", "1000"];

        // "Why was this connection dropped, by which policy": one command.
        var drops = Json(await TrellisCli.RunAsync(["observe", "--from-pod", "data/intruder", "--to-pod", "shop/server", "--verdict", "DROPPED", "-o", "json", .. node]));
        Assert.NotEmpty(drops);
        Assert.All(drops, f => Assert.Equal(("intruder", "server", "DROPPED", "policy denied"), (f.Source.Pod, f.Destination.Pod, f.Verdict, f.DropReason)));

        // Either side: --pod matches the pod as source or destination; -n qualifies a bare pod name.
        var withServer = Json(await TrellisCli.RunAsync(["observe", "-n", "shop", "--pod", "server", "--protocol", "udp", "-o", "json", .. node]));
        Assert.NotEmpty(withServer);
        Assert.All(withServer, f => Assert.True(f.Protocol == "UDP" && (f.Source.Pod == "server" || f.Destination.Pod == "server"), TestLab.Describe(f)));
        Assert.Contains(withServer, f => f.Destination.Pod == "server");

        var dataNs = Json(await TrellisCli.RunAsync(["observe", "-n", "data", "-o", "json", .. node]));
        Assert.NotEmpty(dataNs);
        Assert.All(dataNs, f => Assert.True(f.Source.Namespace == "data" || f.Destination.Namespace == "data", TestLab.Describe(f)));

        // Repeated values OR; labels and identities select by either side; ports too.
        var both = Json(await TrellisCli.RunAsync(["observe", "--verdict", "DROPPED", "--verdict", "FORWARDED", "--label", "app=server", "--port", TcpEcho.ToString(), "-o", "json", .. node]));
        Assert.Contains(both, f => f.Verdict == "DROPPED");
        Assert.Contains(both, f => f.Verdict == "FORWARDED");
        Assert.All(both, f => Assert.True(f.Source.Port == TcpEcho || f.Destination.Port == TcpEcho));
        var serverIdentity = (await lab.EndpointAsync("shop", "server")).Identity;
        var byIdentity = Json(await TrellisCli.RunAsync(["observe", "--to-identity", serverIdentity.ToString(), "--traffic-direction", "ingress", "-o", "json", .. node]));
        Assert.NotEmpty(byIdentity);
        Assert.All(byIdentity, f => Assert.Equal((serverIdentity, "INGRESS"), (f.Destination.Identity, f.Direction)));

        // Time window: everything is after `before`; nothing is before it.
        Assert.NotEmpty(Json(await TrellisCli.RunAsync(["observe", "--since", before.ToString("O"), "-o", "json", .. node])));
        Assert.Empty(Json(await TrellisCli.RunAsync(["observe", "--until", before.ToString("O"), "-o", "json", .. node])));
        Assert.NotEmpty(Json(await TrellisCli.RunAsync(["observe", "--since", "10m", "-o", "json", .. node])));

        // dict and compact.
        var dict = await TrellisCli.RunAsync(["observe", "--verdict", "DROPPED", "-o", "dict", .. node]);
        Assert.Contains("     VERDICT: DROPPED", dict.Stdout);
        Assert.Contains(" DROP REASON: policy denied", dict.Stdout);
        Assert.Contains("------------", dict.Stdout);
        var compact = await TrellisCli.RunAsync(["observe", "--from-pod", "data/intruder", .. node]);
        Assert.Contains("data/intruder", compact.Stdout);
        Assert.Contains("DROPPED", compact.Stdout);
        Assert.DoesNotContain("\u001b[", compact.Stdout); // not a terminal: no colour codes

        // Bad input: a clear error, non-zero exit.
        foreach (var (args, message) in new (string[], string)[]
        {
            (["--verdict", "PASSED"], "verdict 'PASSED' is not one of"),
            (["--since", "yesterday"], "--since 'yesterday' is neither a duration"),
            (["--until", "1m", "--follow"], "--until cannot be used with --follow"),
            (["--to-ip", "10.0.0.300"], "ip '10.0.0.300' is neither"),
            (["--identity", "web"], "identity 'web' is not a number"),
            (["--http-status", "5xx"], "http status '5xx'"),
        })
        {
            var r = await TrellisCli.RunAsync(["observe", .. args, .. node]);
            Assert.NotEqual(0, r.ExitCode);
            Assert.Contains(message, r.Stderr);
        }
    }

    [Fact]
    public async Task Monitor_prints_raw_drops_with_a_packet_summary()
    {
        await using var lab = await ShopAsync();
        var server = await lab.IpAsync("shop", "server");
        await lab.ApplyPolicyAsync(ServerIngressFromClient("server-from-client", (TcpEcho, "TCP")));

        var psi = new ProcessStartInfo(TestLab.TrellisExe) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { "monitor", "--type", "drop", "--node", lab.Node }) psi.ArgumentList.Add(a);
        using var monitor = Process.Start(psi)!;
        try
        {
            var ready = await monitor.StandardError.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(20));
            Assert.StartsWith("Listening for events", ready);
            await Task.Delay(300); // the agent has subscribed once the response headers are out; a margin for the stream
            Assert.False((await lab.Pod("data", "intruder").TcpConnectAsync(server, TcpEcho)).Ok);
            var line = await monitor.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(10));
            var intruder = await lab.IpAsync("data", "intruder");
            Assert.Matches($@"xx drop \(policy denied\) ep \d+ ifindex \d+ ingress, identity \d+->\d+: {intruder.Replace(".", "\\.")}:\d+ -> {server.Replace(".", "\\.")}:{TcpEcho} tcp SYN len \d+", line);
        }
        finally
        {
            if (!monitor.HasExited) monitor.Kill(entireProcessTree: true);
            await monitor.WaitForExitAsync();
        }
    }

    // A burst of new UDP flows: each makes at least two events (the client's egress and the server's ingress; the
    // server's ICMP port-unreachable replies are rate-limited by the kernel) unless the kernel hands out an ephemeral
    // port again for the same destination port (rare with 16 of them).
    private const string Burst = """
        import socket, sys
        for i in range(int(sys.argv[2])):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.sendto(b"x", (sys.argv[1], 9 + i % 16))  # 16 ports: a reused ephemeral port still makes a new flow
            s.close()
        """;

    [Fact]
    public async Task Bursts_within_the_kernel_ring_are_lossless_and_overflow_is_counted()
    {
        await using var lab = await ShopAsync();
        var server = await lab.IpAsync("shop", "server");
        var client = lab.Pod("shop", "client");
        var pid = lab.AgentPid();

        // The agent is stopped, so nothing drains the 4 MiB ring (65,536 events): 3,000 datagrams (6,000+ events) fit.
        var start = await lab.Agent.StatusAsync();
        Process.Start("kill", ["-STOP", pid.ToString()]).WaitForExit();
        try
        {
            Assert.True((await client.ExecAsync(TimeSpan.FromSeconds(60), "python3", "-c", Burst, server, "3000")).Ok);
        }
        finally
        {
            Process.Start("kill", ["-CONT", pid.ToString()]).WaitForExit();
        }
        StatusResponse s = start;
        for (var deadline = DateTime.UtcNow.AddSeconds(15); DateTime.UtcNow < deadline; await Task.Delay(200))
            if ((s = await lab.Agent.StatusAsync()).FlowsSeen >= start.FlowsSeen + 5800) break;
        Assert.Equal(start.EventsLost, s.EventsLost);
        Assert.True(s.FlowsSeen >= start.FlowsSeen + 5800, $"only {s.FlowsSeen - start.FlowsSeen} events arrived");
        // The agent's flow store is a bounded ring: it holds its capacity, the newest.
        Assert.Equal(s.FlowStoreCapacity, s.FlowStoreSize);

        // Past the ring's size: the kernel counts what it could not deliver; the agent reports it, and its memory
        // stays bounded (the flow store is a fixed ring; nothing grows per flow).
        long rssBefore = RssKb(pid);
        Process.Start("kill", ["-STOP", pid.ToString()]).WaitForExit();
        try
        {
            Assert.True((await client.ExecAsync(TimeSpan.FromSeconds(120), "python3", "-c", Burst, server, "40000")).Ok);
        }
        finally
        {
            Process.Start("kill", ["-CONT", pid.ToString()]).WaitForExit();
        }
        for (var deadline = DateTime.UtcNow.AddSeconds(15); DateTime.UtcNow < deadline; await Task.Delay(200))
            if ((s = await lab.Agent.StatusAsync()).EventsLost > start.EventsLost) break;
        Assert.True(s.EventsLost > start.EventsLost, "a burst of 80,000+ events into a 65,536-event ring lost nothing?");
        var status = await TrellisCli.RunAsync("status", "--node", lab.Node);
        Assert.Matches(@"(?i)lost", status.Stdout);
        long grownMb = (RssKb(pid) - rssBefore) / 1024;
        Assert.True(grownMb < 64, $"the agent's RSS grew by {grownMb} MB over a flood of 80,000+ flow events");
    }

    private static long RssKb(int pid) =>
        long.Parse(File.ReadLines($"/proc/{pid}/status").First(l => l.StartsWith("VmRSS:", StringComparison.Ordinal)).Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);
}
