using System.Net;
using System.Text.Json;
using Trellis.Agent.Endpoints;
using Trellis.Agent.State;
using Trellis.Api;
using Trellis.Datapath;
using Trellis.Policy;

namespace Trellis.Agent.Services;

public sealed record StoredService(uint Id, string Name, string Namespace, string ClusterIp, string FileName, string Yaml, DateTimeOffset AppliedAt);

/// <summary>ClusterIP services: a service IP from the service CIDR, and per port a frontend in the socket
/// load balancer's maps whose backends are the ready pods its selector picks.</summary>
public sealed class ServiceManager
{
    private readonly IStateStore _store;
    private readonly NodeDatapath _dp;
    private readonly uint _network;
    private readonly int _prefix;
    private readonly Dictionary<string, (StoredService Stored, ServiceResource Resource)> _services = new();
    private readonly Dictionary<Lb4FrontendKey, uint> _installed = new(); // frontend -> backend count in the maps
    private readonly HashSet<string> _usedIps = new();
    private uint _nextId = 1;

    public string Cidr { get; }

    public ServiceManager(IStateStore store, NodeDatapath dp, string serviceCidr)
    {
        _store = store;
        _dp = dp;
        (_network, _prefix) = Ipam.PodIpam.Parse(serviceCidr);
        Cidr = serviceCidr;
        foreach (var (_, json) in store.List("services"))
        {
            var s = JsonSerializer.Deserialize<StoredService>(json)!;
            var r = ManifestParser.Parse(s.Yaml, s.FileName).OfType<ServiceResource>().First(x => x.Name == s.Name && x.Namespace == s.Namespace);
            _services[$"{s.Namespace}/{s.Name}"] = (s, r);
            _usedIps.Add(s.ClusterIp);
            _nextId = Math.Max(_nextId, s.Id + 1);
        }
        // Frontends an earlier agent installed: known so that Sync can remove stale ones.
        foreach (var k in dp.Lb4Frontends.Keys<Lb4FrontendKey>())
            if (dp.Lb4Frontends.TryLookup(k, out Lb4Frontend fe))
                _installed[k] = fe.Count;
    }

    public IReadOnlyList<(StoredService Stored, ServiceResource Resource)> All => _services.Values.OrderBy(s => s.Stored.Id).ToList();

    public StoredService Apply(ServiceResource svc, string fileName, string yaml)
    {
        var key = $"{svc.Namespace}/{svc.Name}";
        _services.TryGetValue(key, out var old);
        string ip;
        if (svc.ClusterIP is { } wanted)
        {
            if (old.Stored is not null && old.Stored.ClusterIp != wanted)
                throw AgentException.Conflict($"service {key}: spec.clusterIP is immutable (it is {old.Stored.ClusterIp})");
            if (_usedIps.Contains(wanted) && old.Stored?.ClusterIp != wanted)
            {
                var owner = _services.Values.First(s => s.Stored.ClusterIp == wanted);
                throw AgentException.Conflict($"service {key}: clusterIP {wanted} is already used by {owner.Stored.Namespace}/{owner.Stored.Name}");
            }
            ip = wanted;
        }
        else ip = old.Stored?.ClusterIp ?? NextIp();
        var id = old.Stored?.Id ?? _nextId++;
        _usedIps.Add(ip);
        var stored = new StoredService(id, svc.Name, svc.Namespace!, ip, fileName, yaml, DateTimeOffset.UtcNow);
        _store.Put($"services/{key}", JsonSerializer.Serialize(stored));
        _services[key] = (stored, svc);
        return stored;
    }

    public bool Delete(string ns, string name)
    {
        if (!_services.Remove($"{ns}/{name}", out var gone)) return false;
        _usedIps.Remove(gone.Stored.ClusterIp);
        _store.Delete($"services/{ns}/{name}");
        return true;
    }

    private string NextIp()
    {
        var used = _usedIps;
        uint size = 1u << (32 - _prefix);
        for (uint i = 1; i < size - 1; i++)
        {
            var a = _network + i;
            var ip = new IPAddress([(byte)(a >> 24), (byte)(a >> 16), (byte)(a >> 8), (byte)a]).ToString();
            if (!used.Contains(ip)) return ip;
        }
        throw AgentException.Conflict($"service CIDR {Cidr} is exhausted");
    }

    /// <summary>Endpoints by (namespace, label, value), so a selector looks at the pods carrying one of
    /// its labels instead of every pod (services x endpoints would not scale).</summary>
    public sealed class EndpointIndex
    {
        private readonly Dictionary<(string Ns, string Key, string Value), List<EndpointState>> _byLabel = new();

