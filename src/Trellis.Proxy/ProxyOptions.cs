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

    /// <summary>
    /// Listener sockets get IP_TRANSPARENT (needs CAP_NET_ADMIN): the datapath hands them connections addressed to
    /// other hosts (bpf_sk_assign), which are accepted with the original destination as their local address.
    /// </summary>
    public bool Transparent { get; init; }

    /// <summary>SO_MARK of upstream sockets (0 = none): tells the datapath a connection comes from the proxy.</summary>
    public uint UpstreamMark { get; init; }

    /// <summary>Clock for record timestamps and latencies.</summary>
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;
}
