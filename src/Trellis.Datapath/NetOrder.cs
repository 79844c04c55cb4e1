using System.Buffers.Binary;
using System.Net;

namespace Trellis.Datapath;

/// <summary>IPv4 addresses as the datapath stores them: the four address bytes in memory order (network order).</summary>
public static class NetOrder
{
    public static uint FromAddress(IPAddress ip)
    {
        Span<byte> b = stackalloc byte[4];
        if (ip.AddressFamily != System.Net.Sockets.AddressFamily.InterNetwork || !ip.TryWriteBytes(b, out _))
            throw new ArgumentException($"{ip} is not an IPv4 address");
        return BinaryPrimitives.ReadUInt32LittleEndian(b); // memory order kept as-is
    }

    public static IPAddress ToAddress(uint addr)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, addr);
        return new IPAddress(b);
    }
}
