using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Trellis.Agent;

/// <summary>The HOST:PORT of an agent listener (metrics, Hubble observer).</summary>
public static class ListenAddress
{
    /// <summary>Parses HOST:PORT: HOST an IPv4 address, [IPv6], "localhost", or empty for every address (":4244", as
    /// Cilium's listen-address flags); PORT 0-65535. Throws <see cref="FormatException"/> naming <paramref name="what"/>
    /// and the problem.</summary>
    public static IPEndPoint Parse(string text, string what, int examplePort)
    {
        var colon = text.LastIndexOf(':');
        if (colon < 0)
            throw new FormatException($"{what} '{text}' is not HOST:PORT (for example 127.0.0.1:{examplePort}, :{examplePort} for every address)");
        var host = text[..colon];
        var portText = text[(colon + 1)..];
        if (!ushort.TryParse(portText, NumberStyles.None, CultureInfo.InvariantCulture, out var port))
            throw new FormatException($"{what} '{text}': port '{portText}' is not a number from 0 to 65535");
        IPAddress ip;
        if (host.Length == 0)
            ip = IPAddress.Any;
        else if (host == "localhost")
            ip = IPAddress.Loopback;
        else if (host.StartsWith('[') && host.EndsWith(']') && IPAddress.TryParse(host[1..^1], out var v6) && v6.AddressFamily == AddressFamily.InterNetworkV6)
            ip = v6;
        else if (IPAddress.TryParse(host, out var v4) && v4.AddressFamily == AddressFamily.InterNetwork && host.Count(c => c == '.') == 3)
            ip = v4;
        else
            throw new FormatException($"{what} '{text}': host '{host}' is not an IPv4 address, [IPv6 address] or localhost");
        return new IPEndPoint(ip, port);
    }
}
