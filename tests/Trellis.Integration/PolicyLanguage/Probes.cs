using System.Diagnostics;
using Trellis.Api;
using Trellis.Integration.Infrastructure;
using Trellis.Lab;

namespace Trellis.Integration.PolicyLanguage;

/// <summary>Short TCP probes: a handshake that completes within the timeout counts as connected. The
/// servers answer a SYN at once, so a dropped SYN is the only way to miss a sub-second timeout.</summary>
public static class Probes
{
    public static readonly TimeSpan Short = TimeSpan.FromSeconds(0.5);
    public static readonly TimeSpan Blocked = TimeSpan.FromSeconds(1);

    private static string[] Socat(string ip, int port, TimeSpan timeout) =>
        ["socat", "-T1", "/dev/null", $"TCP:{ip}:{port},connect-timeout={timeout.TotalSeconds:0.0##}"];

    public static Task<ExecResult> ConnectAsync(this Pod from, string ip, int port, TimeSpan? timeout = null)
    {
        var t = timeout ?? Blocked;
        return from.ExecAsync(t + TimeSpan.FromSeconds(5), Socat(ip, port, t));
    }

    public static async Task AssertConnectsAsync(this Pod from, string ip, int port, string why)
    {
        var r = await from.ConnectAsync(ip, port, TimeSpan.FromSeconds(2));
        Assert.True(r.Ok, $"{from.Namespace}/{from.Name} -> {ip}:{port} should connect ({why}): {r}");
    }

    public static async Task AssertBlockedAsync(this Pod from, string ip, int port, string why)
    {
        var r = await from.ConnectAsync(ip, port);
        Assert.False(r.Ok, $"{from.Namespace}/{from.Name} -> {ip}:{port} should be blocked ({why}) but connected: {r}");
    }

    /// <summary>Runs a command in the node's network namespace (where the agent runs), not in any pod.</summary>
    public static Task<ExecResult> NodeExecAsync(TestLab lab, TimeSpan timeout, params string[] command) =>
        NetnsExecAsync(Naming.NetnsPath(Naming.NodeNetns(lab.Node)), timeout, command);

    public static async Task<ExecResult> NetnsExecAsync(string netnsPath, TimeSpan timeout, params string[] command)
    {
        var psi = new ProcessStartInfo("nsenter")
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
        };
        psi.ArgumentList.Add($"--net={netnsPath}");
        psi.ArgumentList.Add("--");
        foreach (var a in command) psi.ArgumentList.Add(a);
        return await Processes.RunAsync(psi, timeout);
    }

    public static Task<ExecResult> NodeConnectAsync(TestLab lab, string ip, int port, TimeSpan? timeout = null)
    {
        var t = timeout ?? Blocked;
        return NodeExecAsync(lab, t + TimeSpan.FromSeconds(5), Socat(ip, port, t));
    }

    /// <summary>Flows recorded after <paramref name="since"/> only: one lab goes through several policy phases.</summary>
    public static Task<FlowDto> WaitForFlowSinceAsync(this TestLab lab, DateTimeOffset since, Func<FlowDto, bool> match, string what) =>
        lab.WaitForFlowAsync(f => f.Time >= since && match(f), what);

    /// <summary>A client-opened TCP flow (the SYN, not a reply) to the given port.</summary>
    public static bool Syn(FlowDto f, string srcIp, string dstIp, int port) =>
        !f.IsReply && f.Protocol == "TCP" && f.Source.Ip == srcIp && f.Destination.Ip == dstIp && f.Destination.Port == port;
}
