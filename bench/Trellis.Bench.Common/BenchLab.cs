using System.Globalization;
using Trellis.Api;
using Trellis.Lab;

namespace Trellis.Bench.Common;

/// <summary>A bench's lab node seen from outside: the trellis CLI that drives it, taking it down, the pid files of
/// its agent and L7 proxy, and the agent's metrics.</summary>
public static class BenchLab
{
    /// <summary>The agent's metrics listener (its default), inside the node's network namespace.</summary>
    public const string MetricsUrl = "http://127.0.0.1:9962/metrics";

    /// <summary>Runs the trellis CLI; a non-zero exit is a failure with everything it printed.</summary>
    public static void RunTrellis(string trellis, IReadOnlyList<string> args, TimeSpan timeout, CancellationToken ct)
    {
        var r = Processes.Run(trellis, args, timeout, ct);
        if (r.Code != 0)
            throw new BenchException($"{trellis} {string.Join(' ', args)} failed (exit {r.Code}):{Environment.NewLine}{r.Out}{r.Err}");
    }

    /// <summary>`trellis lab down` for the node; what fails is a warning (this runs while cleaning up).</summary>
    public static void Down(string trellis, string node, TimeSpan timeout)
    {
        // In its own session, so a Ctrl-C on the terminal (which signals the whole foreground group) cannot cut it short.
        var r = Processes.Run("setsid", ["-w", trellis, "lab", "down", "--node", node], timeout, CancellationToken.None);
        if (r.Code != 0)
            Console.Error.WriteLine($"warning: '{trellis} lab down --node {node}' failed (exit {r.Code}): {r.Out}{r.Err}");
        if (File.Exists(Naming.NetnsPath(Naming.NodeNetns(node))))
            Console.Error.WriteLine($"warning: network namespace {Naming.NodeNetns(node)} is still there; run '{trellis} lab down --node {node}'");
    }

    public static string AgentPidFile(string node) => Path.Combine(AgentPaths.RunDir(node), "agent.pid");
    public static string ProxyPidFile(string node) => Path.Combine(AgentPaths.RunDir(node), "proxy.pid");

    /// <summary>The agent's Prometheus text, read inside the node's network namespace where its listener is.</summary>
    public static string Metrics(string node, CancellationToken ct)
    {
        var r = Processes.Run("nsenter", [$"--net={Naming.NetnsPath(Naming.NodeNetns(node))}", "--", "curl", "-sS", "--max-time", "5", MetricsUrl], TimeSpan.FromSeconds(20), ct);
        if (r.Code != 0)
            throw new BenchException($"cannot read the agent's metrics ({MetricsUrl} in netns {Naming.NodeNetns(node)}): curl exit {r.Code}: {r.Err}");
        return r.Out;
    }

    /// <summary>Sum of one metric family's samples whose labels contain every given label="value"; null if none.</summary>
    public static double? MetricValue(string text, string name, params string[] labels)
    {
        double? sum = null;
        foreach (var line in text.Split('\n'))
        {
            if (!line.StartsWith(name, StringComparison.Ordinal) || line.Length <= name.Length || line[name.Length] is not ('{' or ' '))
                continue;
            if (labels.Any(l => !line.Contains(l, StringComparison.Ordinal)))
                continue;
            sum = (sum ?? 0) + double.Parse(line[(line.LastIndexOf(' ') + 1)..], CultureInfo.InvariantCulture);
        }
        return sum;
    }

    /// <summary>HTTP requests to <paramref name="workload"/> ("namespace/pod") the agent has seen from the node's
    /// proxy: one L7 record each, any status.</summary>
    public static long ProxiedRequests(string node, string workload, CancellationToken ct) =>
        (long)(MetricValue(Metrics(node, ct), "hubble_http_requests_total", $"destination_workload=\"{workload}\"") ?? 0);

    /// <summary>The same once it stops moving: the proxy sends its records asynchronously (a queue, then a datagram
    /// to the agent), so the last requests of a run may be counted a little after wrk has exited.</summary>
    public static long SettledProxiedRequests(string node, string workload, CancellationToken ct)
    {
        var last = ProxiedRequests(node, workload, ct);
        for (var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(3); DateTime.UtcNow < deadline;)
        {
            Thread.Sleep(150);
            var now = ProxiedRequests(node, workload, ct);
            if (now == last) return now;
            last = now;
        }
        return last;
    }
}
