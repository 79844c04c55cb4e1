using System.Net;
using System.Text.Json;
using Trellis.Agent.Endpoints;
using Trellis.Agent.State;
using Trellis.Api;
using Trellis.Datapath;
using Trellis.Policy;

namespace Trellis.Agent.Services;

/// <param name="NodePorts">Per port of the service (same order), its NodePort; 0 for a ClusterIP service.</param>
public sealed record StoredService(uint Id, string Name, string Namespace, string ClusterIp, string FileName, string Yaml, DateTimeOffset AppliedAt,
    ushort[]? NodePorts = null);

public sealed record StoredSlice(string Name, string Namespace, string FileName, string Yaml);

/// <summary>Backend states, as Cilium names them. Only active backends take new flows; terminating ones serve
/// when a service has no active backend left (Kubernetes' ProxyTerminatingEndpoints); the others never.</summary>
public enum BackendState { Active, Terminating, Quarantined, Maintenance, NotReady }

/// <summary>One backend of one service port, with where it runs.</summary>
public sealed record Backend(string Owner, string Ip, ushort Port, BackendState State, bool Local)
{
    public string Address => $"{Ip}:{Port}";
}

/// <summary>Services: a ClusterIP from the service CIDR (and for NodePort services a port on every node address),
/// each port a frontend in the load balancer's maps whose backends are the pods the selector picks or the
/// addresses EndpointSlices list. The socket programs translate ClusterIP and NodePort for local sockets; the TC
/// program on the node's devices translates NodePort for traffic from outside.</summary>
public sealed class ServiceManager
{
    public const ushort NodePortMin = 30000; // Kubernetes' default --service-node-port-range
    public const ushort NodePortMax = 32767;
    private const int MaxPortsPerService = 128; // the frontend id keeps 7 bits for the port index

    private readonly IStateStore _store;
    private readonly NodeDatapath _dp;
    private readonly string _node;
    private readonly LbAlgorithm _defaultAlgorithm;
    private readonly uint _network;
    private readonly int _prefix;
    private readonly Dictionary<string, (StoredService Stored, ServiceResource Resource)> _services = new();
    private readonly Dictionary<string, (StoredSlice Stored, EndpointSliceResource Resource)> _slices = new();
    private readonly Dictionary<string, BackendState> _overrides = new(); // "ip:port" -> quarantined/maintenance
    private readonly Dictionary<Lb4FrontendKey, uint> _installedKeys = new(); // frontend -> id in the maps
    private readonly Dictionary<uint, uint> _installedSlots = new();           // id -> slots in use
    private readonly Dictionary<uint, string> _installedMaglev = new();       // id -> backends its table was built from
    private readonly HashSet<string> _usedIps = new();
    private IReadOnlyList<uint> _nodeAddresses = [];
    private uint _nextId = 1;

    public string Cidr { get; }

    public ServiceManager(IStateStore store, NodeDatapath dp, string serviceCidr, string node, LbAlgorithm defaultAlgorithm)
    {
        _store = store;
        _dp = dp;
        _node = node;
        _defaultAlgorithm = defaultAlgorithm;
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
        foreach (var (_, json) in store.List("endpointslices"))
        {
            var s = JsonSerializer.Deserialize<StoredSlice>(json)!;
            var r = ManifestParser.Parse(s.Yaml, s.FileName).OfType<EndpointSliceResource>().First(x => x.Name == s.Name && x.Namespace == s.Namespace);
            _slices[$"{s.Namespace}/{s.Name}"] = (s, r);
        }
        foreach (var (key, value) in store.List("backend-states"))
            _overrides[key["backend-states/".Length..]] = Enum.Parse<BackendState>(value);
        // What an earlier agent installed: known so that Sync can remove what is stale.
        foreach (var k in dp.Lb4Frontends.Keys<Lb4FrontendKey>())
            if (dp.Lb4Frontends.TryLookup(k, out Lb4Frontend fe))
            {
                _installedKeys[k] = fe.Id;
                _installedSlots[fe.Id] = Math.Max(_installedSlots.GetValueOrDefault(fe.Id), fe.Count);
            }
    }

