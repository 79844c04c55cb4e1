using System.Diagnostics;
using System.Net;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;

namespace Trellis.Proxy.Tests;

/// <summary>Other clients than .NET's (curl: HTTP/1.1 and h2c prior knowledge) and the proxy as a process.</summary>
public sealed class ProcessTests
{
    /// <remarks>The proxy speaks to the upstream what the client spoke (it was talking to that upstream), so an h2c client needs an h2c upstream.</remarks>
    [Theory]
    [InlineData("--http1.1", HttpProtocols.Http1, "HTTP/1.1", "1.1")]
    [InlineData("--http2-prior-knowledge", HttpProtocols.Http2, "HTTP/2", "2")]
    public async Task Curl_is_forwarded_and_denied_over_http1_and_h2c(
        string curlProtocol, HttpProtocols upstreamProtocols, string upstreamSees, string clientSees)
    {
        await using var upstream = await Upstream.StartAsync(
            context => context.Response.WriteAsync("via " + context.Request.Protocol), upstreamProtocols);
        await using var proxy = await ProxyUnderTest.StartAsync(upstream.EndPoint);

        var allowed = await CurlAsync(curlProtocol, proxy.Url("/ok"));
        var denied = await CurlAsync(curlProtocol, proxy.Url("/admin"));

        Assert.Equal((0, $"via {upstreamSees}|{clientSees} 200"), allowed);
        Assert.Equal((0, $"Access denied\r\n|{clientSees} 403"), denied);
        Assert.Equal(1, upstream.Requests);
    }

    [Fact]
    public async Task Trellis_proxy_process_refuses_bad_arguments_and_a_missing_datapath_with_clear_errors()
    {
        var bad = await RunProxyAsync("--listen", "nonsense");
        Assert.Equal(2, bad.ExitCode);
        Assert.Contains("bad argument '--listen' 'nonsense'", bad.Stderr, StringComparison.Ordinal);

        var missing = await RunProxyAsync("--node", "x");
        Assert.Equal(2, missing.ExitCode);
        Assert.Contains("--policy-file, --records-socket and --pin-root are required", missing.Stderr, StringComparison.Ordinal);

        var dir = Directory.CreateTempSubdirectory("trellis-proxy-test-");
        try
        {
            var noMaps = await RunProxyAsync("--node", "x", "--listen", "127.0.0.1:0", "--policy-file", Path.Combine(dir.FullName, "p.json"),
                "--records-socket", Path.Combine(dir.FullName, "r.sock"), "--pin-root", Path.Combine(dir.FullName, "no-such-pins"));
            Assert.Equal(1, noMaps.ExitCode);
            Assert.Contains("no-such-pins/trellis_ipcache", noMaps.Stderr, StringComparison.Ordinal);

            var help = await RunProxyAsync("--help");
            Assert.Equal(0, help.ExitCode);
            Assert.Contains("example: trellis-proxy", help.Stdout, StringComparison.Ordinal);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    private static async Task<(int ExitCode, string Stdout, string Stderr)> RunProxyAsync(params string[] args)
    {
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "trellis-proxy.dll"));
        foreach (var arg in args)
            start.ArgumentList.Add(arg);
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
        return (process.ExitCode, await stdout, await stderr);
    }

    [Fact]
    public void Static_resolver_prefers_the_listener_port_mapping_over_the_default()
    {
        var a = new OriginalDestination(IPEndPoint.Parse("10.200.0.3:8080"), 1001);
        var b = new OriginalDestination(IPEndPoint.Parse("10.200.0.4:5432"), 1002);
        var resolver = new StaticOriginalDestinationResolver { Default = a };
        resolver.Map(15002, b);
        var client = IPEndPoint.Parse("10.200.0.2:40000");

        Assert.True(resolver.TryResolve(IPEndPoint.Parse("127.0.0.1:15002"), client, out var mapped));
        Assert.Same(b, mapped);
        Assert.True(resolver.TryResolve(IPEndPoint.Parse("127.0.0.1:15001"), client, out var fallback));
        Assert.Same(a, fallback);
        resolver.Default = null;
        Assert.False(resolver.TryResolve(IPEndPoint.Parse("127.0.0.1:15001"), client, out _));
    }

    /// <returns>curl's exit code and "BODY|HTTP_VERSION STATUS".</returns>
    private static async Task<(int ExitCode, string Output)> CurlAsync(string protocol, Uri url)
    {
        var start = new ProcessStartInfo("curl")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var arg in new[] { "-sS", "--noproxy", "*", protocol, "-w", "|%{http_version} %{http_code}", url.ToString() })
        {
            start.ArgumentList.Add(arg);
        }
        Process process;
        try
        {
            process = Process.Start(start)!;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException("curl is not installed; install it with `apt-get install curl` (scripts/install-deps.sh does).", e);
        }
        using (process)
        {
            var output = process.StandardOutput.ReadToEndAsync();
            var error = process.StandardError.ReadToEndAsync();
            await process.WaitForExitAsync();
            Assert.True(process.ExitCode == 0, await error);
            return (process.ExitCode, await output);
        }
    }
}
