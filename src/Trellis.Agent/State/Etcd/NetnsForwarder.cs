using System.Net;
using System.Net.Sockets;

namespace Trellis.Agent.State.Etcd;

/// <summary>A TCP relay on 127.0.0.1 (an ephemeral port, in the agent's network namespace) to one etcd member reached
/// from another network namespace. gRPC's client-side balancer does not allow a custom connect callback, so a lab node's
/// agent (whose namespace has no network to the host) gives the channel these local addresses instead. A member that is
/// down refuses the upstream connection; the relay then closes the client's, which the channel sees as the member down.</summary>
internal sealed class NetnsForwarder : IDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly CancellationTokenSource _stop = new();
    private readonly string _netns;
    private readonly string _host;
    private readonly int _port;

    public int LocalPort { get; }

    public NetnsForwarder(string netns, string host, int port)
    {
        _netns = netns;
        _host = host;
        _port = port;
        _listener.Start();
        LocalPort = ((IPEndPoint)_listener.LocalEndpoint).Port;
        _ = AcceptLoopAsync(_stop.Token);
    }

    private async Task AcceptLoopAsync(CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            Socket client;
            try { client = await _listener.AcceptSocketAsync(stop); }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException) { return; }
            _ = RelayAsync(client, stop);
        }
    }

    private async Task RelayAsync(Socket client, CancellationToken stop)
    {
        using (client)
        {
            Socket upstream;
            try
            {
                using var connect = CancellationTokenSource.CreateLinkedTokenSource(stop);
                connect.CancelAfter(TimeSpan.FromSeconds(2));
                upstream = await Trellis.Bpf.NetNs.ConnectTcpAsync(_netns, _host, _port, connect.Token);
            }
            catch (Exception e) when (e is SocketException or IOException or OperationCanceledException)
            {
                return; // the member is down: closing the client's connection tells the channel so
            }
            using (upstream)
            {
                client.NoDelay = true;
                using var both = CancellationTokenSource.CreateLinkedTokenSource(stop);
                var a = Pump(client, upstream, both.Token);
                var b = Pump(upstream, client, both.Token);
                await Task.WhenAny(a, b);
                both.Cancel(); // one side closed: close the other too
                try { await Task.WhenAll(a, b); } catch (Exception) { }
            }
        }
    }

    private static async Task Pump(Socket from, Socket to, CancellationToken ct)
    {
        var buffer = new byte[64 * 1024];
        try
        {
            while (true)
            {
                int n = await from.ReceiveAsync(buffer, SocketFlags.None, ct);
                if (n == 0) return;
                await to.SendAsync(buffer.AsMemory(0, n), SocketFlags.None, ct);
            }
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException or ObjectDisposedException) { }
    }

    public void Dispose()
    {
        _stop.Cancel();
        _listener.Stop();
        _stop.Dispose();
    }
}
