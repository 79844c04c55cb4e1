using Trellis.Api;
using Trellis.Integration.Infrastructure;
using Trellis.Integration.PolicyLanguage;

namespace Trellis.Integration.L7;

/// <summary>Which flows the proxy sees: only those with HTTP rules or L7 visibility; everything else stays in the
/// kernel (no L7 record, no proxy socket).</summary>
[Collection(LabCollectionA.Name)]
[Trait("Requires", "root")]
public sealed class L7ScopeTests
{
    private static bool OnPort(FlowDto f, int port) => f.Destination.Port == port || (f.IsReply && f.Source.Port == port);

    [Fact]
    public async Task Flows_without_L7_rules_never_reach_the_proxy()
    {
        await using var l7 = await L7Lab.UpAsync();
        await l7.ApplyPublicGetOnlyAsync("client-out", L7Lab.HttpPlain, L7Lab.Echo);
        var since = DateTimeOffset.UtcNow;

        // The L4-only HTTP port: what the L7 rules would deny passes, nothing looks at HTTP there.
        L7Lab.AssertServed(await l7.RequestAsync("GET", L7Lab.HttpPlain, "/private"), "200", "ok GET /private", "L4-only port");
        L7Lab.AssertServed(await l7.RequestAsync("POST", L7Lab.HttpPlain, "/anything"), "200", "ok POST /anything", "L4-only port");
        var echo = l7.Client.OpenEcho(l7.ServerIp, L7Lab.Echo);
        await echo.AssertWorksAsync("L4-only echo");
        // Control, after those: the L7 port is filtered and reported.
        L7Lab.AssertDenied(await l7.RequestAsync("GET", L7Lab.Http, "/private"), "the L7 port");
        await l7.WaitL7FlowAsync(since, "DROPPED", "GET", L7Lab.Http, "/private");

        // Connections held open: the proxy holds a socket for the L7 one only.
        using var idleL7 = l7.StartIn(l7.Client, "/bin/sh", "-c", "sleep 30 | socat - TCP:$0:$1", l7.ServerIp, L7Lab.Http.ToString());
        using var idlePlain = l7.StartIn(l7.Client, "/bin/sh", "-c", "sleep 30 | socat - TCP:$0:$1", l7.ServerIp, L7Lab.HttpPlain.ToString());
        var clientSide = $"{l7.ServerIp}:{L7Lab.Http}";
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(5);
        List<string> sockets;
        while (!(sockets = await l7.ProxySocketsAsync()).Any(s => s.Contains($" {clientSide} {l7.ClientIp}:", StringComparison.Ordinal)) && DateTime.UtcNow < deadline)
            await Task.Delay(100);
        var listing = string.Join(Environment.NewLine, sockets);
        Assert.True(sockets.Any(s => s.Contains($" {clientSide} {l7.ClientIp}:", StringComparison.Ordinal)),
            $"control: the proxy should hold the client's connection to {clientSide} (its local address is the original destination); proxy sockets:{Environment.NewLine}{listing}");
        var foreign = sockets.Where(s => s.Split(' ').Skip(1).Any(a => a.EndsWith($":{L7Lab.Echo}") || a.EndsWith($":{L7Lab.HttpPlain}"))).ToList();
        Assert.True(foreign.Count == 0, $"the proxy holds sockets of L4-only ports {L7Lab.Echo}/{L7Lab.HttpPlain}:{Environment.NewLine}{string.Join(Environment.NewLine, foreign)}");
        await echo.AssertWorksAsync("while the proxy holds the L7 connection");

        // Flows: the L4-only ports were forwarded by the kernel, never redirected, never given an L7 record.
        await l7.Lab.WaitForFlowSinceAsync(since, f => Probes.Syn(f, l7.ClientIp, l7.ServerIp, L7Lab.HttpPlain) && f.Verdict == "FORWARDED", "FORWARDED SYN to the L4-only HTTP port");
        await l7.Lab.WaitForFlowSinceAsync(since, f => Probes.Syn(f, l7.ClientIp, l7.ServerIp, L7Lab.Echo) && f.Verdict == "FORWARDED", "FORWARDED SYN to the echo port");
        await l7.Lab.WaitForFlowSinceAsync(since, f => Probes.Syn(f, l7.ClientIp, l7.ServerIp, L7Lab.Http) && f.Verdict == "REDIRECTED", "control: REDIRECTED SYN to the L7 port");
        var flows = (await l7.Lab.FlowsAsync()).Where(f => f.Time >= since).ToList();
        var wrong = flows.Where(f => (OnPort(f, L7Lab.HttpPlain) || OnPort(f, L7Lab.Echo)) && (f.L7 is not null || f.Verdict is "REDIRECTED" or "DROPPED")).ToList();
        Assert.True(wrong.Count == 0, $"L4-only flows touched by L7:{Environment.NewLine}{string.Join(Environment.NewLine, wrong.Select(L7Lab.DescribeL7))}");
        var l7Ports = flows.Where(f => f.L7 is not null).Select(f => f.Destination.Port).Distinct().ToList();
        Assert.True(l7Ports is [L7Lab.Http], $"L7 records only for port {L7Lab.Http}, got ports {string.Join(", ", l7Ports)}");
    }

