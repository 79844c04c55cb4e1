using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Trellis.Integration.Infrastructure;
using Trellis.Lab;
using Xunit.Abstractions;
using static Trellis.Integration.Infrastructure.Labs;

namespace Trellis.Integration.Observability;

/// <summary>The agent's Prometheus endpoint (127.0.0.1:9962 in the lab node's network namespace), scraped by a
/// real Prometheus server (Debian's prometheus) running in that namespace.</summary>
[Collection(LabCollectionB.Name)]
[Trait("Requires", "root")]
public sealed class MetricsTests(ITestOutputHelper output)
{
    private const int PrometheusPort = 9090; // inside the lab node's own network namespace: nothing else listens there

    [Fact]
    public async Task A_real_Prometheus_scrapes_the_agent_and_sees_drops_policy_verdicts_and_endpoints()
    {
        await using var lab = await ShopAsync();
        var client = lab.Pod("shop", "client");
        var intruder = lab.Pod("data", "intruder");
        var serverIp = await lab.IpAsync("shop", "server");
        var intruderIp = await lab.IpAsync("data", "intruder");
        await lab.ApplyPolicyAsync(ServerIngressFromClient("server-from-client", (TcpEcho, "TCP")));

        var allowed = await client.TcpConnectAsync(serverIp, TcpEcho);
        Assert.True(allowed.Ok, $"shop/client -> server:{TcpEcho} is allowed: {allowed}");
        var denied = await intruder.TcpConnectAsync(serverIp, TcpEcho);
        Assert.False(denied.Ok, $"data/intruder -> server:{TcpEcho} is not allowed: {denied}");
        await lab.WaitForFlowAsync(f => f.Verdict == "DROPPED" && f.Source.Ip == intruderIp && f.DropReason == "policy denied",
            "DROPPED data/intruder -> shop/server (policy denied)");
        int pods = (await lab.Agent.EndpointsAsync()).Count;
        Assert.Equal(3, pods);

        var netns = Naming.NetnsPath(Naming.NodeNetns(lab.Node));
        var scrape = await InNodeAsync(netns, "curl", "-sS", "-m", "5", "http://127.0.0.1:9962/metrics");
        Assert.True(scrape.Ok, $"GET http://127.0.0.1:9962/metrics in the node's netns: {scrape}");
        output.WriteLine(string.Join('\n', scrape.Stdout.Split('\n').Where(l => l.StartsWith("hubble_", StringComparison.Ordinal)
            || l.StartsWith("cilium_", StringComparison.Ordinal) || l.StartsWith("trellis_", StringComparison.Ordinal))));

        var dir = Directory.CreateTempSubdirectory($"trellis-prometheus-{lab.Node}-").FullName;
        Process? prometheus = null;
        try
        {
            var config = Path.Combine(dir, "prometheus.yml");
            await File.WriteAllTextAsync(config, """
                global:
                  scrape_interval: 1s
                  evaluation_interval: 1s
                scrape_configs:
                  - job_name: trellis-agent
                    static_configs:
                      - targets: ["127.0.0.1:9962"]
                """);
            var psi = new ProcessStartInfo("nsenter")
            {
                UseShellExecute = false,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            foreach (var a in new[] { $"--net={netns}", "--", "prometheus", $"--config.file={config}",
                         $"--storage.tsdb.path={Path.Combine(dir, "data")}", $"--web.listen-address=127.0.0.1:{PrometheusPort}", "--log.level=warn" })
                psi.ArgumentList.Add(a);
            prometheus = Process.Start(psi)!;
            var log = new System.Text.StringBuilder();
            prometheus.OutputDataReceived += (_, e) => { lock (log) log.AppendLine(e.Data); };
            prometheus.ErrorDataReceived += (_, e) => { lock (log) log.AppendLine(e.Data); };
            prometheus.BeginOutputReadLine();
            prometheus.BeginErrorReadLine();

            // Prometheus starts, scrapes every second and evaluates; wait (bounded) until each query has its answer.
            async Task<double> WaitFor(string query, Func<double, bool> ok, string what)
            {
                var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
                string last = "(no answer)";
                while (DateTime.UtcNow < deadline)
                {
                    if (prometheus.HasExited)
                        lock (log) throw new Xunit.Sdk.XunitException($"prometheus exited with {prometheus.ExitCode}: {log}");
                    var r = await InNodeAsync(netns, "curl", "-sS", "-m", "5", "-G", $"http://127.0.0.1:{PrometheusPort}/api/v1/query",
                        "--data-urlencode", $"query={query}");
                    last = r.ToString();
                    if (r.Ok && Sample(r.Stdout) is { } v)
                    {
                        last = $"{query} = {v.ToString(CultureInfo.InvariantCulture)}";
                        if (ok(v)) return v;
                    }
                    await Task.Delay(500);
                }
                lock (log) throw new Xunit.Sdk.XunitException($"Prometheus never saw {what} within 60 s; last answer: {last}; prometheus log: {log}");
            }

            Assert.Equal(1, await WaitFor("""up{job="trellis-agent"}""", v => v == 1, "the agent up"));
            var drops = await WaitFor("""sum(hubble_drop_total{reason="policy denied"})""", v => v >= 1, "a policy-denied drop");
            var dropsIngress = await WaitFor("""sum(cilium_drop_count_total{reason="policy denied",direction="INGRESS"})""", v => v >= 1,
                "a policy-denied drop at ingress");
            var forwarded = await WaitFor("""sum(hubble_policy_verdicts_total{direction="ingress",match="rule",action="forwarded"})""",
                v => v >= 1, "the allowed connection as a forwarded policy verdict");
            Assert.Equal(pods, await WaitFor("cilium_endpoint", v => v == pods, $"cilium_endpoint == {pods}"));
            var ctEntries = await WaitFor("""trellis_bpf_map_entries{map_name="trellis_ct"}""", v => v >= 1, "conntrack entries");
            output.WriteLine($"prometheus: policy-denied drops {drops}, at ingress {dropsIngress}, forwarded verdicts {forwarded}, endpoints {pods}, ct entries {ctEntries}");
        }
        finally
        {
            if (prometheus is not null)
            {
                if (!prometheus.HasExited) prometheus.Kill(entireProcessTree: true);
                await prometheus.WaitForExitAsync();
                prometheus.Dispose();
            }
            Directory.Delete(dir, recursive: true);
        }
    }

    [Theory]
    [InlineData("9962", "is not HOST:PORT")]
    [InlineData("127.0.0.1:http", "port 'http' is not a number")]
    [InlineData("example.org:9962", "host 'example.org' is not an IPv4 address")]
    public async Task A_bad_metrics_address_is_refused_before_the_agent_starts(string address, string message)
    {
        var r = await TrellisCli.RunAsync("agent", "--node", "it-nometrics", "--metrics-address", address);
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains($"--metrics-address: metrics address '{address}'", r.Stderr + r.Stdout);
        Assert.Contains(message, r.Stderr + r.Stdout);
    }

    private static Task<ExecResult> InNodeAsync(string netns, params string[] command) =>
        Processes.RunAsync("nsenter", TimeSpan.FromSeconds(15), [$"--net={netns}", "--", .. command]);

    /// <summary>The value of an instant query's single sample; null when the result is empty.</summary>
    private static double? Sample(string json)
    {
        using var doc = JsonDocument.Parse(json);
        var data = doc.RootElement.GetProperty("data");
        var result = data.GetProperty("result");
        if (result.GetArrayLength() == 0) return null;
        var value = result[0].GetProperty("value")[1].GetString()!;
        return double.Parse(value, CultureInfo.InvariantCulture);
    }
}
