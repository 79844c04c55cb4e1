using System.Net;
using System.Net.Sockets;
using Trellis.Bpf;
using Trellis.Datapath;

namespace Trellis.Proxy.Node;

/// <summary>
/// Identities by address, read from the datapath's pinned ipcache (longest prefix match, the same answer the
/// kernel gets): always current, no copy to keep in sync. One map lookup (a syscall) per call.
/// </summary>
internal sealed class IpcacheReader(BpfMap ipcache) : IDisposable
{
    public static IpcacheReader Open(string pinRoot) => new(BpfMap.OpenPinned(Path.Combine(pinRoot, Names.Ipcache)));

    public bool TryLookup(IPAddress address, out IpcacheValue value)
    {
        if (address.IsIPv4MappedToIPv6)
            address = address.MapToIPv4();
        value = default;
        return address.AddressFamily == AddressFamily.InterNetwork
            && ipcache.TryLookup(new IpcacheKey { PrefixLen = 32, Addr = NetOrder.FromAddress(address) }, out value);
    }

    /// <summary>The identity of <paramref name="address"/>; world when the ipcache does not know it (as the datapath).</summary>
    public uint IdentityOf(IPAddress address) => TryLookup(address, out var v) ? v.Identity : Identities.World;

    public void Dispose() => ipcache.Dispose();
}
