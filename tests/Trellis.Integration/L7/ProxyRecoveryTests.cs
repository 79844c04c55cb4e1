using System.Collections.Concurrent;
using System.Diagnostics;
using Trellis.Integration.Infrastructure;
using Trellis.Integration.PolicyLanguage;
using Xunit.Abstractions;

namespace Trellis.Integration.L7;

/// <summary>The agent supervises the node's proxy: killed, it is back within 2 s; meanwhile flows that need L7 are
/// refused (never forwarded unchecked) and L4-only flows, old and new, are untouched.</summary>
[Collection(LabCollectionB.Name)]
[Trait("Requires", "root")]
public sealed class ProxyRecoveryTests(ITestOutputHelper output)
{
    [Fact]
    public async Task Killed_proxy_restarts_within_2s_L7_fails_closed_meanwhile_and_L4_is_untouched()
    {
        await using var l7 = await L7Lab.UpAsync();
        await l7.ApplyPublicGetOnlyAsync("client-out", L7Lab.Echo);
        L7Lab.AssertDenied(await l7.RequestAsync("GET", L7Lab.Http, "/private"), "before the kill");
        var echo = l7.Client.OpenEcho(l7.ServerIp, L7Lab.Echo);
        await echo.AssertWorksAsync("before the kill");
        var oldPid = l7.ProxyPid();
        Assert.True(oldPid != 0, $"no proxy running for node {l7.Lab.Node} (pid file {l7.ProxyPidFile})");

        // Requests in a loop, alternately allowed and denied by the rules, each on a new connection.
        var results = new ConcurrentQueue<(DateTimeOffset At, string Path, HttpResult R)>();
        using var stop = new CancellationTokenSource();
        var loop = Task.Run(async () =>
        {
            for (int i = 0; !stop.IsCancellationRequested; i++)
            {
                var path = i % 2 == 0 ? "/public/loop" : "/private";
                var at = DateTimeOffset.UtcNow;
                results.Enqueue((at, path, await l7.CurlAsync(null, 1, "--connect-timeout", "1", l7.Url(L7Lab.Http, path))));
            }
        });
        // The longest time the old echo connection went without an echo.
        var maxGap = TimeSpan.Zero;
        var monitor = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                var gap = DateTime.UtcNow - echo.LastEcho;
                if (gap > maxGap) maxGap = gap;
                await Task.Delay(20);
            }
        });
        await Task.Delay(700);

        var killedAt = DateTimeOffset.UtcNow;
        using (var p = Process.GetProcessById(oldPid)) p.Kill(); // SIGKILL
        // New connections right after the kill: to the L7 port (refused until a proxy listens again) and the L4 port.
        var l7Probe = l7.Client.ConnectAsync(l7.ServerIp, L7Lab.Http, TimeSpan.FromSeconds(0.5));
        var l4Probe = l7.Client.ConnectAsync(l7.ServerIp, L7Lab.Echo, TimeSpan.FromSeconds(2));
        var echoRightAfter = echo.AssertWorksAsync("right after the proxy was killed", TimeSpan.FromSeconds(1));
        var newPid = await l7.WaitProxyAsync(TimeSpan.FromSeconds(2), notPid: oldPid);
        var restartedIn = DateTimeOffset.UtcNow - killedAt;
        Assert.False(Processes.IsRunning(oldPid), $"the old proxy {oldPid} still runs");
        var l7ProbeResult = await l7Probe;
        var l4ProbeResult = await l4Probe;
        await echoRightAfter;

        // L7 works again, with the same rules.
        var back = await L7Lab.EventuallyAsync(() => l7.RequestAsync("GET", L7Lab.Http, "/public/after"), r => r.Code == "200",
            "allowed L7 request after the restart", TimeSpan.FromSeconds(3));
        L7Lab.AssertDenied(await l7.RequestAsync("GET", L7Lab.Http, "/private"), "after the restart the rules still apply");
        var recoveredAt = DateTimeOffset.UtcNow;
        await Task.Delay(700);
        stop.Cancel();
        await loop;
        await monitor;
        await echo.AssertWorksAsync("after the proxy came back");

        var all = results.ToList();
        output.WriteLine($"proxy {oldPid} killed; {newPid} running after {restartedIn.TotalMilliseconds:0} ms; allowed L7 request passed {back.TotalMilliseconds:0} ms later; " +
                         $"L7 connect right after the kill: {(l7ProbeResult.Ok ? "connected" : "refused")}; longest echo gap {maxGap.TotalMilliseconds:0} ms");
        output.WriteLine(string.Join(Environment.NewLine, all.Select(x => $"{(x.At - killedAt).TotalMilliseconds,7:0} ms {x.Path} {x.R.Code}")));

        Assert.True(restartedIn <= TimeSpan.FromSeconds(2), $"a new proxy should run within 2 s, took {restartedIn.TotalMilliseconds:0} ms");
        Assert.True(l4ProbeResult.Ok, $"a new L4-only connection right after the kill must connect: {l4ProbeResult}");
        Assert.False(echo.Exited, "the echo connection opened before the kill was closed");
        Assert.True(maxGap < TimeSpan.FromSeconds(1.5), $"the echo connection opened before the kill stalled for {maxGap.TotalMilliseconds:0} ms");

        // Fail closed: a denied path is never served, whatever the proxy's state; an allowed one is served or refused.
        var wrong = all.Where(x => x.Path == "/private" ? !(x.R.Code == "000" || (x.R.Code == "403" && x.R.Body.Trim() == L7Lab.Denied))
                                                        : !(x.R.Code == "000" || (x.R.Code == "200" && x.R.Body.StartsWith("ok GET /public/loop"))))
            .ToList();
        Assert.True(wrong.Count == 0, "answers other than the rules' or a refusal:" + Environment.NewLine +
                                      string.Join(Environment.NewLine, wrong.Select(x => $"{(x.At - killedAt).TotalMilliseconds:0} ms {x.Path}: {x.R}")));
        var before = all.Where(x => x.At < killedAt - TimeSpan.FromMilliseconds(100)).ToList();
        var after = all.Where(x => x.At >= recoveredAt).ToList();
        Assert.True(before.Count > 0 && before.All(x => x.R.Answered), $"before the kill every request is answered: {string.Join("; ", before.Select(x => $"{x.Path} {x.R}"))}");
        Assert.True(after.Count > 0 && after.All(x => x.R.Answered), $"after the recovery every request is answered: {string.Join("; ", after.Select(x => $"{x.Path} {x.R}"))}");
        Assert.DoesNotContain(l7.AccessLines(), l => l.Contains("/private"));

        // A new L7 connection refused while no proxy listened is a datapath drop with the L7 reason.
        var refused = all.Where(x => x.At >= killedAt && !x.R.Answered).ToList();
        if (!l7ProbeResult.Ok || refused.Count > 0)
            await l7.Lab.WaitForFlowAsync(f => f.Time >= killedAt && f.L7 is null && f.Verdict == "DROPPED" && f.DropReason == L7Lab.L7DropReason &&
                                               !f.IsReply && f.TcpFlags.Contains("SYN") && f.Source.Ip == l7.ClientIp &&
                                               f.Destination.Ip == l7.ServerIp && f.Destination.Port == L7Lab.Http,
                $"TC DROPPED '{L7Lab.L7DropReason}' SYN client -> server:{L7Lab.Http} while the proxy was down (probe: {l7ProbeResult}; {refused.Count} loop requests refused)");
        else
            output.WriteLine("the proxy was back before any new L7 connection was attempted: nothing to refuse");

        // L4: nothing on the echo port was dropped.
        var echoDrops = (await l7.Lab.FlowsAsync()).Where(f => f.Time >= killedAt && f.Verdict == "DROPPED" &&
                                                              (f.Destination.Port == L7Lab.Echo || f.Source.Port == L7Lab.Echo)).ToList();
        Assert.True(echoDrops.Count == 0, $"L4-only flows dropped:{Environment.NewLine}{string.Join(Environment.NewLine, echoDrops.Select(L7Lab.DescribeL7))}");
    }
}
