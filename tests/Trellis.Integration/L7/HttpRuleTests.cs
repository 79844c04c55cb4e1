using Trellis.Api;
using Trellis.Integration.Infrastructure;
using Xunit.Abstractions;

namespace Trellis.Integration.L7;

/// <summary>
/// CiliumNetworkPolicy <c>rules.http</c> enforced by the node's proxy on real traffic: curl in the client pod, nginx in
/// the server pod; egress rules of the client and ingress rules of the server; anchored regexes; a denial in the
/// middle of a keep-alive connection.
/// </summary>
[Collection(LabCollectionA.Name)]
[Trait("Requires", "root")]
public sealed class HttpRuleTests(ITestOutputHelper output)
{
    // The same HTTP rules, as the client's egress or as the server's ingress.
    private const string Rules = """
        - method: GET
          path: "/public/.*"
        - method: GET
          path: "/missing"
        - method: POST
          path: "/submit"
          headers: ["X-Token: secret"]
        - method: GET
          path: "/admin"
          headerMatches:
            - name: X-Role
              value: admin
        - method: PUT
          path: "/flag"
          headers: ["X-Flag"]
        """;

    private static string Policy(string direction) => direction == "EGRESS"
        ? L7Lab.ClientEgressPolicy("client-http", L7Lab.Http, Rules)
        : L7Lab.ServerIngressPolicy("server-http", L7Lab.Http, Rules);

