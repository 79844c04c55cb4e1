using System.Collections.Concurrent;
using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.WebSockets;
using Microsoft.Extensions.DependencyInjection;

namespace Trellis.Proxy.Tests;

/// <summary>A real Kestrel server on 127.0.0.1:0 standing in for the original destination.</summary>
internal sealed class Upstream : IAsyncDisposable
{
    private readonly WebApplication _app;
    private int _connections;
    private int _requests;

    private Upstream(WebApplication app) => _app = app;

    public IPEndPoint EndPoint { get; private set; } = null!;

    /// <summary>TCP connections the upstream accepted.</summary>
    public int Connections => Volatile.Read(ref _connections);

    /// <summary>Requests that reached the upstream's handler.</summary>
    public int Requests => Volatile.Read(ref _requests);

    public static async Task<Upstream> StartAsync(RequestDelegate handler, HttpProtocols protocols = HttpProtocols.Http1, bool webSockets = false)
    {
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.Services.AddLogging();
        if (webSockets)
        {
            builder.Services.AddWebSockets(_ => { });
        }
        Upstream? self = null;
        ListenOptions? listen = null;
        builder.WebHost.UseKestrelCore().ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = null;
            k.Listen(IPAddress.Loopback, 0, l =>
            {
                l.Protocols = protocols;
                l.Use(next => connection =>
                {
                    Interlocked.Increment(ref self!._connections);
                    return next(connection);
                });
                listen = l;
            });
        });
        var app = builder.Build();
        self = new Upstream(app);
        if (webSockets)
        {
            app.UseWebSockets();
        }
        app.Run(context =>
        {
            Interlocked.Increment(ref self._requests);
            return handler(context);
        });
        try
        {
            await app.StartAsync();
        }
        catch
        {
            await app.DisposeAsync();
            throw;
        }
        self.EndPoint = listen!.IPEndPoint!;
        return self;
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            using var grace = new CancellationTokenSource(TimeSpan.FromSeconds(2));
            await _app.StopAsync(grace.Token);
        }
        finally
        {
            await _app.DisposeAsync();
        }
    }
}

/// <summary>Policy from a lambda.</summary>
internal sealed class DelegatePolicy(Func<L7Request, Decision> check) : IL7Policy
{
    public Decision Check(L7Request request) => check(request);

    /// <summary>Denies any path starting with /admin.</summary>
    public static readonly DelegatePolicy DenyAdmin =
        new(r => r.Path.StartsWith("/admin", StringComparison.Ordinal) ? Decision.Deny() : Decision.Allow);
}

/// <summary>An L7 proxy on 127.0.0.1:0 whose every connection's original destination is <c>destination</c>.</summary>
internal sealed class ProxyUnderTest : IAsyncDisposable
{
    public const uint ClientIdentity = 4242;

    private readonly SemaphoreSlim _recorded = new(0);

    private ProxyUnderTest(L7Proxy proxy, ConcurrentQueue<L7Record> records)
    {
        Proxy = proxy;
        Records = records;
    }

    private void OnRecord(L7Record record)
    {
        Records.Enqueue(record);
        _recorded.Release();
    }

    /// <summary>
    /// The records of the first <paramref name="count"/> requests. A record is emitted when the proxy's handler
    /// finishes, which can be just after the client has the response; the bound only turns a hang into a failure.
    /// </summary>
    public async Task<L7Record[]> RecordsAsync(int count)
    {
        for (var i = 0; i < count; i++)
        {
            Assert.True(await _recorded.WaitAsync(TimeSpan.FromSeconds(30)), $"only {i} of {count} L7 records were emitted");
        }
        return Records.ToArray();
    }

    public L7Proxy Proxy { get; }

    public ConcurrentQueue<L7Record> Records { get; }

    public IPEndPoint EndPoint => Proxy.ListenEndPoints[0];

    public Uri Url(string pathAndQuery) => new($"http://{EndPoint}{pathAndQuery}");

    public static async Task<ProxyUnderTest> StartAsync(IPEndPoint destination, IL7Policy? policy = null, ProxyOptions? options = null)
    {
        ProxyUnderTest? self = null;
        var resolver = new StaticOriginalDestinationResolver { Default = new OriginalDestination(destination, ClientIdentity) };
        var proxy = await L7Proxy.StartAsync(
            options ?? new ProxyOptions { Listen = [new IPEndPoint(IPAddress.Loopback, 0)] },
            resolver,
            policy ?? DelegatePolicy.DenyAdmin,
            r => self!.OnRecord(r));
        self = new ProxyUnderTest(proxy, new ConcurrentQueue<L7Record>());
        return self;
    }

    public async ValueTask DisposeAsync()
    {
        await Proxy.DisposeAsync();
        _recorded.Dispose();
    }
}
