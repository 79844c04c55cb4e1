using System.Collections.Concurrent;
using System.Net;

namespace Trellis.Proxy;

/// <summary>Where a redirected connection was going, and who opened it.</summary>
/// <param name="Destination">The ip:port the client connected to before the datapath redirected it.</param>
/// <param name="ClientIdentity">The client's numeric security identity (0 = unknown).</param>
public sealed record OriginalDestination(IPEndPoint Destination, uint ClientIdentity)
{
    /// <summary>
    /// The address the proxy connects to the destination from (IP_TRANSPARENT bind): the client's own, so the server
    /// and its policy see the real client. Null = the node's own address (the kernel picks).
    /// </summary>
    public IPAddress? UpstreamSource { get; init; }
}

/// <summary>
/// Recovers a connection's original destination from the accepted socket's endpoints. Called once per client
/// connection. The datapath implementation (a BPF map filled at redirect time, keyed by the client's
/// address/port) comes with the redirection; tests and the standalone process use <see cref="StaticOriginalDestinationResolver"/>.
/// </summary>
public interface IOriginalDestinationResolver
{
    /// <param name="local">The proxy's side of the accepted connection.</param>
    /// <param name="remote">The client's side.</param>
    bool TryResolve(IPEndPoint local, IPEndPoint remote, out OriginalDestination destination);
}

/// <summary>Original destination keyed by the proxy listener port, with an optional fallback for any port.</summary>
public sealed class StaticOriginalDestinationResolver : IOriginalDestinationResolver
{
    private readonly ConcurrentDictionary<int, OriginalDestination> _byListenerPort = new();

    /// <summary>Used for a listener port with no mapping; null refuses such connections.</summary>
    public OriginalDestination? Default { get; set; }

    public void Map(int listenerPort, OriginalDestination destination) => _byListenerPort[listenerPort] = destination;

    public bool TryResolve(IPEndPoint local, IPEndPoint remote, out OriginalDestination destination)
    {
        if (_byListenerPort.TryGetValue(local.Port, out var found) || (found = Default) is not null)
        {
            destination = found;
            return true;
        }
        destination = null!;
        return false;
    }
}
