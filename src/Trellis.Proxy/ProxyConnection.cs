using System.Net;

namespace Trellis.Proxy;

/// <summary>Per client connection state, resolved once at accept and stored in the connection's features.</summary>
internal sealed class ProxyConnection(IPEndPoint client, OriginalDestination original)
{
    public IPEndPoint Client { get; } = client;

    public IPEndPoint Destination { get; } = original.Destination;

    public uint ClientIdentity { get; } = original.ClientIdentity;

    /// <summary>Where the upstream connection comes from (<see cref="OriginalDestination.UpstreamSource"/>).</summary>
    public IPAddress? UpstreamSource { get; } = original.UpstreamSource;

    /// <summary>"http://ip:port" — YARP's destination prefix, built once per connection, not per request.</summary>
    public string DestinationPrefix { get; } = "http://" + original.Destination.ToString();
}