    [Theory]
    [InlineData("EGRESS")]
    [InlineData("INGRESS")]
    public async Task Requests_are_allowed_or_denied_by_method_path_and_header(string direction)
    {
        await using var l7 = await L7Lab.UpAsync(test: $"{nameof(Requests_are_allowed_or_denied_by_method_path_and_header)}_{direction}");
        const int port = L7Lab.Http;

        // Without policy everything reaches nginx (so a 403 below can only come from the proxy).
        L7Lab.AssertServed(await l7.RequestAsync("GET", port, "/private"), "200", "ok GET /private", "no policy yet");

        // The policy call returns once the proxy has loaded the new rules (docs/l7-proxy.md): the very next request is
        // checked against them, neither refused for want of rules nor let through unchecked.
        var applied = DateTimeOffset.UtcNow;
        await l7.Lab.ApplyPolicyAsync(Policy(direction));
        output.WriteLine($"policy call took {(DateTimeOffset.UtcNow - applied).TotalMilliseconds:0} ms");
        var since = DateTimeOffset.UtcNow;
        L7Lab.AssertDenied(await l7.RequestAsync("GET", port, "/private/first"), "first request after the policy call, on a denied path");
        L7Lab.AssertServed(await l7.RequestAsync("GET", port, "/public/first"), "200", "ok GET /public/first", "first allowed request after the policy call");

        // path
        var pub = await l7.RequestAsync("GET", port, "/public/a");
        L7Lab.AssertServed(pub, "200", "ok GET /public/a", "GET /public/.* is allowed");
        L7Lab.AssertServed(await l7.RequestAsync("GET", port, "/missing"), "404", "not found", "allowed: the server's own 404 comes through");
        L7Lab.AssertDenied(await l7.RequestAsync("GET", port, "/private"), "no rule has path /private");
        // method
        L7Lab.AssertDenied(await l7.RequestAsync("POST", port, "/public/a"), "only GET on /public/.*");
        L7Lab.AssertDenied(await l7.RequestAsync("DELETE", port, "/missing"), "only GET on /missing");
        // headers: presence with value, exact value (headerMatches), presence only
        L7Lab.AssertDenied(await l7.RequestAsync("POST", port, "/submit"), "POST /submit needs X-Token: secret");
        L7Lab.AssertDenied(await l7.RequestAsync("POST", port, "/submit", "-H", "X-Token: other"), "X-Token has the wrong value");
        L7Lab.AssertServed(await l7.RequestAsync("POST", port, "/submit", "-H", "X-Token: secret", "-d", "x=1"), "200", "ok POST /submit", "X-Token: secret");
        L7Lab.AssertDenied(await l7.RequestAsync("GET", port, "/admin"), "GET /admin needs X-Role: admin");
        L7Lab.AssertDenied(await l7.RequestAsync("GET", port, "/admin", "-H", "X-Role: user"), "X-Role: user is not admin");
        L7Lab.AssertServed(await l7.RequestAsync("GET", port, "/admin", "-H", "X-Role: admin"), "200", "ok GET /admin", "X-Role: admin");
        L7Lab.AssertDenied(await l7.RequestAsync("PUT", port, "/flag"), "PUT /flag needs an X-Flag header");
        L7Lab.AssertServed(await l7.RequestAsync("PUT", port, "/flag", "-H", "X-Flag: anything"), "200", "ok PUT /flag", "X-Flag present");

        // The flows: one L7 record per request, denied ones DROPPED with the L7 reason, allowed ones with the server's code.
        var dir = direction;
        l7.AssertL7Flow(await l7.WaitL7FlowAsync(since, "FORWARDED", "GET", port, "/public/a"), "FORWARDED", "GET", port, "/public/a", 200, dir);
        l7.AssertL7Flow(await l7.WaitL7FlowAsync(since, "FORWARDED", "GET", port, "/missing"), "FORWARDED", "GET", port, "/missing", 404, dir);
        l7.AssertL7Flow(await l7.WaitL7FlowAsync(since, "DROPPED", "GET", port, "/private"), "DROPPED", "GET", port, "/private", 403, dir);
        l7.AssertL7Flow(await l7.WaitL7FlowAsync(since, "DROPPED", "POST", port, "/public/a"), "DROPPED", "POST", port, "/public/a", 403, dir);
        l7.AssertL7Flow(await l7.WaitL7FlowAsync(since, "FORWARDED", "POST", port, "/submit"), "FORWARDED", "POST", port, "/submit", 200, dir);
        l7.AssertL7Flow(await l7.WaitL7FlowAsync(since, "DROPPED", "GET", port, "/admin"), "DROPPED", "GET", port, "/admin", 403, dir);
        l7.AssertL7Flow(await l7.WaitL7FlowAsync(since, "FORWARDED", "PUT", port, "/flag"), "FORWARDED", "PUT", port, "/flag", 200, dir);
        var flows = (await l7.Lab.FlowsAsync()).Where(f => f.Time >= since && f.L7?.Http is not null).ToList();
        var forwarded = flows.Single(f => f.Verdict == "FORWARDED" && L7Lab.PathOf(f.L7!.Http!) == "/public/a");
        Assert.True(forwarded.L7!.LatencyNs > 0, $"a forwarded request has a latency: {L7Lab.DescribeL7(forwarded)} {forwarded.L7.LatencyNs} ns");
        Assert.True(flows.Count(f => f.Verdict == "DROPPED") == 9 && flows.Count(f => f.Verdict == "FORWARDED") == 6,
            $"15 requests since the rules applied: 9 denied, 6 forwarded; the agent has:{Environment.NewLine}{string.Join(Environment.NewLine, flows.Select(L7Lab.DescribeL7))}");
        // The redirected connections are reported by the datapath too.
        await l7.Lab.WaitForFlowAsync(f => f.Time >= since && f.L7 is null && f.Verdict == "REDIRECTED" && !f.IsReply &&
                                           f.Source.Ip == l7.ClientIp && f.Destination.Ip == l7.ServerIp && f.Destination.Port == port,
            "REDIRECTED TCP flow client -> server:8080");

        // nginx saw only the allowed requests, from the client's own address.
        var seen = l7.AccessLines().Where(l => l.Contains($" {port} ", StringComparison.Ordinal)).ToList();
        Assert.Contains($"{l7.ClientIp} {port} GET /public/a HTTP/1.1", seen);
        Assert.Contains($"{l7.ClientIp} {port} POST /submit HTTP/1.1", seen);
        Assert.Contains($"{l7.ClientIp} {port} GET /admin HTTP/1.1", seen);
        Assert.Contains($"{l7.ClientIp} {port} PUT /flag HTTP/1.1", seen);
        var leaked = seen.Where(l => l.EndsWith(" POST /public/a HTTP/1.1") || l.EndsWith(" DELETE /missing HTTP/1.1") ||
                                     l.Split(' ')[0] != l7.ClientIp).ToList();
        Assert.True(leaked.Count == 0, $"nginx got requests the proxy denied, or from another address than the client's:{Environment.NewLine}{string.Join(Environment.NewLine, leaked)}");
        Assert.Single(seen, l => l.EndsWith(" GET /private HTTP/1.1")); // only the one before the policy
        Assert.Single(seen, l => l.EndsWith(" GET /admin HTTP/1.1")); // only the one with X-Role: admin
        Assert.Single(seen, l => l.EndsWith(" POST /submit HTTP/1.1"));
        Assert.Single(seen, l => l.EndsWith(" PUT /flag HTTP/1.1"));

        // Another pod that no rule names: L4 policy decides (it applies only to the policy's side).
        if (direction == "INGRESS")
        {
            var r = await l7.CurlAsync(l7.Intruder, 2, l7.Url(port, "/public/a"));
            Assert.False(r.Answered, $"intruder is not allowed by the server's ingress policy at all: {r}");
        }
    }

