using System.Net;

namespace Trellis.Proxy;

/// <summary>How the proxy listens and how long it waits. Immutable once the proxy has started.</summary>
public sealed class ProxyOptions
{
    /// <summary>Listener addresses. Port 0 picks a free port; <see cref="L7Proxy.ListenEndPoints"/> tells which.</summary>
    public IList<IPEndPoint> Listen { get; init; } = new List<IPEndPoint> { new(IPAddress.Loopback, 15001) };

    /// <summary>A client connection with no request in flight is closed after this long (Kestrel keep-alive timeout).</summary>
    public TimeSpan ClientIdleTimeout { get; init; } = TimeSpan.FromSeconds(130);

    /// <summary>Time a client has to send a complete request head.</summary>
    public TimeSpan RequestHeadersTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>A forwarded request fails (504) when the upstream is silent this long (no headers, no body bytes).</summary>
    public TimeSpan UpstreamActivityTimeout { get; init; } = TimeSpan.FromSeconds(100);

    /// <summary>Upstream TCP connect timeout; a refused or timed-out connect answers 503.</summary>
    public TimeSpan UpstreamConnectTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Idle pooled upstream connections are closed after this long.</summary>
    public TimeSpan UpstreamIdleTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>Clock for record timestamps and latencies.</summary>
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;
}