    [Fact]
    public async Task Visibility_annotation_logs_every_request_on_its_port_and_denies_nothing()
    {
        await using var l7 = await L7Lab.UpAsync(serverAnnotation: $"<Ingress/{L7Lab.Http}/TCP/HTTP>");
        await L7Lab.EventuallyAsync(() => l7.RequestAsync("GET", L7Lab.Http, "/warmup"), r => r.Code == "200", "requests on the visible port pass");
        var since = DateTimeOffset.UtcNow;

        var requests = new (string Method, string Path, string[] Extra, int Code)[]
        {
            ("GET", "/anything", [], 200),
            ("POST", "/submit", ["-d", "x=1"], 200),
            ("DELETE", "/private", [], 200),
            ("PATCH", "/x?q=1", [], 200),
            ("GET", "/missing", [], 404),
            ("GETX", "/custom", [], 200),
        };
        foreach (var (method, path, extra, code) in requests)
            L7Lab.AssertServed(await l7.RequestAsync(method, L7Lab.Http, path, extra), code.ToString(), code == 404 ? "not found" : $"ok {method} {path}", "visibility never denies");
        // Other ports of the same pod: not visible.
        L7Lab.AssertServed(await l7.RequestAsync("GET", L7Lab.HttpPlain, "/other-port"), "200", "ok GET /other-port", "port without visibility");
        var echo = await l7.Client.ConnectAsync(l7.ServerIp, L7Lab.Echo, TimeSpan.FromSeconds(2));
        Assert.True(echo.Ok, $"echo port: {echo}");
        // A last request on the visible port: once its record is in, the earlier ones are too.
        L7Lab.AssertServed(await l7.RequestAsync("GET", L7Lab.Http, "/fence"), "200", "ok GET /fence", "visibility");
        await l7.WaitL7FlowAsync(since, "FORWARDED", "GET", L7Lab.Http, "/fence");

        foreach (var (method, path, _, code) in requests)
            l7.AssertL7Flow(await l7.WaitL7FlowAsync(since, "FORWARDED", method, L7Lab.Http, path), "FORWARDED", method, L7Lab.Http, path, code, "INGRESS");
        var flows = (await l7.Lab.FlowsAsync()).Where(f => f.Time >= since).ToList();
        var l7Flows = flows.Where(f => f.L7 is not null).ToList();
        Assert.True(l7Flows.All(f => f.Verdict == "FORWARDED" && f.Destination.Port == L7Lab.Http),
            $"visibility only: every L7 flow FORWARDED and on port {L7Lab.Http}:{Environment.NewLine}{string.Join(Environment.NewLine, l7Flows.Select(L7Lab.DescribeL7))}");
        Assert.True(l7Flows.Count == requests.Length + 1, $"one L7 flow per request ({requests.Length + 1}), got {l7Flows.Count}:{Environment.NewLine}{string.Join(Environment.NewLine, l7Flows.Select(L7Lab.DescribeL7))}");
        Assert.DoesNotContain(flows, f => f.Verdict == "DROPPED");
        var seen = l7.AccessLines();
        foreach (var (method, path, _, _) in requests)
            Assert.Contains($"{l7.ClientIp} {L7Lab.Http} {method} {path} HTTP/1.1", seen);

        // Visibility does not replace L4 policy: with an ingress policy for the client only, the intruder is dropped
        // by the kernel (no L7 record), and the client's requests are still visible.
        await l7.Lab.ApplyPolicyAsync(L7Lab.ServerIngressPolicy("server-in", L7Lab.Http));
        await L7Lab.EventuallyAsync(() => l7.RequestAsync("GET", L7Lab.Http, "/with-policy/ready"), r => r.Code == "200", "client still allowed");
        var since2 = DateTimeOffset.UtcNow;
        L7Lab.AssertServed(await l7.RequestAsync("GET", L7Lab.Http, "/with-policy"), "200", "ok GET /with-policy", "client allowed by L4 policy");
        l7.AssertL7Flow(await l7.WaitL7FlowAsync(since2, "FORWARDED", "GET", L7Lab.Http, "/with-policy"), "FORWARDED", "GET", L7Lab.Http, "/with-policy", 200, "INGRESS");
        var intruder = await l7.CurlAsync(l7.Intruder, 2, l7.Url(L7Lab.Http, "/from-intruder"));
        Assert.False(intruder.Answered, $"intruder is not allowed by the server's L4 policy: {intruder}");
        var drop = await l7.Lab.WaitForFlowSinceAsync(since2, f => Probes.Syn(f, l7.IntruderIp, l7.ServerIp, L7Lab.Http) && f.Verdict == "DROPPED",
            "DROPPED SYN intruder -> server:8080");
        Assert.True(drop.DropReason == "policy denied" && drop.L7 is null, $"an L4 drop, not an L7 one: {L7Lab.DescribeL7(drop)} reason {drop.DropReason}");
        Assert.DoesNotContain(l7.AccessLines(), l => l.Contains("/from-intruder"));
    }
}
