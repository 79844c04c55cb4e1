using System.Net;
using System.Net.Sockets;

namespace Trellis.Policy;

/// <summary>An IPv4 prefix with its host bits cleared; <see cref="ToString"/> gives the canonical "a.b.c.d/n".</summary>
public readonly record struct Ipv4Prefix : IComparable<Ipv4Prefix>
{
    public Ipv4Prefix(uint address, int length)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(length, 0);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(length, 32);
        Length = length;
        Address = address & Mask(length);
    }

    /// <summary>Host byte order.</summary>
    public uint Address { get; }

    public int Length { get; }

    public static readonly Ipv4Prefix All = new(0, 0);

    public bool Contains(Ipv4Prefix other) => other.Length >= Length && (other.Address & Mask(Length)) == Address;

    public bool Contains(uint address) => (address & Mask(Length)) == Address;

    /// <summary>Parses "a.b.c.d/n" (host bits are cleared) or, when <paramref name="allowBareAddress"/>, "a.b.c.d" as /32.</summary>
    public static bool TryParse(string text, bool allowBareAddress, out Ipv4Prefix prefix, out string? error)
    {
        prefix = default;
        var slash = text.IndexOf('/');
        var addressText = slash >= 0 ? text[..slash] : text;
        if (!IPAddress.TryParse(addressText, out var ip) || !LooksLikeAddress(addressText))
        {
            error = $"\"{text}\" is not a valid CIDR (use a.b.c.d/n, e.g. 10.0.0.0/8)";
            return false;
        }
        if (ip.AddressFamily == AddressFamily.InterNetworkV6)
        {
            error = $"\"{text}\" is an IPv6 CIDR; IPv6 is not supported";
            return false;
        }
        var length = 32;
        if (slash < 0 && !allowBareAddress)
        {
            error = $"\"{text}\" has no prefix length (use a.b.c.d/n, e.g. {addressText}/32)";
            return false;
        }
        if (slash >= 0 && (!int.TryParse(text[(slash + 1)..], out length) || length is < 0 or > 32 || !text[(slash + 1)..].All(char.IsAsciiDigit)))
        {
            error = $"\"{text}\" has an invalid prefix length (use 0-32)";
            return false;
        }
        var bytes = ip.GetAddressBytes();
        prefix = new Ipv4Prefix((uint)(bytes[0] << 24 | bytes[1] << 16 | bytes[2] << 8 | bytes[3]), length);
        error = null;
        return true;
    }

    public static Ipv4Prefix Parse(string text) =>
        TryParse(text, allowBareAddress: true, out var prefix, out var error) ? prefix : throw new FormatException(error);

    public int CompareTo(Ipv4Prefix other)
    {
        var c = Address.CompareTo(other.Address);
        return c != 0 ? c : Length.CompareTo(other.Length);
    }

    public override string ToString() =>
        $"{Address >> 24}.{(Address >> 16) & 0xFF}.{(Address >> 8) & 0xFF}.{Address & 0xFF}/{Length}";

    private static uint Mask(int length) => length == 0 ? 0 : uint.MaxValue << (32 - length);

    // IPAddress.TryParse accepts "10" or "10.1"; a policy CIDR must spell out four octets.
    private static bool LooksLikeAddress(string text) =>
        text.Contains(':') || (text.Split('.') is { Length: 4 } parts && parts.All(p => p.Length is > 0 and <= 3 && p.All(char.IsAsciiDigit)));
}
