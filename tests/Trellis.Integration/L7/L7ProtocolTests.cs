using System.Net;
using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using Trellis.Integration.Infrastructure;
using Xunit.Abstractions;

namespace Trellis.Integration.L7;

/// <summary>What goes through the proxy besides plain HTTP/1.1 requests: h2c with prior knowledge (curl and a .NET
/// HttpClient whose sockets live in the client pod), gRPC method rules (python grpcio client and server), and a large
/// streamed upload.</summary>
[Collection(LabCollectionB.Name)]
[Trait("Requires", "root")]
public sealed class L7ProtocolTests(ITestOutputHelper output)
{
    [Fact]
    public async Task H2c_with_prior_knowledge_is_allowed_and_denied_per_stream()
    {
        await using var l7 = await L7Lab.UpAsync();
        await l7.Lab.ApplyPolicyAsync(L7Lab.ClientEgressPolicy("h2c", L7Lab.H2c, """
            - method: GET
              path: "/h2/allowed.*"
            """));
        var h2 = (string path) => l7.CurlAsync(null, 5, "--http2-prior-knowledge", l7.Url(L7Lab.H2c, path));
        await L7Lab.EventuallyAsync(() => h2("/h2/allowed/ready"), r => r.Code == "200", "the proxy applies the new rules");
        var since = DateTimeOffset.UtcNow;

        // curl, one request per connection: the server answers over HTTP/2 (nginx shows the protocol it got).
        L7Lab.AssertServed(await h2("/h2/allowed"), "200", "h2 HTTP/2.0 GET /h2/allowed", "allowed h2c request reaches the h2c server over HTTP/2");
        L7Lab.AssertDenied(await h2("/h2/denied"), "h2c request on a path no rule allows");
        var allowed = await l7.WaitL7FlowAsync(since, "FORWARDED", "GET", L7Lab.H2c, "/h2/allowed");
        l7.AssertL7Flow(allowed, "FORWARDED", "GET", L7Lab.H2c, "/h2/allowed", 200, "EGRESS");
        var denied = await l7.WaitL7FlowAsync(since, "DROPPED", "GET", L7Lab.H2c, "/h2/denied");
        l7.AssertL7Flow(denied, "DROPPED", "GET", L7Lab.H2c, "/h2/denied", 403, "EGRESS");
        Assert.True(allowed.L7!.Http!.Protocol == "HTTP/2" && denied.L7!.Http!.Protocol == "HTTP/2",
            $"the L7 records name HTTP/2: {L7Lab.DescribeL7(allowed)} / {L7Lab.DescribeL7(denied)}");

        // A .NET HttpClient in the client pod: many streams on one h2c connection, a denied one among them.
        var connects = new StrongBox<int>();
        using var http = L7Lab.HttpClientIn(l7.Client, HttpVersion.Version20, connects);
        async Task<(HttpStatusCode Code, Version Version, string Body)> Get(string path)
        {
            using var resp = await http.GetAsync(l7.Url(L7Lab.H2c, path));
            return (resp.StatusCode, resp.Version, await resp.Content.ReadAsStringAsync());
        }
        var first = await Get("/h2/allowed/net/1");
        Assert.True(first is { Code: HttpStatusCode.OK, Body: "h2 HTTP/2.0 GET /h2/allowed/net/1\n" } && first.Version == HttpVersion.Version20, $"allowed: {first}");
        var no = await Get("/h2/denied/net");
        Assert.True(no.Code == HttpStatusCode.Forbidden && no.Body.Trim() == L7Lab.Denied && no.Version == HttpVersion.Version20, $"denied: {no}");
        var again = await Get("/h2/allowed/net/2");
        Assert.True(again is { Code: HttpStatusCode.OK, Body: "h2 HTTP/2.0 GET /h2/allowed/net/2\n" }, $"allowed after a denied stream on the same connection: {again}");
        // Concurrent streams, allowed and denied interleaved.
        var paths = Enumerable.Range(0, 20).Select(i => i % 2 == 0 ? $"/h2/allowed/c{i}" : $"/h2/other/c{i}").ToList();
        var results = await Task.WhenAll(paths.Select(Get));
        for (int i = 0; i < paths.Count; i++)
        {
            var want = i % 2 == 0 ? HttpStatusCode.OK : HttpStatusCode.Forbidden;
            var body = i % 2 == 0 ? $"h2 HTTP/2.0 GET {paths[i]}" : L7Lab.Denied;
            Assert.True(results[i].Code == want && results[i].Body.Trim() == body, $"{paths[i]}: expected {want} '{body.Trim()}', got {results[i]}");
        }
        Assert.True(connects.Value == 1, $"all 23 requests should share one h2c connection, the client opened {connects.Value}");
        l7.AssertL7Flow(await l7.WaitL7FlowAsync(since, "DROPPED", "GET", L7Lab.H2c, "/h2/other/c19"), "DROPPED", "GET", L7Lab.H2c, "/h2/other/c19", 403, "EGRESS");
        l7.AssertL7Flow(await l7.WaitL7FlowAsync(since, "FORWARDED", "GET", L7Lab.H2c, "/h2/allowed/c18"), "FORWARDED", "GET", L7Lab.H2c, "/h2/allowed/c18", 200, "EGRESS");

        var seen = l7.AccessLines().Where(l => l.Contains($" {L7Lab.H2c} ", StringComparison.Ordinal)).ToList();
        Assert.Contains($"{l7.ClientIp} {L7Lab.H2c} GET /h2/allowed/c0 HTTP/2.0", seen);
        Assert.DoesNotContain(seen, l => l.Contains("/h2/denied") || l.Contains("/h2/other"));
    }

