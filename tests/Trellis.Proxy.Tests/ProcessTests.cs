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
    public async Task Trellis_proxy_process_forwards_and_denies_by_path_prefix()
    {
        await using var upstream = await Upstream.StartAsync(context => context.Response.WriteAsync("hi"));
        var dll = Path.Combine(AppContext.BaseDirectory, "trellis-proxy.dll");
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var arg in new[] { dll, "--listen", "127.0.0.1:0", "--to", upstream.EndPoint.ToString(), "--identity", "7", "--deny-path-prefix", "/admin" })
        {
            start.ArgumentList.Add(arg);
        }
        using var process = Process.Start(start)!;
        try
        {
            var banner = await process.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(60));
            Assert.NotNull(banner);
            Assert.StartsWith("listening on 127.0.0.1:", banner, StringComparison.Ordinal);
            var listen = IPEndPoint.Parse(banner["listening on ".Length..banner.IndexOf(',', StringComparison.Ordinal)]);

            var ok = await CurlAsync("--http1.1", new Uri($"http://{listen}/x"));
            var denied = await CurlAsync("--http1.1", new Uri($"http://{listen}/admin/x"));
            var line1 = await process.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(30));
            var line2 = await process.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(30));

            Assert.Equal((0, "hi|1.1 200"), ok);
            Assert.Equal((0, "Access denied\r\n|1.1 403"), denied);
            Assert.Contains("id=7 HTTP/1.1 GET http://" + listen + "/x 200", line1, StringComparison.Ordinal);
            Assert.EndsWith("FORWARDED", line1, StringComparison.Ordinal);
            Assert.Contains("/admin/x 403", line2, StringComparison.Ordinal);
            Assert.EndsWith("DROPPED (L7 policy denied)", line2, StringComparison.Ordinal);
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill();
            }
            await process.WaitForExitAsync();
        }
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
