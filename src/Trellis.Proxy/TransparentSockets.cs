using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Trellis.Proxy;

/// <summary>Linux socket options the transparent proxy needs (not in .NET's SocketOptionName).</summary>
internal static class TransparentSockets
{
    private const int SolSocket = 1;
    private const int SoMark = 36;
    private const int SolIp = 0;
    private const int IpTransparent = 19;

    /// <summary>A listening socket bound to <paramref name="endPoint"/> that accepts connections for any address.</summary>
    public static Socket CreateListener(EndPoint endPoint, bool transparent)
    {
        var socket = new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            if (transparent)
                SetInt(socket, SolIp, IpTransparent, 1, "IP_TRANSPARENT on the proxy listener");
            socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            socket.Bind(endPoint);
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>A TCP socket connected to <paramref name="destination"/>, from <paramref name="source"/> when given.</summary>
    public static async ValueTask<Stream> ConnectAsync(IPEndPoint destination, IPAddress? source, uint mark, CancellationToken cancellationToken)
    {
        var socket = new Socket(destination.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            if (mark != 0)
                SetInt(socket, SolSocket, SoMark, unchecked((int)mark), "SO_MARK on an upstream socket");
            if (source is not null)
            {
                SetInt(socket, SolIp, IpTransparent, 1, "IP_TRANSPARENT on an upstream socket");
                socket.Bind(new IPEndPoint(source, 0));
            }
            await socket.ConnectAsync(destination, cancellationToken).ConfigureAwait(false);
            return new NetworkStream(socket, ownsSocket: true);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The accepted socket's real local address (getsockname). .NET reports an accepted socket's local endpoint as
    /// its listener's when the listener is bound to a specific address, which hides the original destination the
    /// datapath assigned the connection with.
    /// </summary>
    public static IPEndPoint? LocalEndPointOf(Socket socket)
    {
        Span<byte> addr = stackalloc byte[28]; // sockaddr_in6 is the largest we accept
        var len = addr.Length;
        bool added = false;
        var handle = socket.SafeHandle;
        try
        {
            handle.DangerousAddRef(ref added);
            if (GetSockName((int)handle.DangerousGetHandle(), ref MemoryMarshal.GetReference(addr), ref len) != 0)
                return null;
        }
        finally
        {
            if (added)
                handle.DangerousRelease();
        }
        var family = BitConverter.ToUInt16(addr);
        var port = (ushort)(addr[2] << 8 | addr[3]);
        return family switch
        {
            2 => new IPEndPoint(new IPAddress(addr.Slice(4, 4)), port),          // AF_INET
            10 => new IPEndPoint(new IPAddress(addr.Slice(8, 16)), port),        // AF_INET6
            _ => null,
        };
    }

    [DllImport("libc", EntryPoint = "getsockname", SetLastError = true)]
    private static extern int GetSockName(int fd, ref byte addr, ref int len);

    private static void SetInt(Socket socket, int level, int name, int value, string what)
    {
        Span<byte> bytes = stackalloc byte[4];
        BitConverter.TryWriteBytes(bytes, value);
        try
        {
            socket.SetRawSocketOption(level, name, bytes);
        }
        catch (SocketException e)
        {
            throw new IOException($"cannot set {what} (needs CAP_NET_ADMIN): {e.Message}", e);
        }
    }
}

/// <summary>
/// Upstream HTTP clients, one per source address: a pooled upstream connection carries one client address, so a
/// request is never sent over a connection bound to another client (the server's policy would see the wrong peer).
/// A client not used (and not in use) for the pool's idle timeout is disposed.
/// </summary>
internal sealed class UpstreamPool : IDisposable
{
    private readonly ProxyOptions _options;
    private readonly Entry _defaultEntry;
    private readonly Dictionary<IPAddress, Entry> _bySource = new();
    private readonly Lock _gate = new();
    private readonly Timer _sweep;

    public UpstreamPool(ProxyOptions options)
    {
        _options = options;
        _defaultEntry = new Entry(Create(null), null);
        var period = options.UpstreamIdleTimeout < TimeSpan.FromSeconds(30) ? options.UpstreamIdleTimeout : TimeSpan.FromSeconds(30);
        _sweep = new Timer(_ => Sweep(), null, period, period);
    }

    /// <summary>How many per-source clients exist.</summary>
    public int SourceCount
    {
        get
        {
            lock (_gate)
                return _bySource.Count;
        }
    }

    /// <summary>The client for <paramref name="source"/> (null = the node's address), held until the lease is disposed.</summary>
    public Lease Acquire(IPAddress? source)
    {
        if (source is null)
            return new Lease(_defaultEntry);
        lock (_gate)
        {
            if (!_bySource.TryGetValue(source, out var entry))
            {
                entry = new Entry(Create(source), this) { Source = source };
                _bySource.Add(source, entry);
            }
            entry.LastUsed = Environment.TickCount64;
            entry.InFlight++;
            return new Lease(entry);
        }
    }

    private void Release(Entry entry)
    {
        lock (_gate)
        {
            entry.InFlight--;
            entry.LastUsed = Environment.TickCount64;
        }
    }

    private HttpMessageInvoker Create(IPAddress? source)
    {
        var mark = _options.UpstreamMark;
        var handler = new SocketsHttpHandler
        {
            UseProxy = false,
            AllowAutoRedirect = false,
            AutomaticDecompression = DecompressionMethods.None,
            UseCookies = false,
            EnableMultipleHttp2Connections = true,
            ActivityHeadersPropagator = null,
            ConnectTimeout = _options.UpstreamConnectTimeout,
            PooledConnectionIdleTimeout = _options.UpstreamIdleTimeout,
        };
        if (source is not null || mark != 0)
        {
            handler.ConnectCallback = (context, cancellationToken) =>
            {
                // The destination prefix is always "http://ip:port" (the original destination), never a name.
                var destination = new IPEndPoint(IPAddress.Parse(context.DnsEndPoint.Host), context.DnsEndPoint.Port);
                return TransparentSockets.ConnectAsync(destination, source, mark, cancellationToken);
            };
        }
        return new HttpMessageInvoker(handler);
    }

    private void Sweep()
    {
        var now = Environment.TickCount64;
        var idle = (long)_options.UpstreamIdleTimeout.TotalMilliseconds;
        var stale = new List<Entry>();
        lock (_gate)
        {
            foreach (var (source, entry) in _bySource)
            {
                if (entry.InFlight == 0 && now - entry.LastUsed > idle)
                    stale.Add(entry);
            }
            foreach (var entry in stale)
                _bySource.Remove(entry.Source!);
        }
        foreach (var entry in stale)
            entry.Invoker.Dispose();
    }

    public void Dispose()
    {
        _sweep.Dispose();
        lock (_gate)
        {
            foreach (var entry in _bySource.Values)
                entry.Invoker.Dispose();
            _bySource.Clear();
        }
        _defaultEntry.Invoker.Dispose();
    }

    /// <summary>A held upstream client; disposing it lets the pool sweep the client once idle.</summary>
    public readonly struct Lease : IDisposable
    {
        private readonly Entry _entry;

        internal Lease(Entry entry) => _entry = entry;

        public HttpMessageInvoker Invoker => _entry.Invoker;

        public void Dispose() => _entry.Pool?.Release(_entry);
    }

    internal sealed class Entry(HttpMessageInvoker invoker, UpstreamPool? pool)
    {
        public HttpMessageInvoker Invoker { get; } = invoker;
        public UpstreamPool? Pool { get; } = pool;
        public IPAddress? Source { get; init; }
        public long LastUsed { get; set; }
        public int InFlight { get; set; }
    }
}