    [Fact]
    public async Task Grpc_methods_are_allowed_and_denied_by_path()
    {
        await using var l7 = await L7Lab.UpAsync(grpc: true);
        var target = $"{l7.ServerIp}:{L7Lab.Grpc}";
        string Diagnostics() => $"{Environment.NewLine}server log:{Environment.NewLine}{L7Lab.Tail(l7.ServerLog)}{Environment.NewLine}proxy log:{Environment.NewLine}{L7Lab.Tail(l7.ProxyLog)}";
        var call = (string method) => l7.Client.ExecAsync(TimeSpan.FromSeconds(20), "/usr/bin/python3", Path.Combine(l7.Assets, "grpc_client.py"), target, method);

        // Without policy both methods answer (so a failure below comes from the rule).
        foreach (var m in new[] { "SayHello", "Other" })
        {
            var r = await call($"/pkg.Greeter/{m}");
            Assert.True(r.Ok && r.Stdout.Trim() == $"OK {m} trellis", $"{m} without policy: {r}{Diagnostics()}");
        }

        await l7.Lab.ApplyPolicyAsync(L7Lab.ServerIngressPolicy("greeter", L7Lab.Grpc, """
            - method: POST
              path: "/pkg.Greeter/SayHello"
            """));
        var waited = DateTime.UtcNow;
        ExecResult hello;
        do
        {
            hello = await call("/pkg.Greeter/SayHello");
        } while (!hello.Ok && DateTime.UtcNow - waited < TimeSpan.FromSeconds(5));
        var since = DateTimeOffset.UtcNow;
        var serverLogBefore = File.ReadAllLines(l7.ServerLog).Length;

        hello = await call("/pkg.Greeter/SayHello");
        Assert.True(hello.Ok && hello.Stdout.Trim() == "OK SayHello trellis", $"SayHello is allowed: {hello}{Diagnostics()}");
        var other = await call("/pkg.Greeter/Other");
        Assert.False(other.Ok, $"Other is not allowed: {other}{Diagnostics()}");
        // The proxy answers 403; gRPC maps HTTP 403 to PERMISSION_DENIED.
        Assert.True(other.ExitCode == 3 && other.Stdout.StartsWith("ERR PERMISSION_DENIED", StringComparison.Ordinal),
            $"the denied call should end with PERMISSION_DENIED (HTTP 403): {other}{Diagnostics()}");

        var ok = await l7.WaitL7FlowAsync(since, "FORWARDED", "POST", L7Lab.Grpc, "/pkg.Greeter/SayHello");
        l7.AssertL7Flow(ok, "FORWARDED", "POST", L7Lab.Grpc, "/pkg.Greeter/SayHello", 200, "INGRESS");
        var no = await l7.WaitL7FlowAsync(since, "DROPPED", "POST", L7Lab.Grpc, "/pkg.Greeter/Other");
        l7.AssertL7Flow(no, "DROPPED", "POST", L7Lab.Grpc, "/pkg.Greeter/Other", 403, "INGRESS");
        Assert.True(no.L7!.Http!.Protocol == "HTTP/2", $"gRPC is HTTP/2: {L7Lab.DescribeL7(no)}");

        // The server saw SayHello from the client's own address, and never Other after the rule.
        var calls = File.ReadAllLines(l7.ServerLog).Skip(serverLogBefore).Where(l => l.StartsWith("call ", StringComparison.Ordinal)).ToList();
        Assert.True(calls.Any(l => l.StartsWith($"call SayHello from ipv4:{l7.ClientIp}:", StringComparison.Ordinal)) &&
                    !calls.Any(l => l.StartsWith("call Other", StringComparison.Ordinal)),
            $"the server should see SayHello from {l7.ClientIp} and no Other after the rule; it logged:{Environment.NewLine}{string.Join(Environment.NewLine, calls)}");
    }

