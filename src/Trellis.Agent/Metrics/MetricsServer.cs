using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Prometheus;

namespace Trellis.Agent.Metrics;

/// <summary>Serves <see cref="AgentMetrics"/> for Prometheus at http://ADDRESS/metrics on a TCP listener of its own
/// (the API stays on its root-only unix socket). Cilium's agent uses port 9962; the lab's agent runs inside the
/// node's network namespace, so 127.0.0.1:9962 is per lab node.</summary>
public sealed class MetricsServer : IAsyncDisposable
{
    public const string DefaultAddress = "127.0.0.1:9962";

    private readonly WebApplication _app;
    private bool _stopped;

    /// <summary>Where it listens (with the port the kernel chose when port 0 was asked for).</summary>
    public IPEndPoint Address { get; }

    private MetricsServer(WebApplication app, IPEndPoint address)
    {
        _app = app;
        Address = address;
    }

    /// <summary>Parses HOST:PORT: HOST an IPv4 address, [IPv6], "localhost", or empty for every address
    /// (":9962", as Cilium's --prometheus-serve-addr); PORT 0-65535. Throws <see cref="FormatException"/> naming the problem.</summary>
    public static IPEndPoint ParseAddress(string text) => ListenAddress.Parse(text, "metrics address", 9962);

    /// <summary>Starts serving; throws <see cref="AgentException"/> with one clear sentence when the address
    /// cannot be listened on (in use, not an address of this network namespace).</summary>
    public static async Task<MetricsServer> StartAsync(AgentMetrics metrics, IPEndPoint address, ILoggerProvider? logs = null, CancellationToken ct = default)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        if (logs is not null) builder.Logging.AddProvider(logs);
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.WebHost.ConfigureKestrel(k => k.Listen(address));
        var app = builder.Build();
        app.MapMetrics("/metrics", metrics.Registry);
        app.MapGet("/", () => Results.Text("Trellis agent metrics: GET /metrics (Prometheus text format)\n"));
        try
        {
            await app.StartAsync(ct);
        }
        catch (Exception e) when (e is IOException or SocketException or InvalidOperationException)
        {
            await app.DisposeAsync();
            var why = e.Message.Contains("in use", StringComparison.OrdinalIgnoreCase) ? "the address is in use" : e.Message.TrimEnd('.');
            throw new AgentException(500, $"metrics: cannot listen on {Format(address)} ({why}); choose another with --metrics-address HOST:PORT or turn metrics off with --metrics-address off");
        }
        var bound = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses.FirstOrDefault();
        var actual = bound is not null && Uri.TryCreate(bound, UriKind.Absolute, out var u) ? new IPEndPoint(address.Address, u.Port) : address;
        return new MetricsServer(app, actual);
    }

    public static string Format(IPEndPoint ep) =>
        ep.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{ep.Address}]:{ep.Port}" : $"{ep.Address}:{ep.Port}";

    public async Task StopAsync()
    {
        if (_stopped) return;
        _stopped = true;
        await _app.StopAsync(CancellationToken.None);
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        await _app.DisposeAsync();
    }
}
