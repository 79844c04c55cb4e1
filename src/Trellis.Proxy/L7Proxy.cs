using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Yarp.ReverseProxy.Forwarder;

namespace Trellis.Proxy;

/// <summary>
/// The node-local L7 proxy: accepts redirected connections (HTTP/1.1 and h2c on the same listener), checks each
/// request against an <see cref="IL7Policy"/>, forwards allowed ones to the connection's original destination with
/// YARP's <see cref="IHttpForwarder"/> (bodies streamed, upgrades and trailers passed through) and reports every
/// request as an <see cref="L7Record"/>.
/// </summary>
public sealed class L7Proxy : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly UpstreamPool _upstreams;
    private int _disposed;

    private L7Proxy(WebApplication app, UpstreamPool upstreams, IReadOnlyList<IPEndPoint> listenEndPoints)
    {
        _app = app;
        _upstreams = upstreams;
        ListenEndPoints = listenEndPoints;
    }

    /// <summary>The listening sockets (e.g. to register them with the datapath).</summary>
    public IReadOnlyList<System.Net.Sockets.Socket> ListenSockets { get; private init; } = [];

    /// <summary>The bound listener addresses (actual ports when port 0 was asked for).</summary>
    public IReadOnlyList<IPEndPoint> ListenEndPoints { get; }

    /// <param name="options">Listeners and timeouts.</param>
    /// <param name="resolver">Original destination and client identity per accepted connection.</param>
    /// <param name="policy">Per-request verdict; the implementation may swap its rules at any time.</param>
    /// <param name="onRecord">Called once per request, on the request's thread, after the response; must not block.</param>
    /// <param name="loggerFactory">Kestrel's and YARP's logs; none when null.</param>
    public static async Task<L7Proxy> StartAsync(
        ProxyOptions options,
        IOriginalDestinationResolver resolver,
        IL7Policy policy,
        Action<L7Record>? onRecord = null,
        ILoggerFactory? loggerFactory = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(resolver);
        ArgumentNullException.ThrowIfNull(policy);
        if (options.Listen.Count == 0)
        {
            throw new ArgumentException("ProxyOptions.Listen is empty; give at least one address, e.g. 127.0.0.1:15001.", nameof(options));
        }

        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.Services.AddLogging();
        if (loggerFactory is not null)
        {
            builder.Services.AddSingleton(loggerFactory);
        }
        builder.Services.AddHttpForwarder();

        var listeners = new List<ListenOptions>(options.Listen.Count);
        builder.WebHost.UseKestrelCore().ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            kestrel.AllowAlternateSchemes = true; // see ConnectionMiddleware: h2c requests keep :scheme http
            var limits = kestrel.Limits;
            limits.MaxRequestBodySize = null; // streamed, never buffered: no size limit at the proxy
            limits.MinRequestBodyDataRate = null;
            limits.MinResponseDataRate = null;
            limits.KeepAliveTimeout = options.ClientIdleTimeout;
            limits.RequestHeadersTimeout = options.RequestHeadersTimeout;
            foreach (var endPoint in options.Listen)
            {
                kestrel.Listen(endPoint, listen =>
                {
                    listen.Protocols = HttpProtocols.Http1AndHttp2;
                    listen.Use(next => new ConnectionMiddleware(next, resolver, options.RequestHeadersTimeout).OnConnectionAsync);
                    listeners.Add(listen);
                });
            }
        });

        var listenSockets = new List<System.Net.Sockets.Socket>();
        builder.WebHost.UseSockets(sockets => sockets.CreateBoundListenSocket = endPoint =>
        {
            var socket = TransparentSockets.CreateListener(endPoint, options.Transparent);
            lock (listenSockets)
                listenSockets.Add(socket);
            return socket;
        });
        var upstreams = new UpstreamPool(options);

        WebApplication? app = null;
        try
        {
            app = builder.Build();
            var handler = new ForwardingHandler(
                app.Services.GetRequiredService<IHttpForwarder>(), upstreams, policy, onRecord, options);
            app.Run(handler.InvokeAsync);
            await app.StartAsync(cancellationToken).ConfigureAwait(false);

            var bound = new IPEndPoint[listeners.Count];
            for (var i = 0; i < bound.Length; i++)
            {
                bound[i] = listeners[i].IPEndPoint!;
            }
            return new L7Proxy(app, upstreams, bound) { ListenSockets = listenSockets };
        }
        catch
        {
            if (app is not null)
            {
                await app.DisposeAsync().ConfigureAwait(false);
            }
            upstreams.Dispose();
            throw;
        }
    }

    /// <summary>Stops accepting, lets in-flight requests finish until the token fires, then closes connections.</summary>
    public Task StopAsync(CancellationToken cancellationToken = default) => _app.StopAsync(cancellationToken);

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        try
        {
            using var grace = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            await _app.StopAsync(grace.Token).ConfigureAwait(false);
        }
        finally
        {
            await _app.DisposeAsync().ConfigureAwait(false);
            _upstreams.Dispose();
        }
    }
}