    [Fact]
    public async Task Large_upload_streams_through_the_proxy_intact()
    {
        await using var l7 = await L7Lab.UpAsync(upload: true);
        const int size = 50 << 20;
        var file = Path.Combine(l7.Assets, "upload.bin");
        var data = RandomNumberGenerator.GetBytes(size);
        await File.WriteAllBytesAsync(file, data);
        var sha = Convert.ToHexStringLower(SHA256.HashData(data));
        data = null;

        await l7.Lab.ApplyPolicyAsync(L7Lab.ClientEgressPolicy("upload", L7Lab.Upload, """
            - method: POST
              path: "/upload"
            - method: PUT
              path: "/upload"
            """));
        await L7Lab.EventuallyAsync(() => l7.CurlAsync(null, 5, "-d", "x", l7.Url(L7Lab.Upload, "/upload")), r => r.Code == "200", "the proxy applies the new rules");
        var since = DateTimeOffset.UtcNow;

        // Content-Length (curl also sends Expect: 100-continue for a body this size) ...
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var sized = await l7.CurlAsync(null, 25, "--data-binary", $"@{file}", "-H", "Content-Type: application/octet-stream", l7.Url(L7Lab.Upload, "/upload"));
        output.WriteLine($"50 MiB with Content-Length: {sw.Elapsed.TotalSeconds:0.00} s: {sized}");
        Assert.True(sized.Code == "200" && sized.Body.Trim() == $"bytes={size} sha256={sha}", $"the server should get all {size} bytes (sha256 {sha}): {sized}");
        // ... and chunked (no length known up front).
        sw.Restart();
        var chunked = await l7.CurlAsync(null, 25, "-X", "PUT", "-T", file, "-H", "Transfer-Encoding: chunked", l7.Url(L7Lab.Upload, "/upload"));
        output.WriteLine($"50 MiB chunked: {sw.Elapsed.TotalSeconds:0.00} s: {chunked}");
        Assert.True(chunked.Code == "200" && chunked.Body.Trim() == $"bytes={size} sha256={sha}", $"chunked upload, all {size} bytes (sha256 {sha}): {chunked}");

        // A denied upload is refused without reaching the server.
        var denied = await l7.CurlAsync(null, 25, "--data-binary", $"@{file}", l7.Url(L7Lab.Upload, "/elsewhere"));
        L7Lab.AssertDenied(denied, "POST /elsewhere is not allowed");

        l7.AssertL7Flow(await l7.WaitL7FlowAsync(since, "FORWARDED", "POST", L7Lab.Upload, "/upload"), "FORWARDED", "POST", L7Lab.Upload, "/upload", 200, "EGRESS");
        l7.AssertL7Flow(await l7.WaitL7FlowAsync(since, "FORWARDED", "PUT", L7Lab.Upload, "/upload"), "FORWARDED", "PUT", L7Lab.Upload, "/upload", 200, "EGRESS");
        l7.AssertL7Flow(await l7.WaitL7FlowAsync(since, "DROPPED", "POST", L7Lab.Upload, "/elsewhere"), "DROPPED", "POST", L7Lab.Upload, "/elsewhere", 403, "EGRESS");
        var log = File.ReadAllLines(l7.ServerLog);
        Assert.Contains($"{l7.ClientIp} POST /upload bytes={size} sha256={sha}", log);
        Assert.Contains($"{l7.ClientIp} PUT /upload bytes={size} sha256={sha}", log);
        Assert.DoesNotContain(log, l => l.Contains("/elsewhere"));
    }
}