    [Fact]
    public async Task Method_path_and_host_regexes_are_fully_anchored()
    {
        await using var l7 = await L7Lab.UpAsync();
        await l7.Lab.ApplyPolicyAsync($$"""
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata:
              name: anchors
              namespace: web
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
                        - port: "{{L7Lab.Http}}"
                          protocol: TCP
                      rules:
                        http:
                          - method: GET
                            path: "/public"
                    - ports:
                        - port: "{{L7Lab.HttpAnchored}}"
                          protocol: TCP
                      rules:
                        http:
                          - method: GET
                            path: "/public.*"
                    - ports:
                        - port: "{{L7Lab.HttpHost}}"
                          protocol: TCP
                      rules:
                        http:
                          - host: "svc\\.example\\.com"
            """);
        const int exact = L7Lab.Http, prefix = L7Lab.HttpAnchored, host = L7Lab.HttpHost;
        await L7Lab.EventuallyAsync(() => l7.RequestAsync("GET", exact, "/public"), r => r.Code == "200", "the proxy applies the new rules");
        var since = DateTimeOffset.UtcNow;

        // path "/public" is the whole path, not a substring or a prefix.
        L7Lab.AssertServed(await l7.RequestAsync("GET", exact, "/public"), "200", "ok GET /public", "exact path");
        L7Lab.AssertDenied(await l7.RequestAsync("GET", exact, "/public/x"), "\"/public\" must not match /public/x");
        L7Lab.AssertDenied(await l7.RequestAsync("GET", exact, "/x/public"), "\"/public\" must not match /x/public");
        L7Lab.AssertDenied(await l7.RequestAsync("GET", exact, "/publicity"), "\"/public\" must not match /publicity");
        L7Lab.AssertDenied(await l7.RequestAsync("GET", exact, "/public?x=1"), "the path regex sees the query too (Envoy's :path)");
        // method "GET" is the whole method.
        L7Lab.AssertDenied(await l7.RequestAsync("GETX", exact, "/public"), "\"GET\" must not match GETX");
        L7Lab.AssertDenied(await l7.RequestAsync("XGET", exact, "/public"), "\"GET\" must not match XGET");
        L7Lab.AssertDenied(await l7.RequestAsync("POST", exact, "/public"), "\"GET\" must not match POST");

        // "/public.*" is a prefix rule written as a regex; still anchored at the start.
        L7Lab.AssertServed(await l7.RequestAsync("GET", prefix, "/public/x"), "200", "ok GET /public/x", "\"/public.*\" matches /public/x");
        L7Lab.AssertServed(await l7.RequestAsync("GET", prefix, "/public"), "200", "ok GET /public", "\"/public.*\" matches /public");
        L7Lab.AssertServed(await l7.RequestAsync("GET", prefix, "/public?x=1"), "200", "ok GET /public?x=1", "\"/public.*\" matches /public?x=1");
        L7Lab.AssertDenied(await l7.RequestAsync("GET", prefix, "/x/public"), "\"/public.*\" must not match /x/public");

        // host: the whole Host header.
        L7Lab.AssertServed(await l7.RequestAsync("GET", host, "/h", "-H", "Host: svc.example.com"), "200", "ok GET /h", "host matches");
        L7Lab.AssertDenied(await l7.RequestAsync("GET", host, "/h", "-H", "Host: svc.example.com.evil"), "host must not match a longer name");
        L7Lab.AssertDenied(await l7.RequestAsync("GET", host, "/h", "-H", "Host: www.svc.example.com"), "host must not match a subdomain");
        L7Lab.AssertDenied(await l7.RequestAsync("GET", host, "/h", "-H", "Host: svcXexample.com"), "the dots are escaped");

        var getx = await l7.WaitL7FlowAsync(since, "DROPPED", "GETX", exact, "/public");
        l7.AssertL7Flow(getx, "DROPPED", "GETX", exact, "/public", 403, "EGRESS");
        var sub = await l7.WaitL7FlowAsync(since, "DROPPED", "GET", exact, "/public/x");
        l7.AssertL7Flow(sub, "DROPPED", "GET", exact, "/public/x", 403, "EGRESS");
        l7.AssertL7Flow(await l7.WaitL7FlowAsync(since, "FORWARDED", "GET", prefix, "/public/x"), "FORWARDED", "GET", prefix, "/public/x", 200, "EGRESS");
        var leaked = l7.AccessLines().Where(l => l.Contains("GETX") || l.Contains("XGET") || l.Contains($" {exact} GET /public/x") ||
                                                 l.Contains("/x/public") || l.Contains("/publicity")).ToList();
        Assert.True(leaked.Count == 0, $"nginx got requests the proxy denied:{Environment.NewLine}{string.Join(Environment.NewLine, leaked)}");
    }