    public IReadOnlyList<(StoredService Stored, ServiceResource Resource)> All => _services.Values.OrderBy(s => s.Stored.Id).ToList();

    public int Count => _services.Count;

    /// <summary>A frontend's id in the maps and in flow events: service id, port index, and whether it is the
    /// NodePort frontend (whose backend set follows externalTrafficPolicy) or the ClusterIP one.</summary>
    public static uint FrontendId(uint serviceId, int portIndex, bool nodePort) => serviceId << 8 | (uint)portIndex << 1 | (nodePort ? 1u : 0u);

    // --- services ---

    /// <summary>Checks and records a batch of services (nothing is stored if one is refused), persisting them with
    /// one batched write.</summary>
    public List<StoredService> Apply(IReadOnlyList<ServiceResource> services, string fileName, string yaml)
    {
        var result = new List<StoredService>();
        var takenIps = new HashSet<string>(_usedIps);
        var takenNodePorts = _services.Values.SelectMany(s => NodePortsOf(s.Stored, s.Resource).Select(p => (p.Port, p.Proto, Owner: $"{s.Stored.Namespace}/{s.Stored.Name}")))
            .GroupBy(x => (x.Port, x.Proto)).ToDictionary(g => g.Key, g => g.First().Owner);
        uint nextId = _nextId;
        var documents = ManifestText.DocumentsAt(yaml, services.Select(x => x.Location.Line).ToList());
        foreach (var (svc, document) in services.Zip(documents))
        {
            var key = $"{svc.Namespace}/{svc.Name}";
            if (svc.Ports.Count > MaxPortsPerService)
                throw AgentException.BadRequest($"{svc.Location}: service {key} has {svc.Ports.Count} ports; at most {MaxPortsPerService} are supported");
            _services.TryGetValue(key, out var old);
            string ip;
            if (svc.ClusterIP is { } wanted)
            {
                if (old.Stored is not null && old.Stored.ClusterIp != wanted)
                    throw AgentException.Conflict($"service {key}: spec.clusterIP is immutable (it is {old.Stored.ClusterIp})");
                if (takenIps.Contains(wanted) && old.Stored?.ClusterIp != wanted)
                {
                    var owner = _services.Values.FirstOrDefault(s => s.Stored.ClusterIp == wanted).Stored;
                    throw AgentException.Conflict($"service {key}: clusterIP {wanted} is already used by {(owner is null ? "another service in this file" : $"{owner.Namespace}/{owner.Name}")}");
                }
                ip = wanted;
            }
            else ip = old.Stored?.ClusterIp ?? NextIp(takenIps);
            takenIps.Add(ip);

            // Free this service's own NodePorts first: re-applying it may keep or move them.
            if (old.Stored is not null)
                foreach (var p in NodePortsOf(old.Stored, old.Resource))
                    takenNodePorts.Remove((p.Port, p.Proto));
            var nodePorts = new ushort[svc.Ports.Count];
            if (svc.Type == ServiceType.NodePort)
            {
                for (int i = 0; i < svc.Ports.Count; i++)
                {
                    var port = svc.Ports[i];
                    ushort np;
                    if (port.NodePort is { } asked)
                    {
                        if (asked is < NodePortMin or > NodePortMax)
                            throw AgentException.BadRequest($"{svc.Location}: service {key} spec.ports[{i}].nodePort {asked} is outside the node port range {NodePortMin}-{NodePortMax}");
                        if (takenNodePorts.TryGetValue((asked, port.Protocol), out var owner))
                            throw AgentException.Conflict($"service {key}: nodePort {asked}/{port.Protocol.ToString().ToUpperInvariant()} is already allocated to {owner}");
                        np = asked;
                    }
                    else
                    {
                        // Keep the port an earlier version of this service had for the same port, as Kubernetes does.
                        var kept = old.Stored?.NodePorts is { } oldPorts
                            ? old.Resource.Ports.Select((p, j) => (p, j)).Where(x => x.p.Port == port.Port && x.p.Protocol == port.Protocol && x.j < oldPorts.Length)
                                .Select(x => oldPorts[x.j]).FirstOrDefault(x => x != 0 && !takenNodePorts.ContainsKey((x, port.Protocol)))
                            : (ushort)0;
                        np = kept != 0 ? kept : NextNodePort(takenNodePorts, port.Protocol)
                            ?? throw AgentException.Conflict($"service {key}: the node port range {NodePortMin}-{NodePortMax} is exhausted for {port.Protocol.ToString().ToUpperInvariant()}");
                    }
                    takenNodePorts[(np, port.Protocol)] = key;
                    nodePorts[i] = np;
                }
            }
            var id = old.Stored?.Id ?? nextId++;
            // Each service keeps its own document, not the whole file: a file of 10,000 services must not be stored 10,000 times.
            result.Add(new StoredService(id, svc.Name, svc.Namespace!, ip, fileName, document, DateTimeOffset.UtcNow, nodePorts));
        }
        // All checked: record and persist.
        var writes = new List<KeyValuePair<string, string>>();
        for (int i = 0; i < services.Count; i++)
        {
            var stored = result[i];
            var key = $"{stored.Namespace}/{stored.Name}";
            if (_services.TryGetValue(key, out var old)) _usedIps.Remove(old.Stored.ClusterIp);
            _usedIps.Add(stored.ClusterIp);
            _services[key] = (stored, services[i]);
            writes.Add(new($"services/{key}", JsonSerializer.Serialize(stored)));
        }
        _nextId = nextId;
        _store.PutMany(writes);
        return result;
    }

