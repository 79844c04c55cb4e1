using System.Net;
using System.Net.Sockets;
using System.Net.WebSockets;
using System.Text;
using Grpc.Core;
using Grpc.Net.Client;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;

namespace Trellis.Proxy.Tests;

public sealed class ForwardingTests
{
    private static HttpClient Client(SocketsHttpHandler? handler = null) =>
        new(handler ?? new SocketsHttpHandler { UseProxy = false }) { Timeout = TimeSpan.FromSeconds(60) };

    [Fact]
    public async Task Allowed_get_is_forwarded_with_status_body_headers_host_and_query()
    {
        await using var upstream = await Upstream.StartAsync(async context =>
        {
            context.Response.StatusCode = StatusCodes.Status201Created;
            context.Response.Headers["X-Upstream"] = "yes";
            await context.Response.WriteAsync(
                $"{context.Request.Method} {context.Request.Path}{context.Request.QueryString} host={context.Request.Host} x={context.Request.Headers["X-Client"]}");
        });
        await using var proxy = await ProxyUnderTest.StartAsync(upstream.EndPoint);
        using var client = Client();

        using var request = new HttpRequestMessage(HttpMethod.Get, proxy.Url("/api/items?id=7&q=a%20b"));
        request.Headers.Host = "shop.example:8080";
        request.Headers.Add("X-Client", "c1");
        using var response = await client.SendAsync(request);

        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        Assert.Equal("yes", Assert.Single(response.Headers.GetValues("X-Upstream")));
        Assert.Equal("GET /api/items?id=7&q=a%20b host=shop.example:8080 x=c1", await response.Content.ReadAsStringAsync());

        var record = Assert.Single(await proxy.RecordsAsync(1));
        Assert.Equal(L7Verdict.Forwarded, record.Verdict);
        Assert.Null(record.Reason);
        Assert.Equal(201, record.StatusCode);
        Assert.Equal("GET", record.Method);
        Assert.Equal("http://shop.example:8080/api/items?id=7&q=a%20b", record.Url);
        Assert.Equal("HTTP/1.1", record.Protocol);
        Assert.Equal(ProxyUnderTest.ClientIdentity, record.ClientIdentity);
        Assert.Equal(upstream.EndPoint, record.Destination);
        Assert.Equal(IPAddress.Loopback, record.Source.Address);
        Assert.True(record.Latency >= TimeSpan.Zero);
    }

    [Fact]
    public async Task Policy_sees_identity_destination_method_path_query_host_and_headers()
    {
        await using var upstream = await Upstream.StartAsync(context => context.Response.WriteAsync("ok"));
        L7Request? seen = null;
        string? header = null;
        var policy = new DelegatePolicy(r =>
        {
            seen = r;
            header = r.Headers["X-Team"];
            return Decision.Allow;
        });
        await using var proxy = await ProxyUnderTest.StartAsync(upstream.EndPoint, policy);
        using var client = Client();

        using var request = new HttpRequestMessage(HttpMethod.Put, proxy.Url("/v1/cart?x=1")) { Content = new StringContent("b") };
        request.Headers.Host = "cart.shop";
        request.Headers.Add("X-Team", "blue");
        using var response = await client.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var r = Assert.NotNull(seen);
        Assert.Equal(ProxyUnderTest.ClientIdentity, r.ClientIdentity);
        Assert.Equal(upstream.EndPoint, r.Destination);
        Assert.Equal("PUT", r.Method);
        Assert.Equal("/v1/cart", r.Path);
        Assert.Equal("?x=1", r.Query);
        Assert.Equal("cart.shop", r.Host);
        Assert.Equal("blue", header);
    }