        public EndpointIndex(IEnumerable<EndpointState> endpoints)
        {
            foreach (var e in endpoints.OrderBy(e => e.Ip, StringComparer.Ordinal))
                foreach (var (k, v) in e.Labels)
                {
                    if (!_byLabel.TryGetValue((e.Namespace, k, v), out var list))
                        _byLabel[(e.Namespace, k, v)] = list = new List<EndpointState>();
                    list.Add(e);
                }
        }

        public IEnumerable<EndpointState> Candidates(string ns, IReadOnlyDictionary<string, string> selector)
        {
            var first = selector.First();
            return _byLabel.TryGetValue((ns, first.Key, first.Value), out var list) ? list : [];
        }
    }

    /// <summary>The backends of one service port: ready endpoints its selector picks, with the target port resolved.</summary>
    public static List<(EndpointState Endpoint, ushort Port)> Backends(ServiceResource svc, ServicePort port, EndpointIndex endpoints)
    {
        var result = new List<(EndpointState, ushort)>();
        if (svc.Selector is null) return result;
        foreach (var e in endpoints.Candidates(svc.Namespace!, svc.Selector))
        {
            if (!svc.Selector.All(kv => e.Labels.TryGetValue(kv.Key, out var v) && v == kv.Value)) continue;
            ushort target = port.TargetPortName is { } name
                ? (ushort)(e.Ports.FirstOrDefault(p => p.Name == name && string.Equals(p.Protocol, port.Protocol.ToString(), StringComparison.OrdinalIgnoreCase))?.Port ?? 0)
                : port.TargetPort;
            if (target != 0) result.Add((e, target));
        }
        return result;
    }

    /// <summary>Makes the load balancer's maps match the services and the endpoints. Growth writes the new
    /// slots before raising the count; shrinking lowers the count before removing slots, so a connect never
    /// picks an empty slot.</summary>
    public void Sync(IReadOnlyCollection<EndpointState> all)
    {
        var endpoints = new EndpointIndex(all);
        var wanted = new HashSet<Lb4FrontendKey>();
        foreach (var (stored, svc) in _services.Values)
        {
            var vip = NetOrder.FromAddress(IPAddress.Parse(stored.ClusterIp));
            for (int i = 0; i < svc.Ports.Count; i++)
            {
                var port = svc.Ports[i];
                var key = Lb4FrontendKey.Of(vip, port.Port, (byte)port.Protocol);
                uint frontendId = stored.Id << 8 | (uint)i;
                var backends = Backends(svc, port, endpoints);
                wanted.Add(key);
                uint oldCount = _installed.GetValueOrDefault(key);
                for (uint slot = 0; slot < backends.Count; slot++)
                {
                    var (ep, target) = backends[(int)slot];
                    _dp.Lb4Backends.Update(new Lb4BackendKey { FrontendId = frontendId, Slot = slot },
                        Lb4Backend.Of(NetOrder.FromAddress(IPAddress.Parse(ep.Ip)), target));
                }
                _dp.Lb4Frontends.Update(key, new Lb4Frontend
                {
                    Id = frontendId,
                    Count = (uint)backends.Count,
                    AffinityTimeoutSeconds = (uint)(svc.AffinityTimeoutSeconds ?? 0),
                });
                for (uint slot = (uint)backends.Count; slot < oldCount; slot++)
                    _dp.Lb4Backends.Delete(new Lb4BackendKey { FrontendId = frontendId, Slot = slot });
                _installed[key] = (uint)backends.Count;
            }
        }
        foreach (var stale in _installed.Keys.Where(k => !wanted.Contains(k)).ToList())
        {
            if (_dp.Lb4Frontends.TryLookup(stale, out Lb4Frontend fe))
            {
                _dp.Lb4Frontends.Delete(stale);
                for (uint slot = 0; slot < fe.Count; slot++)
                    _dp.Lb4Backends.Delete(new Lb4BackendKey { FrontendId = fe.Id, Slot = slot });
            }
            _installed.Remove(stale);
        }
    }

    public List<ServiceDto> List(IReadOnlyCollection<EndpointState> all)
    {
        var endpoints = new EndpointIndex(all);
        return All.Select(s => new ServiceDto(s.Stored.Namespace, s.Stored.Name, "ClusterIP", s.Stored.ClusterIp,
            s.Resource.AffinityTimeoutSeconds is { } t ? $"ClientIP ({t}s)" : "None",
            s.Resource.Ports.Select(p => new ServicePortDto(p.Name, p.Port, p.Protocol.ToString().ToUpperInvariant(),
                p.TargetPortName ?? p.TargetPort.ToString(),
                Backends(s.Resource, p, endpoints).Select(b => new ServiceBackendDto($"{b.Endpoint.Namespace}/{b.Endpoint.Pod}", b.Endpoint.Ip, b.Port, "active")).ToList()))
                .ToList(),
            s.Resource.Selector)).ToList();
    }
}