    private static IEnumerable<(ushort Port, L4Proto Proto)> NodePortsOf(StoredService s, ServiceResource r) =>
        (s.NodePorts ?? []).Select((p, i) => (p, r.Ports[i].Protocol)).Where(x => x.p != 0);

    public bool Delete(string ns, string name)
    {
        if (!_services.Remove($"{ns}/{name}", out var gone)) return false;
        _usedIps.Remove(gone.Stored.ClusterIp);
        _store.Delete($"services/{ns}/{name}");
        return true;
    }

    private string NextIp(HashSet<string> used)
    {
        uint size = 1u << (32 - _prefix);
        for (uint i = 1; i < size - 1; i++)
        {
            var a = _network + i;
            var ip = new IPAddress([(byte)(a >> 24), (byte)(a >> 16), (byte)(a >> 8), (byte)a]).ToString();
            if (!used.Contains(ip)) return ip;
        }
        throw AgentException.Conflict($"service CIDR {Cidr} is exhausted");
    }

    private static ushort? NextNodePort(Dictionary<(ushort, L4Proto), string> taken, L4Proto proto)
    {
        for (int p = NodePortMin; p <= NodePortMax; p++)
            if (!taken.ContainsKey(((ushort)p, proto))) return (ushort)p;
        return null;
    }

    // --- endpoint slices ---

    public void ApplySlices(IReadOnlyList<EndpointSliceResource> slices, string fileName, string yaml)
    {
        var writes = new List<KeyValuePair<string, string>>();
        var documents = ManifestText.DocumentsAt(yaml, slices.Select(x => x.Location.Line).ToList());
        foreach (var (s, document) in slices.Zip(documents))
        {
            var stored = new StoredSlice(s.Name, s.Namespace!, fileName, document);
            _slices[$"{s.Namespace}/{s.Name}"] = (stored, s);
            writes.Add(new($"endpointslices/{s.Namespace}/{s.Name}", JsonSerializer.Serialize(stored)));
        }
        _store.PutMany(writes);
    }

    public bool DeleteSlice(string ns, string name)
    {
        if (!_slices.Remove($"{ns}/{name}")) return false;
        _store.Delete($"endpointslices/{ns}/{name}");
        return true;
    }