    [Fact]
    public async Task Denied_request_gets_403_access_denied_and_the_upstream_sees_nothing()
    {
        await using var upstream = await Upstream.StartAsync(context => context.Response.WriteAsync("secret"));
        await using var proxy = await ProxyUnderTest.StartAsync(upstream.EndPoint);
        using var client = Client();

        using var response = await client.PostAsync(proxy.Url("/admin/users"), new StringContent("{}"));

        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        Assert.Equal("Access denied\r\n", await response.Content.ReadAsStringAsync());
        Assert.Equal(0, upstream.Requests);
        Assert.Equal(0, upstream.Connections);

        var record = Assert.Single(await proxy.RecordsAsync(1));
        Assert.Equal(L7Verdict.Dropped, record.Verdict);
        Assert.Equal("L7 policy denied", record.Reason);
        Assert.Equal(403, record.StatusCode);
        Assert.Equal("POST", record.Method);
        Assert.EndsWith("/admin/users", record.Url, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Keep_alive_connection_checks_each_request_on_its_own()
    {
        await using var upstream = await Upstream.StartAsync(context => context.Response.WriteAsync("page " + context.Request.Path));
        await using var proxy = await ProxyUnderTest.StartAsync(upstream.EndPoint);
        var clientConnections = 0;
        using var client = Client(new SocketsHttpHandler
        {
            UseProxy = false,
            MaxConnectionsPerServer = 1,
            ConnectCallback = async (context, token) =>
            {
                Interlocked.Increment(ref clientConnections);
                var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                try
                {
                    await socket.ConnectAsync(context.DnsEndPoint, token);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            },
        });

        using var first = await client.GetAsync(proxy.Url("/a"));
        using var denied = await client.GetAsync(proxy.Url("/admin"));
        using var second = await client.GetAsync(proxy.Url("/b"));

        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        Assert.Equal("page /a", await first.Content.ReadAsStringAsync());
        Assert.Equal(HttpStatusCode.Forbidden, denied.StatusCode);
        Assert.Equal("Access denied\r\n", await denied.Content.ReadAsStringAsync());
        Assert.Equal(HttpStatusCode.OK, second.StatusCode);
        Assert.Equal("page /b", await second.Content.ReadAsStringAsync());
        Assert.Equal(1, Volatile.Read(ref clientConnections));
        Assert.Equal(2, upstream.Requests);
        Assert.Equal(1, upstream.Connections); // the proxy reuses its upstream connection too

        var records = await proxy.RecordsAsync(3);
        Assert.Equal([L7Verdict.Forwarded, L7Verdict.Dropped, L7Verdict.Forwarded], records.Select(r => r.Verdict));
        Assert.Single(records.Select(r => r.Source).Distinct());
    }

    [Fact]
    public async Task Pipelined_requests_on_a_raw_connection_are_answered_in_order()
    {
        await using var upstream = await Upstream.StartAsync(context => context.Response.WriteAsync("page " + context.Request.Path));
        await using var proxy = await ProxyUnderTest.StartAsync(upstream.EndPoint);
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(proxy.EndPoint);
        var stream = tcp.GetStream();

        // Three requests in one write: the proxy must answer each, in order, on this one connection.
        var requests = "GET /a HTTP/1.1\r\nHost: s\r\n\r\nGET /admin HTTP/1.1\r\nHost: s\r\n\r\nGET /b HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n";
        await stream.WriteAsync(Encoding.ASCII.GetBytes(requests));
        using var reader = new StreamReader(stream, Encoding.ASCII);
        var all = await reader.ReadToEndAsync();

        var a = all.IndexOf("page /a", StringComparison.Ordinal);
        var denied = all.IndexOf("HTTP/1.1 403 Forbidden", StringComparison.Ordinal);
        var deniedBody = all.IndexOf("Access denied\r\n", StringComparison.Ordinal);
        var b = all.IndexOf("page /b", StringComparison.Ordinal);
        Assert.True(all.StartsWith("HTTP/1.1 200 OK", StringComparison.Ordinal), all);
        Assert.True(a > 0 && denied > a && deniedBody > denied && b > deniedBody, all);
        Assert.Equal(2, upstream.Requests);
    }

    [Fact]
    public async Task Large_upload_is_streamed_to_the_upstream_before_the_client_finishes()
    {
        const int chunk = 1 << 20;
        const long total = 50L * chunk;
        var upstreamReceiving = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var upstream = await Upstream.StartAsync(async context =>
        {
            var buffer = new byte[64 * 1024];
            long received = 0;
            int n;
            while ((n = await context.Request.Body.ReadAsync(buffer)) > 0)
            {
                received += n;
                upstreamReceiving.TrySetResult();
            }
            await context.Response.WriteAsync(received.ToString(System.Globalization.CultureInfo.InvariantCulture));
        });
        await using var proxy = await ProxyUnderTest.StartAsync(upstream.EndPoint);
        using var client = Client();

        using var content = new GatedContent(chunk, total, upstreamReceiving.Task);
        using var response = await client.PostAsync(proxy.Url("/upload"), content);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(total.ToString(System.Globalization.CultureInfo.InvariantCulture), await response.Content.ReadAsStringAsync());
        Assert.True(content.WaitedForUpstream);
    }

    [Fact]
    public async Task Large_download_is_streamed_to_the_client()
    {
        const int chunk = 1 << 20;
        const int chunks = 50;
        await using var upstream = await Upstream.StartAsync(async context =>
        {
            var data = new byte[chunk];
            for (var i = 0; i < chunks; i++)
            {
                await context.Response.Body.WriteAsync(data);
            }
        });
        await using var proxy = await ProxyUnderTest.StartAsync(upstream.EndPoint);
        using var client = Client();

        using var response = await client.GetAsync(proxy.Url("/download"), HttpCompletionOption.ResponseHeadersRead);
        await using var body = await response.Content.ReadAsStreamAsync();
        var buffer = new byte[64 * 1024];
        long received = 0;
        int n;
        while ((n = await body.ReadAsync(buffer)) > 0)
        {
            received += n;
        }

        Assert.Equal((long)chunk * chunks, received);
    }

    [Fact]
    public async Task Http2_cleartext_prior_knowledge_works_on_the_same_listener()
    {
        await using var upstream = await Upstream.StartAsync(
            context => context.Response.WriteAsync($"{context.Request.Protocol} {context.Request.Path}"), HttpProtocols.Http2);
        await using var proxy = await ProxyUnderTest.StartAsync(upstream.EndPoint);
        using var client = Client();

        using var allowed = new HttpRequestMessage(HttpMethod.Get, proxy.Url("/h2"))
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };
        using var response = await client.SendAsync(allowed);
        using var denied = new HttpRequestMessage(HttpMethod.Get, proxy.Url("/admin"))
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };
        using var deniedResponse = await client.SendAsync(denied);

        Assert.Equal(HttpVersion.Version20, response.Version);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("HTTP/2 /h2", await response.Content.ReadAsStringAsync());
        Assert.Equal(HttpStatusCode.Forbidden, deniedResponse.StatusCode);
        Assert.Equal("Access denied\r\n", await deniedResponse.Content.ReadAsStringAsync());
        Assert.Equal(1, upstream.Requests);

        var records = await proxy.RecordsAsync(2);
        Assert.All(records, r => Assert.Equal("HTTP/2", r.Protocol));
        Assert.Contains(records, r => r.Verdict == L7Verdict.Forwarded && r.Url.EndsWith("/h2", StringComparison.Ordinal));
        Assert.Contains(records, r => r.Verdict == L7Verdict.Dropped && r.Url.StartsWith("http://", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Grpc_unary_call_passes_through_with_trailers()
    {
        // A minimal gRPC server by hand (length-prefixed messages, grpc-status in trailers): no codegen needed.
        await using var upstream = await Upstream.StartAsync(async context =>
        {
            var payload = new MemoryStream();
            await context.Request.Body.CopyToAsync(payload);
            var name = Encoding.UTF8.GetString(payload.ToArray(), 5, (int)payload.Length - 5);
            var reply = Encoding.UTF8.GetBytes("hello " + name);
            context.Response.ContentType = "application/grpc";
            var frame = new byte[5 + reply.Length];
            frame[4] = (byte)reply.Length;
            reply.CopyTo(frame, 5);
            await context.Response.Body.WriteAsync(frame);
            context.Response.AppendTrailer("grpc-status", "0");
            context.Response.AppendTrailer("x-served-by", "upstream");
        }, HttpProtocols.Http2);
        await using var proxy = await ProxyUnderTest.StartAsync(upstream.EndPoint);
        using var channel = GrpcChannel.ForAddress(proxy.Url("/"), new GrpcChannelOptions
        {
            HttpHandler = new SocketsHttpHandler { UseProxy = false },
        });
        var marshaller = Marshallers.Create(s => Encoding.UTF8.GetBytes(s), b => Encoding.UTF8.GetString(b));
        var method = new Method<string, string>(MethodType.Unary, "trellis.test.Greeter", "SayHello", marshaller, marshaller);

        using var call = channel.CreateCallInvoker().AsyncUnaryCall(method, null, new CallOptions(), "mesh");
        var reply = await call.ResponseAsync;

        Assert.Equal("hello mesh", reply);
        Assert.Equal(StatusCode.OK, call.GetStatus().StatusCode);
        Assert.Equal("upstream", call.GetTrailers().GetValue("x-served-by"));
        var record = Assert.Single(await proxy.RecordsAsync(1));
        Assert.Equal("POST", record.Method);
        Assert.EndsWith("/trellis.test.Greeter/SayHello", record.Url, StringComparison.Ordinal);
        Assert.Equal("HTTP/2", record.Protocol);
        Assert.Equal(L7Verdict.Forwarded, record.Verdict);
    }

    [Fact]
    public async Task WebSocket_upgrade_passes_through_once_allowed()
    {
        await using var upstream = await Upstream.StartAsync(async context =>
        {
            using var socket = await context.WebSockets.AcceptWebSocketAsync();
            var buffer = new byte[1024];
            var message = await socket.ReceiveAsync(buffer, CancellationToken.None);
            await socket.SendAsync(buffer.AsMemory(0, message.Count), WebSocketMessageType.Text, true, CancellationToken.None);
            await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, "bye", CancellationToken.None);
        }, webSockets: true);
        await using var proxy = await ProxyUnderTest.StartAsync(upstream.EndPoint);

        using var ws = new ClientWebSocket();
        await ws.ConnectAsync(new Uri($"ws://{proxy.EndPoint}/ws"), CancellationToken.None);
        await ws.SendAsync("ping"u8.ToArray(), WebSocketMessageType.Text, true, CancellationToken.None);
        var buffer = new byte[1024];
        var echoed = await ws.ReceiveAsync(buffer, CancellationToken.None);
        await ws.CloseAsync(WebSocketCloseStatus.NormalClosure, "done", CancellationToken.None);

        Assert.Equal("ping", Encoding.UTF8.GetString(buffer, 0, echoed.Count));
        var record = Assert.Single(await proxy.RecordsAsync(1));
        Assert.Equal(101, record.StatusCode);
        Assert.Equal(L7Verdict.Forwarded, record.Verdict);

        using var deniedWs = new ClientWebSocket();
        var refused = await Assert.ThrowsAsync<WebSocketException>(
            () => deniedWs.ConnectAsync(new Uri($"ws://{proxy.EndPoint}/admin/ws"), CancellationToken.None));
        Assert.Equal(1, upstream.Requests);
        Assert.NotNull(refused);
    }

    [Fact]
    public async Task Unreachable_upstream_answers_503_with_an_error_record()
    {
        // A port that was just free: nothing listens there.
        var closed = new TcpListener(IPAddress.Loopback, 0);
        closed.Start();
        var dead = (IPEndPoint)closed.LocalEndpoint;
        closed.Stop();
        await using var proxy = await ProxyUnderTest.StartAsync(dead);
        using var client = Client();

        using var response = await client.GetAsync(proxy.Url("/x"));

        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        var record = Assert.Single(await proxy.RecordsAsync(1));
        Assert.Equal(L7Verdict.Error, record.Verdict);
        Assert.Equal(503, record.StatusCode);
        Assert.Equal(dead, record.Destination);
        Assert.StartsWith("upstream connect", record.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Silent_upstream_answers_504_after_the_activity_timeout()
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var upstream = await Upstream.StartAsync(async context =>
        {
            await release.Task; // never answers until the test is done
            await context.Response.WriteAsync("late");
        });
        try
        {
            await using var proxy = await ProxyUnderTest.StartAsync(upstream.EndPoint, options: new ProxyOptions
            {
                Listen = [new IPEndPoint(IPAddress.Loopback, 0)],
                UpstreamActivityTimeout = TimeSpan.FromMilliseconds(200),
            });
            using var client = Client();

            using var response = await client.GetAsync(proxy.Url("/slow"));

            Assert.Equal(HttpStatusCode.GatewayTimeout, response.StatusCode);
            var record = Assert.Single(await proxy.RecordsAsync(1));
            Assert.Equal(L7Verdict.Error, record.Verdict);
            Assert.Equal(504, record.StatusCode);
            Assert.StartsWith("upstream timed out", record.Reason, StringComparison.Ordinal);
        }
        finally
        {
            release.TrySetResult();
        }
    }

    [Fact]
    public async Task Connection_without_an_original_destination_is_refused()
    {
        var resolver = new StaticOriginalDestinationResolver();
        await using var proxy = await L7Proxy.StartAsync(
            new ProxyOptions { Listen = [new IPEndPoint(IPAddress.Loopback, 0)] }, resolver, AllowAllPolicy.Instance);
        using var client = Client();

        await Assert.ThrowsAsync<HttpRequestException>(() => client.GetAsync($"http://{proxy.ListenEndPoints[0]}/"));
    }

    /// <summary>
    /// Request body of <c>total</c> bytes that sends one chunk, then waits until the upstream has started receiving
    /// before sending the rest: it only completes if the proxy streams rather than buffers.
    /// </summary>
    private sealed class GatedContent(int chunk, long total, Task upstreamReceiving) : HttpContent
    {
        public bool WaitedForUpstream { get; private set; }

        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context)
        {
            var data = new byte[chunk];
            await stream.WriteAsync(data);
            await stream.FlushAsync();
            // Bounded only so a buffering proxy fails the test instead of hanging it.
            await upstreamReceiving.WaitAsync(TimeSpan.FromSeconds(60));
            WaitedForUpstream = true;
            for (long sent = chunk; sent < total; sent += chunk)
            {
                await stream.WriteAsync(data);
            }
        }

        protected override bool TryComputeLength(out long length)
        {
            length = total;
            return true;
        }
    }
}
