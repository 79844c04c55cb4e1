using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Trellis.Agent.Observer;

/// <summary>Serves Hubble's observer gRPC API (HTTP/2 without TLS, as Hubble's local listeners do) on a unix socket
/// only root can open and, optionally, on a TCP address. Hubble's defaults are /var/run/cilium/hubble.sock and port
/// 4244; Trellis uses /run/trellis/NODE/hubble.sock and 127.0.0.1:4244, which in a lab is inside the node's network
/// namespace (one per lab node, so labs never collide).</summary>
public sealed class HubbleServer : IAsyncDisposable
{
    public const string DefaultAddress = "127.0.0.1:4244";

    private readonly WebApplication _app;
    private readonly string _socketPath;
    private bool _stopped;

    public string SocketPath => _socketPath;
    /// <summary>The TCP address (with the port the kernel chose when port 0 was asked for), or null.</summary>
    public IPEndPoint? Address { get; }

    private HubbleServer(WebApplication app, string socketPath, IPEndPoint? address)
    {
        _app = app;
        _socketPath = socketPath;
        Address = address;
    }

    /// <summary>Parses HOST:PORT: HOST an IPv4 address, [IPv6], "localhost", or empty for every address (":4244",
    /// as Cilium's --hubble-listen-address); PORT 0-65535. Throws <see cref="FormatException"/> naming the problem.</summary>
    public static IPEndPoint ParseAddress(string text) => ListenAddress.Parse(text, "hubble address", 4244);

    public static string Format(IPEndPoint ep) =>
        ep.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{ep.Address}]:{ep.Port}" : $"{ep.Address}:{ep.Port}";

    /// <summary>Starts serving; throws <see cref="AgentException"/> with one clear sentence when an address cannot be
    /// listened on.</summary>
    public static async Task<HubbleServer> StartAsync(NodeAgent agent, string socketPath, IPEndPoint? address, ILoggerProvider? logs = null,
        CancellationToken ct = default)
    {
        var dir = Path.GetDirectoryName(socketPath)!;
        Directory.CreateDirectory(dir);
        File.SetUnixFileMode(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        if (File.Exists(socketPath)) File.Delete(socketPath); // a stale socket of a dead agent

        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        if (logs is not null) builder.Logging.AddProvider(logs);
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.ListenUnixSocket(socketPath, o => o.Protocols = HttpProtocols.Http2);
            if (address is not null) k.Listen(address, o => o.Protocols = HttpProtocols.Http2);
        });
        builder.Services.AddGrpc();
        builder.Services.AddSingleton(agent);
        builder.Services.AddSingleton(new ObserverEndpoint(address is null ? $"unix://{socketPath}" : Format(address)));
        var app = builder.Build();
        app.MapGrpcService<ObserverService>();
        try
        {
            await app.StartAsync(ct);
        }
        catch (Exception e) when (e is IOException or SocketException or InvalidOperationException)
        {
            await app.DisposeAsync();
            var where = address is null ? socketPath : $"{socketPath} and {Format(address)}";
            var why = e.Message.Contains("in use", StringComparison.OrdinalIgnoreCase) ? "the address is in use" : e.Message.TrimEnd('.');
            throw new AgentException(500, $"hubble observer: cannot listen on {where} ({why}); choose another TCP address with --hubble-address HOST:PORT or turn TCP off with --hubble-address off");
        }
        File.SetUnixFileMode(socketPath, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        IPEndPoint? actual = null;
        if (address is not null)
        {
            var bound = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses
                .FirstOrDefault(a => a.StartsWith("http://", StringComparison.Ordinal) && !a.StartsWith("http://unix:", StringComparison.Ordinal));
            actual = bound is not null && Uri.TryCreate(bound, UriKind.Absolute, out var u) ? new IPEndPoint(address.Address, u.Port) : address;
        }
        return new HubbleServer(app, socketPath, actual);
    }

    public async Task StopAsync()
    {
        if (_stopped) return;
        _stopped = true;
        await _app.StopAsync(CancellationToken.None);
        try { File.Delete(_socketPath); } catch (IOException) { }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        await _app.DisposeAsync();
    }
}