    public IEnumerable<EndpointSliceResource> Slices => _slices.Values.Select(s => s.Resource);

    // --- backend states ---

    /// <summary>Sets a backend address's state by hand (quarantined, maintenance) or clears it (active).</summary>
    public void SetBackendState(string address, BackendState state)
    {
        if (state == BackendState.Active)
        {
            _overrides.Remove(address);
            _store.Delete($"backend-states/{address}");
        }
        else
        {
            _overrides[address] = state;
            _store.Put($"backend-states/{address}", state.ToString());
        }
    }

    public bool KnowsBackend(string address, IReadOnlyCollection<EndpointState> all)
    {
        var endpoints = new EndpointIndex(all);
        return _services.Values.Any(s => s.Resource.Ports.Any(p => Backends(s.Resource, p, endpoints).Any(b => b.Address == address)));
    }

    // --- node addresses ---

    /// <summary>The node's addresses (network order): a NodePort answers on each. Returns whether they changed.</summary>
    public bool SetNodeAddresses(IEnumerable<uint> addresses)
    {
        var sorted = addresses.Distinct().Order().ToList();
        if (sorted.SequenceEqual(_nodeAddresses)) return false;
        _nodeAddresses = sorted;
        return true;
    }

    /// <summary>Endpoints by (namespace, label, value), so a selector looks at the pods carrying one of
    /// its labels instead of every pod (services x endpoints would not scale).</summary>
    public sealed class EndpointIndex
    {
        private readonly Dictionary<(string Ns, string Key, string Value), List<EndpointState>> _byLabel = new();
        public HashSet<string> LocalIps { get; } = new();

        public EndpointIndex(IEnumerable<EndpointState> endpoints)
        {
            foreach (var e in endpoints.OrderBy(e => e.Ip, StringComparer.Ordinal))
            {
                LocalIps.Add(e.Ip);
                foreach (var (k, v) in e.Labels)
                {
                    if (!_byLabel.TryGetValue((e.Namespace, k, v), out var list))
                        _byLabel[(e.Namespace, k, v)] = list = new List<EndpointState>();
                    list.Add(e);
                }
            }
        }

        public IEnumerable<EndpointState> Candidates(string ns, IReadOnlyDictionary<string, string> selector)
        {
            var first = selector.First();
            return _byLabel.TryGetValue((ns, first.Key, first.Value), out var list) ? list : [];
        }
    }

    /// <summary>Every backend of one service port with its state: the pods the selector picks (target port
    /// resolved by name where needed), or, for a service without selector, the addresses its EndpointSlices list.</summary>
    public List<Backend> Backends(ServiceResource svc, ServicePort port, EndpointIndex endpoints)
    {
        var result = new List<Backend>();
        if (svc.Selector is not null)
        {
            foreach (var e in endpoints.Candidates(svc.Namespace!, svc.Selector))
            {
                if (!svc.Selector.All(kv => e.Labels.TryGetValue(kv.Key, out var v) && v == kv.Value)) continue;
                ushort target = port.TargetPortName is { } name
                    ? (ushort)(e.Ports.FirstOrDefault(p => p.Name == name && string.Equals(p.Protocol, port.Protocol.ToString(), StringComparison.OrdinalIgnoreCase))?.Port ?? 0)
                    : port.TargetPort;
                if (target == 0) continue;
                var state = e.TerminatingSince is null ? BackendState.Active : BackendState.Terminating;
                result.Add(WithOverride(new Backend(e.Key, e.Ip, target, state, Local: true)));
            }
            return result;
        }
        // Without a selector: the slices labelled with this service's name; a slice port matches by the service
        // port's name (both empty for a single unnamed port) and protocol.
        foreach (var (_, slice) in _slices.Values.Where(s => s.Resource.Namespace == svc.Namespace && s.Resource.ServiceName == svc.Name).OrderBy(s => s.Resource.Name, StringComparer.Ordinal))
        {
            var sp = slice.Ports.FirstOrDefault(p => p.Name == (port.Name ?? "") && p.Protocol == port.Protocol);
            if (sp is null) continue;
            foreach (var e in slice.Endpoints)
            {
                var state = e.Ready ? BackendState.Active
                    : e.Serving && e.Terminating ? BackendState.Terminating
                    : BackendState.NotReady;
                var local = e.NodeName == _node || endpoints.LocalIps.Contains(e.Address);
                result.Add(WithOverride(new Backend($"slice {slice.Namespace}/{slice.Name}", e.Address, sp.Port, state, local)));
            }
        }
        return result;
    }

