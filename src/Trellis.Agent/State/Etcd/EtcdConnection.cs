using System.Diagnostics;
using Etcdserverpb;
using Grpc.Core;
using Grpc.Net.Client;
using Grpc.Net.Client.Balancer;
using Grpc.Net.Client.Configuration;
using Microsoft.Extensions.DependencyInjection;

namespace Trellis.Agent.State.Etcd;

/// <summary>One gRPC channel to all members of an etcd cluster, and the retry rule every unary call follows.
/// The channel is dotnet-etcd's generated etcd v3 clients over Grpc.Net.Client's own round-robin balancer (not
/// dotnet-etcd's EtcdClient wrapper), so that each call's deadline, retry and error mapping are ours: a member that
/// is down is skipped by the balancer and reconnected in the background with a short backoff.</summary>
internal sealed class EtcdConnection : IDisposable
{
    // etcd's "require leader" metadata (clientv3.WithRequireLeader): a member cut off from the leader fails watches and
    // keep-alive streams at once instead of holding them open and silent.
    public static readonly Metadata RequireLeader = new() { { "hasleader", "true" } };

    private readonly GrpcChannel _channel;
    private readonly EtcdOptions _options;
    private readonly List<NetnsForwarder> _forwarders = [];

    public IReadOnlyList<string> Endpoints { get; }
    public KV.KVClient Kv { get; }
    public Watch.WatchClient Watch { get; }
    public Lease.LeaseClient Lease { get; }

    public EtcdConnection(EtcdOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _options = options;
        if (options.Endpoints is null || options.Endpoints.Count == 0)
            throw new ArgumentException("no etcd endpoint given (e.g. http://127.0.0.1:2379)", nameof(options));
        var addresses = options.Endpoints.Select(ParseEndpoint).ToList();
        Endpoints = addresses.Select(a => $"http://{a.EndPoint.Host}:{a.EndPoint.Port}").ToList();
        if (options.NetworkNamespace is { } netns)
        {
            _forwarders = addresses.Select(a => new NetnsForwarder(netns, a.EndPoint.Host, a.EndPoint.Port)).ToList();
            addresses = _forwarders.Select(f => new BalancerAddress("127.0.0.1", f.LocalPort)).ToList();
        }

        var services = new ServiceCollection();
        services.AddSingleton<ResolverFactory>(new StaticResolverFactory(_ => addresses));
        _channel = GrpcChannel.ForAddress("static:///etcd", new GrpcChannelOptions
        {
            Credentials = ChannelCredentials.Insecure,
            ServiceProvider = services.BuildServiceProvider(),
            ServiceConfig = new ServiceConfig { LoadBalancingConfigs = { new RoundRobinConfig() } },
            InitialReconnectBackoff = TimeSpan.FromMilliseconds(100),
            MaxReconnectBackoff = options.MaxReconnectBackoff,
            MaxReceiveMessageSize = 64 << 20,
            HttpHandler = new SocketsHttpHandler
            {
                EnableMultipleHttp2Connections = true,
                ConnectTimeout = TimeSpan.FromSeconds(2),
                // A member whose host vanished (no RST) is noticed by the pings, not only by the next call's deadline.
                KeepAlivePingDelay = TimeSpan.FromSeconds(10),
                KeepAlivePingTimeout = TimeSpan.FromSeconds(5),
                KeepAlivePingPolicy = HttpKeepAlivePingPolicy.Always,
            },
        });
        Kv = new KV.KVClient(_channel);
        Watch = new Watch.WatchClient(_channel);
        Lease = new Lease.LeaseClient(_channel);
    }

    internal static BalancerAddress ParseEndpoint(string endpoint)
    {
        var text = endpoint?.Trim() ?? "";
        if (text.StartsWith("https://", StringComparison.OrdinalIgnoreCase))
            throw new ArgumentException($"etcd endpoint '{endpoint}': TLS to etcd is not supported yet; use http://", nameof(endpoint));
        if (!text.Contains("://")) text = "http://" + text;
        if (!Uri.TryCreate(text, UriKind.Absolute, out var uri) || uri.Scheme != "http" || uri.IsDefaultPort || uri.AbsolutePath != "/")
            throw new ArgumentException($"etcd endpoint '{endpoint}' is not of the form http://HOST:PORT (e.g. http://127.0.0.1:2379)", nameof(endpoint));
        return new BalancerAddress(uri.Host, uri.Port);
    }

    /// <summary>Runs a unary call, retrying on any member while the failure is one a retry can cure (member down,
    /// leader election, attempt timeout) and the request timeout lasts; then throws <see cref="EtcdUnavailableException"/>.
    /// Retried calls must be safe to repeat: a put or delete whose answer was lost may be applied twice (same end
    /// state), a compare-and-swap transaction then finds its own write and fails its compare, which its caller re-reads.
    /// Other failures throw <see cref="EtcdException"/> at once.</summary>
    public T Call<T>(string what, Func<CallOptions, T> call)
    {
        var clock = Stopwatch.StartNew();
        var pause = TimeSpan.FromMilliseconds(50);
        RpcException? last = null;
        int attempts = 0;
        while (true)
        {
            var left = _options.RequestTimeout - clock.Elapsed;
            if (left <= TimeSpan.Zero) throw Unavailable(what, attempts, clock.Elapsed, last);
            var attempt = left < _options.AttemptTimeout ? left : _options.AttemptTimeout;
            attempts++;
            try
            {
                return call(new CallOptions(deadline: DateTime.UtcNow + attempt));
            }
            catch (RpcException e) when (IsRetriable(e))
            {
                last = e;
            }
            catch (RpcException e)
            {
                throw new EtcdException($"etcd refused {what}: {e.Status.StatusCode}: {e.Status.Detail}", e);
            }
            var wait = _options.RequestTimeout - clock.Elapsed;
            if (wait <= TimeSpan.Zero) continue; // throws above
            Thread.Sleep(pause < wait ? pause : wait);
            pause = TimeSpan.FromTicks(Math.Min(pause.Ticks * 2, TimeSpan.FromSeconds(1).Ticks));
        }
    }

    /// <summary>Failures that say nothing about the request itself: no member reachable, the member lost its leader
    /// or timed out committing (etcd reports those as Unavailable), our attempt deadline, a connection reset.</summary>
    public static bool IsRetriable(RpcException e) =>
        e.StatusCode is StatusCode.Unavailable or StatusCode.DeadlineExceeded or StatusCode.Cancelled
        || (e.StatusCode is StatusCode.Internal or StatusCode.Unknown && e.InnerException is IOException or HttpRequestException);

    public EtcdUnavailableException Unavailable(string what, int attempts, TimeSpan elapsed, Exception? last) => new(
        $"etcd is unreachable: {what} got no answer from any of {string.Join(", ", Endpoints)} in {elapsed.TotalSeconds:0.0} s " +
        $"({attempts} attempts; last error: {Describe(last)}). Check that the members run and are reachable " +
        $"(etcdctl --endpoints={string.Join(',', Endpoints)} endpoint health).",
        Endpoints, last);

    public static string Describe(Exception? e) => e switch
    {
        null => "none",
        RpcException r => $"{r.StatusCode}: {r.Status.Detail}",
        _ => $"{e.GetType().Name}: {e.Message}",
    };

    public void Dispose()
    {
        _channel.Dispose();
        foreach (var f in _forwarders) f.Dispose();
    }
}
