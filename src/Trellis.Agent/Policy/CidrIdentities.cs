using System.Net;
using Trellis.Agent.State;
using Trellis.Datapath;
using Trellis.Policy;

namespace Trellis.Agent.Policy;

/// <summary>One identity per CIDR that a policy references (and per except), put in the ipcache as a
/// prefix so the kernel's longest-prefix match gives an external address the identity of the most
/// specific CIDR covering it. Numbers are persisted so a restarted agent keeps them.</summary>
public sealed class CidrIdentities(IStateStore store, NodeDatapath datapath)
{
    private readonly Dictionary<string, uint> _byCidr = Load(store);

    private static Dictionary<string, uint> Load(IStateStore store) =>
        store.List("cidr-identities").ToDictionary(kv => Unescape(kv.Key["cidr-identities/".Length..]), kv => uint.Parse(kv.Value));

    // '/' separates state keys.
    private static string Escape(string cidr) => cidr.Replace('/', '_');
    private static string Unescape(string key) => key.Replace('_', '/');

    public IReadOnlyCollection<CidrIdentity> Identities => _byCidr.Select(kv => new CidrIdentity(kv.Value, kv.Key)).ToList();

    public string? CidrOf(uint id) => _byCidr.FirstOrDefault(kv => kv.Value == id).Key;

    /// <summary>Allocates (and installs in the ipcache) identities for the CIDRs not yet known.</summary>
    public void Add(IEnumerable<string> cidrs)
    {
        foreach (var cidr in cidrs)
        {
            if (!_byCidr.TryGetValue(cidr, out var id))
            {
                id = ReservedIdentity.CidrMinimum;
                var used = _byCidr.Values.ToHashSet();
                while (used.Contains(id)) id++;
                store.Put($"cidr-identities/{Escape(cidr)}", id.ToString());
                _byCidr[cidr] = id;
            }
            Install(cidr, id);
        }
    }

    /// <summary>Makes the set exactly <paramref name="cidrs"/>: adds what is missing, removes the rest.</summary>
    public void Sync(IReadOnlyCollection<string> cidrs)
    {
        Add(cidrs);
        var keep = cidrs.ToHashSet();
        foreach (var gone in _byCidr.Keys.Where(c => !keep.Contains(c)).ToList())
        {
            var (addr, len) = Parse(gone);
            datapath.DeleteIpcache(new IpcacheKey { PrefixLen = len, Addr = addr });
            store.Delete($"cidr-identities/{Escape(gone)}");
            _byCidr.Remove(gone);
        }
    }

    private void Install(string cidr, uint id)
    {
        var (addr, len) = Parse(cidr);
        // A /32 CIDR must not replace a pod's own entry.
        if (len == 32 && datapath.Ipcache.TryLookup(new IpcacheKey { PrefixLen = 32, Addr = addr }, out IpcacheValue v)
            && (v.Flags & IpcacheValue.FlagLocalEndpoint) != 0)
            return;
        datapath.SetIpcache(new IpcacheKey { PrefixLen = len, Addr = addr }, new IpcacheValue { Identity = id });
    }

    private static (uint Addr, uint Len) Parse(string cidr)
    {
        var slash = cidr.IndexOf('/');
        return (NetOrder.FromAddress(IPAddress.Parse(cidr[..slash])), uint.Parse(cidr[(slash + 1)..]));
    }
}