    private Backend WithOverride(Backend b) =>
        _overrides.TryGetValue(b.Address, out var s) && b.State != BackendState.NotReady ? b with { State = s } : b;

    /// <summary>The backends a frontend hands new flows to: the active ones (only this node's when the traffic
    /// policy is Local); when there is none, the terminating ones that still serve.</summary>
    public static List<Backend> Selectable(IEnumerable<Backend> all, bool localOnly)
    {
        var candidates = all.Where(b => !localOnly || b.Local).ToList();
        var active = candidates.Where(b => b.State == BackendState.Active).ToList();
        return active.Count > 0 ? active : candidates.Where(b => b.State == BackendState.Terminating).ToList();
    }

    // --- the maps ---

    /// <summary>Makes the load balancer's maps match the services and the endpoints. Growth writes the new
    /// slots before raising the count; shrinking lowers the count before removing slots, so a connect never
    /// picks an empty slot. Maglev tables are rebuilt only when their backends change.</summary>
    public void Sync(IReadOnlyCollection<EndpointState> all)
    {
        var endpoints = new EndpointIndex(all);
        var wantedKeys = new Dictionary<Lb4FrontendKey, Lb4Frontend>();
        var wantedIds = new Dictionary<uint, (List<Backend> Backends, bool Maglev)>();
        foreach (var (stored, svc) in _services.Values)
        {
            var vip = NetOrder.FromAddress(IPAddress.Parse(stored.ClusterIp));
            var maglev = (svc.Algorithm ?? _defaultAlgorithm) == LbAlgorithm.Maglev;
            for (int i = 0; i < svc.Ports.Count; i++)
            {
                var port = svc.Ports[i];
                var backends = Backends(svc, port, endpoints);
                var internalSet = Selectable(backends, svc.InternalTrafficLocal);
                uint id = FrontendId(stored.Id, i, nodePort: false);
                wantedIds[id] = (internalSet, false);
                wantedKeys[Lb4FrontendKey.Of(vip, port.Port, (byte)port.Protocol)] = new Lb4Frontend
                {
                    Id = id,
                    Count = (uint)internalSet.Count,
                    AffinityTimeoutSeconds = (uint)(svc.AffinityTimeoutSeconds ?? 0),
                };
                if (stored.NodePorts is { } nps && i < nps.Length && nps[i] != 0)
                {
                    var externalSet = Selectable(backends, svc.ExternalTrafficLocal);
                    uint npId = FrontendId(stored.Id, i, nodePort: true);
                    wantedIds[npId] = (externalSet, maglev);
                    foreach (var addr in _nodeAddresses)
                        wantedKeys[Lb4FrontendKey.Of(addr, nps[i], (byte)port.Protocol)] = new Lb4Frontend
                        {
                            Id = npId,
                            Count = (uint)externalSet.Count,
                            AffinityTimeoutSeconds = (uint)(svc.AffinityTimeoutSeconds ?? 0),
                            Flags = Lb4Frontend.FlagExternal | (maglev ? Lb4Frontend.FlagMaglev : 0),
                        };
                }
            }
        }

        // 1. New and changed slots, and Maglev tables, before any frontend counts them.
        foreach (var (id, (backends, maglev)) in wantedIds)
        {
            for (uint slot = 0; slot < backends.Count; slot++)
                _dp.Lb4Backends.Update(new Lb4BackendKey { FrontendId = id, Slot = slot }, ToMap(backends[(int)slot]));
            if (maglev)
            {
                var names = backends.Select(b => b.Address).Order(StringComparer.Ordinal).ToList();
                var signature = string.Join(",", names);
                if (backends.Count > 0 && _installedMaglev.GetValueOrDefault(id) != signature)
                {
                    var byName = backends.ToDictionary(b => b.Address);
                    var table = Maglev.Build(names).Select(i => ToMap(byName[names[i]])).ToArray();
                    _dp.SetMaglevTable(id, table);
                    _installedMaglev[id] = signature;
                }
            }
        }
        // 2. Frontends.
        foreach (var (key, fe) in wantedKeys)
        {
            _dp.Lb4Frontends.Update(key, fe);
            _installedKeys[key] = fe.Id;
        }
        foreach (var stale in _installedKeys.Keys.Where(k => !wantedKeys.ContainsKey(k)).ToList())
        {
            _dp.Lb4Frontends.Delete(stale);
            _installedKeys.Remove(stale);
        }
        // 3. Slots and tables nothing counts any more.
        foreach (var (id, old) in _installedSlots.ToList())
        {
            uint keep = wantedIds.TryGetValue(id, out var w) ? (uint)w.Backends.Count : 0;
            for (uint slot = keep; slot < old; slot++)
                _dp.Lb4Backends.Delete(new Lb4BackendKey { FrontendId = id, Slot = slot });
            if (keep == 0) _installedSlots.Remove(id);
        }
        foreach (var (id, w) in wantedIds.Where(w => w.Value.Backends.Count > 0))
            _installedSlots[id] = (uint)w.Backends.Count;
        foreach (var id in _installedMaglev.Keys.Where(id => !wantedIds.TryGetValue(id, out var w) || !w.Maglev || w.Backends.Count == 0).ToList())
        {
            _dp.DeleteMaglevTable(id);
            _installedMaglev.Remove(id);
        }
    }

