using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using Microsoft.AspNetCore.Http;

namespace Trellis.Proxy.Tests;

/// <summary>
/// Clients that send their request and then shut down their sending side (nc -N, socat, shutdown(SHUT_WR)) still get
/// their answers, and the proxy then closes the connection; a client that half-closes while idle is closed at once.
/// </summary>
public sealed class HalfCloseTests
{
    private static async Task<(string Response, TimeSpan Elapsed)> SendThenHalfCloseAsync(ProxyUnderTest proxy, string requests)
    {
        using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(proxy.EndPoint);
        var started = Stopwatch.StartNew();
        await socket.SendAsync(Encoding.ASCII.GetBytes(requests));
        socket.Shutdown(SocketShutdown.Send);
        var received = new MemoryStream();
        var buffer = new byte[4096];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        int n;
        while ((n = await socket.ReceiveAsync(buffer, SocketFlags.None, timeout.Token)) > 0) // until the proxy closes
            received.Write(buffer, 0, n);
        return (Encoding.ASCII.GetString(received.ToArray()), started.Elapsed);
    }

    [Fact]
    public async Task A_request_followed_by_a_half_close_is_answered_then_the_connection_closes()
    {
        await using var upstream = await Upstream.StartAsync(async context =>
        {
            await Task.Delay(200); // the FIN is long there when the answer is written
            await context.Response.WriteAsync("hello " + context.Request.Path);
        });
        await using var proxy = await ProxyUnderTest.StartAsync(upstream.EndPoint);

        var (allowed, elapsed) = await SendThenHalfCloseAsync(proxy, "GET /ok HTTP/1.1\r\nHost: s\r\n\r\n");
        Assert.StartsWith("HTTP/1.1 200", allowed, StringComparison.Ordinal);
        Assert.Contains("hello /ok", allowed, StringComparison.Ordinal);
        Assert.True(elapsed < TimeSpan.FromSeconds(10), $"closed after {elapsed}, not right after the answer");

        var (denied, _) = await SendThenHalfCloseAsync(proxy, "GET /admin HTTP/1.1\r\nHost: s\r\n\r\n");
        Assert.StartsWith("HTTP/1.1 403", denied, StringComparison.Ordinal);
        Assert.EndsWith("Access denied\r\n", denied, StringComparison.Ordinal);

        var records = await proxy.RecordsAsync(2);
        Assert.Equal([L7Verdict.Forwarded, L7Verdict.Dropped], records.Select(r => r.Verdict));
    }

    [Fact]
    public async Task Pipelined_requests_before_a_half_close_are_all_answered_in_order()
    {
        await using var upstream = await Upstream.StartAsync(context => context.Response.WriteAsync("<" + context.Request.Path + ">"));
        await using var proxy = await ProxyUnderTest.StartAsync(upstream.EndPoint);

        var (response, _) = await SendThenHalfCloseAsync(proxy,
            "GET /a HTTP/1.1\r\nHost: s\r\n\r\nGET /admin HTTP/1.1\r\nHost: s\r\n\r\nPOST /c HTTP/1.1\r\nHost: s\r\nContent-Length: 3\r\n\r\nabc");
        var statuses = response.Split("\r\n").Where(l => l.StartsWith("HTTP/1.1 ", StringComparison.Ordinal)).Select(l => l[9..12]);
        Assert.Equal(["200", "403", "200"], statuses);
        Assert.True(response.IndexOf("</a>", StringComparison.Ordinal) < response.IndexOf("</c>", StringComparison.Ordinal), response);
    }

    [Fact]
    public async Task A_half_close_while_idle_or_mid_header_closes_the_connection_without_waiting_for_timeouts()
    {
        await using var upstream = await Upstream.StartAsync(context => context.Response.WriteAsync("x"));
        await using var proxy = await ProxyUnderTest.StartAsync(upstream.EndPoint);

        var (idle, idleElapsed) = await SendThenHalfCloseAsync(proxy, "GET /a HTTP/1.1\r\nHost: s\r\n\r\n");
        Assert.StartsWith("HTTP/1.1 200", idle, StringComparison.Ordinal);
        Assert.True(idleElapsed < TimeSpan.FromSeconds(10), $"took {idleElapsed}");

        var (partial, partialElapsed) = await SendThenHalfCloseAsync(proxy, "GET /a HTTP/1.1\r\nHo");
        Assert.DoesNotContain("HTTP/1.1 200", partial, StringComparison.Ordinal); // an incomplete request is not forwarded
        Assert.True(partialElapsed < TimeSpan.FromSeconds(10), $"an incomplete request with FIN hung for {partialElapsed}");
        Assert.Equal(1, upstream.Requests);
    }
}