    [Fact]
    public async Task Denied_request_in_the_middle_of_a_keep_alive_connection_does_not_break_it()
    {
        await using var l7 = await L7Lab.UpAsync();
        await l7.ApplyPublicGetOnlyAsync("keepalive");
        var since = DateTimeOffset.UtcNow;

        // One curl, three URLs: curl reuses the connection when the server keeps it open (nginx does, HTTP/1.1).
        var r = await l7.Client.ExecAsync(TimeSpan.FromSeconds(15), "curl", "-s", "-m", "10",
            "-w", "%{http_code} %{num_connects}\n", "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null",
            l7.Url(L7Lab.Http, "/public/one"), l7.Url(L7Lab.Http, "/private"), l7.Url(L7Lab.Http, "/public/two"));
        Assert.True(r.Ok, $"curl failed: {r}");
        var lines = r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines is ["200 1", "403 0", "200 0"],
            $"expected 200, 403, 200 over one connection (num_connects 1, 0, 0): {r.Stdout.Replace('\n', '|')}");

        // The three L7 flows belong to one client connection (same source port).
        var one = await l7.WaitL7FlowAsync(since, "FORWARDED", "GET", L7Lab.Http, "/public/one");
        var denied = await l7.WaitL7FlowAsync(since, "DROPPED", "GET", L7Lab.Http, "/private");
        var two = await l7.WaitL7FlowAsync(since, "FORWARDED", "GET", L7Lab.Http, "/public/two");
        l7.AssertL7Flow(denied, "DROPPED", "GET", L7Lab.Http, "/private", 403, "EGRESS");
        Assert.True(one.Source.Port == denied.Source.Port && denied.Source.Port == two.Source.Port,
            $"the three requests came on one connection: {L7Lab.DescribeL7(one)} / {L7Lab.DescribeL7(denied)} / {L7Lab.DescribeL7(two)}");
        var seen = l7.AccessLines();
        Assert.Contains($"{l7.ClientIp} {L7Lab.Http} GET /public/one HTTP/1.1", seen);
        Assert.Contains($"{l7.ClientIp} {L7Lab.Http} GET /public/two HTTP/1.1", seen);
        Assert.DoesNotContain(seen, l => l.Contains("/private"));

