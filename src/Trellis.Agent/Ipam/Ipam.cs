using System.Net;
using System.Net.Sockets;
using Trellis.Agent.State;

namespace Trellis.Agent.Ipam;

public sealed class IpamException(string message) : Exception(message);

/// <summary>Pod addresses from the node's pod CIDR. The first address is the node's router IP;
/// allocations are persisted so a restarted agent hands out the same address to the same owner.</summary>
public sealed class PodIpam
{
    private readonly IStateStore _store;
    private readonly uint _network;
    private readonly int _prefix;
    private readonly Dictionary<uint, string> _owners = new();
    private readonly Lock _gate = new();

    public string Cidr { get; }
    public IPAddress RouterIp { get; }

    public PodIpam(string cidr, IStateStore store)
    {
        (_network, _prefix) = Parse(cidr);
        if (_prefix > 30)
            throw new IpamException($"pod CIDR {cidr} is too small: use a /30 or larger");
        Cidr = $"{ToIp(_network)}/{_prefix}";
        RouterIp = ToIp(_network + 1);
        _store = store;
        foreach (var (key, owner) in store.List("ipam"))
            _owners[ToUInt(IPAddress.Parse(key["ipam/".Length..]))] = owner;
    }

    public static (uint Network, int Prefix) Parse(string cidr)
    {
        var slash = cidr.IndexOf('/');
        if (slash < 0 || !IPAddress.TryParse(cidr[..slash], out var ip) || ip.AddressFamily != AddressFamily.InterNetwork
            || !int.TryParse(cidr[(slash + 1)..], out var prefix) || prefix is < 8 or > 32)
            throw new IpamException($"'{cidr}' is not an IPv4 CIDR like 10.200.0.0/24");
        var mask = prefix == 0 ? 0u : uint.MaxValue << (32 - prefix);
        var n = ToUInt(ip);
        if ((n & mask) != n)
            throw new IpamException($"'{cidr}' has host bits set; did you mean {ToIp(n & mask)}/{prefix}?");
        return (n, prefix);
    }

    /// <summary>The owner's address (the same one again if it already has one).</summary>
    public IPAddress Allocate(string owner)
    {
        lock (_gate)
        {
            foreach (var (a, o) in _owners)
                if (o == owner) return ToIp(a);
            uint size = 1u << (32 - _prefix);
            // Skip network, router (.1) and broadcast.
            for (uint i = 2; i < size - 1; i++)
            {
                var a = _network + i;
                if (_owners.ContainsKey(a)) continue;
                _store.Put($"ipam/{ToIp(a)}", owner);
                _owners[a] = owner;
                return ToIp(a);
            }
            throw new IpamException($"pod CIDR {Cidr} is exhausted ({_owners.Count} addresses in use)");
        }
    }

    public bool IsAllocatedTo(IPAddress ip, string owner)
    {
        lock (_gate)
            return _owners.TryGetValue(ToUInt(ip), out var o) && o == owner;
    }

    public bool Release(string owner)
    {
        lock (_gate)
        {
            var hit = _owners.Where(kv => kv.Value == owner).Select(kv => kv.Key).ToList();
            foreach (var a in hit)
            {
                _owners.Remove(a);
                _store.Delete($"ipam/{ToIp(a)}");
            }
            return hit.Count > 0;
        }
    }

    public int InUse
    {
        get { lock (_gate) return _owners.Count; }
    }

    private static uint ToUInt(IPAddress ip)
    {
        var b = ip.GetAddressBytes();
        return (uint)(b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3]);
    }

    private static IPAddress ToIp(uint v) => new([(byte)(v >> 24), (byte)(v >> 16), (byte)(v >> 8), (byte)v]);
}