    private static Lb4Backend ToMap(Backend b) => Lb4Backend.Of(NetOrder.FromAddress(IPAddress.Parse(b.Ip)), b.Port);

    public List<ServiceDto> List(IReadOnlyCollection<EndpointState> all)
    {
        var endpoints = new EndpointIndex(all);
        return All.Select(s =>
        {
            var (stored, svc) = s;
            return new ServiceDto(stored.Namespace, stored.Name, svc.Type.ToString(), stored.ClusterIp,
                svc.AffinityTimeoutSeconds is { } t ? $"ClientIP ({t}s)" : "None",
                svc.Ports.Select((p, i) =>
                {
                    var backends = Backends(svc, p, endpoints);
                    var usedInternal = Selectable(backends, svc.InternalTrafficLocal).Select(b => b.Address).ToHashSet();
                    return new ServicePortDto(p.Name, p.Port, p.Protocol.ToString().ToUpperInvariant(),
                        p.TargetPortName ?? p.TargetPort.ToString(),
                        backends.Select(b => new ServiceBackendDto(b.Owner, b.Ip, b.Port, StateName(b.State), b.Local, usedInternal.Contains(b.Address))).ToList(),
                        stored.NodePorts is { } nps && i < nps.Length && nps[i] != 0 ? nps[i] : null);
                }).ToList(),
                svc.Selector,
                svc.InternalTrafficLocal ? "Local" : "Cluster",
                svc.Type == ServiceType.NodePort ? (svc.ExternalTrafficLocal ? "Local" : "Cluster") : null,
                (svc.Algorithm ?? _defaultAlgorithm) == LbAlgorithm.Maglev ? "maglev" : "random");
        }).ToList();
    }

    public static string StateName(BackendState s) => s switch
    {
        BackendState.NotReady => "not-ready",
        _ => s.ToString().ToLowerInvariant(),
    };
}