        // Pipelined: three requests written at once on one connection, answered in order (the client keeps its
        // side open; the last request asks the server to close).
        const string pipeline = "(printf 'GET /public/p1 HTTP/1.1\\r\\nHost: s\\r\\n\\r\\nGET /private/p2 HTTP/1.1\\r\\nHost: s\\r\\n\\r\\nGET /public/p3 HTTP/1.1\\r\\nHost: s\\r\\nConnection: close\\r\\n\\r\\n'; sleep 2) | socat -T5 - TCP:$0:$1";
        var p = await l7.Client.ExecAsync(TimeSpan.FromSeconds(15), "/bin/sh", "-c", pipeline, l7.ServerIp, L7Lab.Http.ToString());
        var statuses = p.Stdout.Split('\n').Where(l => l.StartsWith("HTTP/1.1 ", StringComparison.Ordinal)).Select(l => l.Trim()).ToList();
        Assert.True(statuses.Count == 3 && statuses[0].StartsWith("HTTP/1.1 200") && statuses[1].StartsWith("HTTP/1.1 403") && statuses[2].StartsWith("HTTP/1.1 200") &&
                    p.Stdout.Contains("ok GET /public/p1") && p.Stdout.Contains("ok GET /public/p3") && p.Stdout.Contains(L7Lab.Denied),
            $"pipelined 200, 403, 200 expected: {p}");
    }

    [Fact]
    public async Task Client_that_half_closes_after_its_request_still_gets_the_answer()
    {
        await using var l7 = await L7Lab.UpAsync();
        await l7.ApplyPublicGetOnlyAsync("half-close", L7Lab.HttpPlain);

        // The request, then shutdown(SHUT_WR) (socat does it at the end of its input), then read the answer for up to 3 s:
        // legal HTTP/1.1 client behaviour (nc -N, socat, some HTTP/1.0 clients).
        Task<ExecResult> HalfClose(int port, string path) => l7.Client.ExecAsync(TimeSpan.FromSeconds(15), "/bin/sh", "-c",
            "printf 'GET %s HTTP/1.1\\r\\nHost: s\\r\\nConnection: close\\r\\n\\r\\n' \"$2\" | socat -t3 -T5 - TCP:$0:$1", l7.ServerIp, port.ToString(), path);

        var direct = await HalfClose(L7Lab.HttpPlain, "/public/hc");
        Assert.True(direct.Stdout.StartsWith("HTTP/1.1 200") && direct.Stdout.Contains("ok GET /public/hc"), $"control, L4-only port: nginx answers a half-closed request: {direct}");
        var allowed = await HalfClose(L7Lab.Http, "/public/hc");
        var denied = await HalfClose(L7Lab.Http, "/private/hc");
        await Task.Delay(500); // the records, if any, are on their way to the agent
        var records = (await l7.Lab.FlowsAsync()).Where(f => f.L7?.Http?.Url.Contains("/hc") == true).Select(L7Lab.DescribeL7);
        Assert.True(allowed.Stdout.StartsWith("HTTP/1.1 200") && allowed.Stdout.Contains("ok GET /public/hc") &&
                    denied.Stdout.StartsWith("HTTP/1.1 403") && denied.Stdout.Contains(L7Lab.Denied),
            "through the proxy, a request whose client half-closed should be answered as without the half-close " +
            $"(allowed: 200 from nginx; denied: 403 {L7Lab.Denied}).{Environment.NewLine}allowed: {allowed}{Environment.NewLine}denied: {denied}" +
            $"{Environment.NewLine}L7 records:{Environment.NewLine}{string.Join(Environment.NewLine, records)}");
    }
}
