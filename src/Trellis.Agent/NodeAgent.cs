using System.Collections.Frozen;
using System.Diagnostics;
using System.Net;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Trellis.Agent.Endpoints;
using Trellis.Agent.Flows;
using Trellis.Agent.Identity;
using Trellis.Agent.Ipam;
using Trellis.Agent.Policy;
using Trellis.Agent.State;
using Trellis.Api;
using Trellis.Bpf;
using Trellis.Datapath;
using Trellis.Policy;

namespace Trellis.Agent;

/// <summary>The node agent's state and its one writer: every change (namespace, endpoint, policy) runs
/// under one lock, updates the store, then regenerates the datapath maps it affects.</summary>
public sealed class NodeAgent : IDisposable
{
    private readonly AgentOptions _opt;
    private readonly ILogger _log;
    private readonly Lock _gate = new();
    private IStateStore _store = null!;
    private NodeDatapath _dp = null!;
    private PodIpam _ipam = null!;
    private IIdentityManager _identities = null!;
    private Cluster.ClusterMembership? _cluster; // null: one node on the embedded store
    private PolicyRepository _policies = null!;
    private readonly Dictionary<string, Labels> _namespaces = new();
    private CidrIdentities _cidrs = null!;
    private Services.ServiceManager _services = null!;
    private readonly Dictionary<string, EndpointRuntime> _endpoints = new(); // by "ns/pod"
    // Cgroup directory -> inode (the cgroup id socket events carry), so a snapshot does not stat every pod's cgroup.
    private Dictionary<string, ulong> _cgroupIds = new();
    private FlowMonitor _monitor = null!;
    private Timer? _ctGc;
    private Timer? _deviceScan;
    private List<DeviceDto> _devices = [];
    private Proxy.ProxySupervisor? _proxy;
    private Proxy.L7FlowReceiver? _l7;
    private string? _proxyPolicyWritten;

    public FlowStore Flows { get; }
    /// <summary>How many endpoint policy maps were (re)written: what incremental regeneration saves.</summary>
    public long PolicyMapWrites { get; private set; }
    public DateTimeOffset StartedAt { get; } = DateTimeOffset.UtcNow;
    public AgentOptions Options => _opt;

    public NodeAgent(AgentOptions options, ILogger log)
    {
        _opt = options;
        _log = log;
        Flows = new FlowStore(options.FlowStoreSize);
    }

    /// <summary>Loads (or re-adopts) everything. Throws <see cref="DatapathException"/> with one clear
    /// sentence when root, bpffs or a kernel feature is missing.</summary>
    public void Start()
    {
        if (!BpfFs.IsRoot)
            throw new DatapathException("trellis agent must run as root (it loads BPF programs and configures network devices)");
        _store = new FileStateStore(Path.Combine(_opt.StateDir, "store"));
        _ipam = new PodIpam(_opt.PodCidr, _store);
        // With etcd, identities are the cluster's; endpoints, policies and services stay in the node's file store.
        if (_opt.EtcdEndpoints is { } etcd)
            _cluster = Cluster.ClusterMembership.Join(
                new State.Etcd.EtcdOptions
                {
                    Endpoints = etcd, Cluster = _opt.Cluster, RequestTimeout = _opt.EtcdRequestTimeout, NetworkNamespace = _opt.EtcdNetworkNamespace,
                },
                new Cluster.NodeRecord(_opt.Node, _ipam.Cidr, _ipam.RouterIp.ToString(), StartedAt), _opt.NodeLeaseTtl, _log);
        _dp = NodeDatapath.Load(_opt.PinRoot);
        _identities = _cluster?.Identities ?? (IIdentityManager)new IdentityManager(_store);
        _policies = new PolicyRepository(_store);
        _cidrs = new CidrIdentities(_store, _dp);
        _cidrs.Sync(PolicyCompiler.ReferencedCidrs(Sources()));
        foreach (var (key, json) in _store.List("namespaces"))
            _namespaces[key["namespaces/".Length..]] = new Labels(JsonSerializer.Deserialize<Dictionary<string, string>>(json)!);

        ApplyNodeConfig();
        var cgroupRoot = _opt.CgroupRootOverride ?? Path.Combine(BpfFs.EnsureCgroup2(), "trellis", _opt.Node);
        Directory.CreateDirectory(cgroupRoot);
        _dp.AttachSocketLb(cgroupRoot);
        _services = new Services.ServiceManager(_store, _dp, _opt.ServiceCidr, _opt.Node, _opt.LbAlgorithm);
        // The node's own address is the host identity for policy.
        _dp.SetIpcache(NetOrder.FromAddress(_ipam.RouterIp), Identities.Host);

        lock (_gate)
        {
            foreach (var (_, json) in _store.List("endpoints"))
                Readopt(JsonSerializer.Deserialize<EndpointState>(json)!);
            // The cluster's allocator holds nothing yet: reference each endpoint's identity again (same labels, same
            // id, unless the id was freed and reused while this node was away: then the endpoint moves).
            if (_cluster is not null) Reidentify(_endpoints.Values.ToList());
            RegenerateAll();
            ScanDevicesLocked();
            _services.Sync(EndpointStates());
        }

        _monitor = new FlowMonitor(_dp, Flows, _log);
        RefreshSnapshot(); // also writes the proxy's policy file, before the proxy starts
        _monitor.Start();
        if (_opt.ProxyPort != 0)
            StartProxy();
        _ctGc = new Timer(_ => CollectConntrack(), null, _opt.ConntrackGcInterval, _opt.ConntrackGcInterval);
        _deviceScan = new Timer(_ => ScanDevices(), null, _opt.DeviceScanInterval, _opt.DeviceScanInterval);
        _cluster?.Start(OnClusterIdentitiesChanged, OnClusterLeaseRetaken, _opt.ClusterProbeInterval, _opt.IdentityGcInterval);
        _log.LogInformation("agent for node {Node} started: {Endpoints} endpoints re-adopted, pod CIDR {Cidr}", _opt.Node, _endpoints.Count, _ipam.Cidr);
    }

    // --- cluster (etcd) ---

    // Another node allocated or freed an identity: policies selecting by labels may now cover it.
    private void OnClusterIdentitiesChanged()
    {
        try
        {
            lock (_gate) RegenerateAfterIdentityChange();
            RefreshSnapshot();
        }
        catch (Exception e) when (e is IOException or DatapathException or BpfException)
        {
            _log.LogError(e, "regenerating policy after a cluster identity change failed");
        }
    }

    // The lease was lost and taken again: ids freed meanwhile are allocated anew and their endpoints move.
    private void OnClusterLeaseRetaken()
    {
        try
        {
            lock (_gate) Reidentify(_endpoints.Values.ToList());
            RefreshSnapshot();
        }
        catch (Exception e) when (e is IOException or DatapathException or BpfException or AgentException)
        {
            _log.LogError(e, "re-referencing identities after the etcd lease was retaken failed");
        }
    }

    // --- L7 proxy ---

    private string RunDir => Path.GetDirectoryName(_opt.SocketPath)!;
    private string ProxyPolicyFile => Path.Combine(RunDir, "proxy", "policy.json");

    /// <summary>Policy routing for redirected packets, the L7 record socket, then the supervised proxy process.</summary>
    private void StartProxy()
    {
        Proxy.ProxyRouting.Ensure();
        _dp.AttachProxyLookup();
        _l7 = new Proxy.L7FlowReceiver(Path.Combine(RunDir, "l7.sock"), Flows, () => _monitor.Snapshot, HasIngressL7, _log);
        _l7.Start();
        _proxy = new Proxy.ProxySupervisor(_opt.Node,
        [
            "--node", _opt.Node,
            "--listen", $"127.0.0.1:{_opt.ProxyPort}",
            "--policy-file", ProxyPolicyFile,
            "--records-socket", Path.Combine(RunDir, "l7.sock"),
            "--pin-root", _opt.PinRoot,
            "--pid-file", Path.Combine(RunDir, "proxy.pid"),
        ], Path.Combine(RunDir, "proxy.pid"), Path.Combine(RunDir, "proxy.log"), _log);
        _proxy.Start();
    }

    private ProxyStatusDto ProxyStatus() => new(_opt.ProxyPort, _proxy?.Pid ?? 0, _proxy?.Restarts ?? 0,
        _l7?.Received ?? 0, _l7?.ProxyDropped ?? 0, _endpoints.Values.Count(e => e.Installed is { HttpRules.Count: > 0 }));

    // Read by the L7 record thread: a snapshot of the addresses whose ingress rules redirect (no lock needed).
    private volatile FrozenSet<uint> _ingressL7 = FrozenSet<uint>.Empty;
    private bool HasIngressL7(uint ipv4) => _ingressL7.Contains(ipv4);

    /// <summary>
    /// Writes the proxy's rules (endpoints with HTTP rules) when they changed: temp file, fsync, rename.
    /// <paramref name="upcoming"/> are rules about to be installed in the datapath: published first, and with
    /// <paramref name="wait"/> the call returns once the running proxy has loaded them (at most 2 s), so a newly
    /// redirected connection never meets a proxy that does not know its rules yet. Until the datapath is updated the
    /// other endpoints keep their installed rules (a removed rule goes from the proxy only after the maps).
    /// </summary>
    private void PublishProxyPolicyLocked(IReadOnlyDictionary<string, EndpointPolicy>? upcoming = null, bool wait = false)
    {
        var l7 = new List<(EndpointRuntime Ep, EndpointPolicy Policy)>();
        foreach (var e in _endpoints.Values)
        {
            var policy = upcoming is not null && upcoming.TryGetValue(e.State.Key, out var next) ? next : e.Installed;
            if (policy is { HttpRules.Count: > 0 })
                l7.Add((e, policy));
        }
        if (upcoming is null)
            _ingressL7 = l7.Where(x => IngressL7(x.Policy)).Select(x => NetOrder.FromAddress(IPAddress.Parse(x.Ep.State.Ip))).ToFrozenSet();
        var endpoints = l7.Select(x => new Trellis.Proxy.L7Endpoint(IPAddress.Parse(x.Ep.State.Ip), x.Ep.State.Identity, x.Policy)).ToList();
        var body = Trellis.Proxy.Node.ProxyPolicyFile.Serialize(endpoints);
        if (body == _proxyPolicyWritten)
            return;
        var generation = ++_proxyGeneration;
        var text = Trellis.Proxy.Node.ProxyPolicyFile.Serialize(endpoints, generation);
        Directory.CreateDirectory(Path.GetDirectoryName(ProxyPolicyFile)!);
        var tmp = ProxyPolicyFile + ".tmp";
        using (var f = new FileStream(tmp, FileMode.Create, FileAccess.Write))
        {
            f.Write(System.Text.Encoding.UTF8.GetBytes(text));
            f.Flush(flushToDisk: true);
        }
        File.Move(tmp, ProxyPolicyFile, overwrite: true);
        _proxyPolicyWritten = body;
        if (wait && _proxy is { Pid: not 0 })
            WaitForProxy(generation);
    }

    private long _proxyGeneration = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(); // increases across agent restarts too

    private void WaitForProxy(long generation)
    {
        var loaded = Path.Combine(Path.GetDirectoryName(ProxyPolicyFile)!, Trellis.Proxy.Node.ProxyPolicyFile.LoadedFileName);
        var deadline = Stopwatch.GetTimestamp() + Stopwatch.Frequency * 2;
        while (Stopwatch.GetTimestamp() < deadline)
        {
            try
            {
                if (long.TryParse(File.ReadAllText(loaded), out var got) && got >= generation)
                    return;
            }
            catch (IOException)
            {
                // not written yet
            }
            Thread.Sleep(2);
        }
        _log.LogWarning("the L7 proxy did not load rules generation {Generation} within 2 s; new L7 flows may be refused until it does", generation);
    }

    // Re-adoption after a restart: the veth, its programs and the maps are still in the kernel; the new
    // programs replace the old ones in place and the endpoint entry is rewritten.
    private void Readopt(EndpointState s)
    {
        int ifindex = BpfFs.IfNameToIndex(s.Ifname);
        if (ifindex <= 0 || !File.Exists(s.NetnsPath))
        {
            _log.LogWarning("endpoint {Key}: interface {If} or netns {Netns} is gone; removing it", s.Key, s.Ifname, s.NetnsPath);
            _dp.DetachEndpoint(0, s.Id, NetOrder.FromAddress(IPAddress.Parse(s.Ip)));
            _store.Delete($"endpoints/{s.Key}");
            _ipam.Release(s.Key);
            return;
        }
        var existing = (_dp.Endpoints.TryLookup((uint)ifindex, out EndpointInfo info) ? info.Flags : 0u) & ~EndpointInfo.FlagAudit
            | (s.PolicyAuditMode ? EndpointInfo.FlagAudit : 0);
        _endpoints[s.Key] = new EndpointRuntime(s, ifindex,
            (existing & EndpointInfo.FlagEnforceIngress) != 0, (existing & EndpointInfo.FlagEnforceEgress) != 0,
            s.TerminatingSince is null ? "ready" : "terminating");
        _dp.AttachEndpoint(ifindex, ToInfo(s, existing), s.Identity);
    }

    private static EndpointInfo ToInfo(EndpointState s, uint flags)
    {
        var info = new EndpointInfo
        {
            EndpointId = s.Id,
            Identity = s.Identity,
            Ipv4 = NetOrder.FromAddress(IPAddress.Parse(s.Ip)),
            Flags = flags,
        };
        if (Mac.ParseUnicast(s.Mac) is { } mac && Mac.ParseUnicast(s.HostMac) is { } hostMac)
        {
            info.Mac = mac;
            info.HostMac = hostMac;
            info.Flags |= EndpointInfo.FlagDirect;
        }
        return info;
    }

    private List<EndpointState> EndpointStates() => _endpoints.Values.Select(e => e.State).ToList();

    // --- services ---

    /// <summary>Applies the Services and EndpointSlices of a file: all checked first, nothing changed if one is refused.</summary>
    public List<ServiceDto> ApplyServices(ApplyServiceRequest r)
    {
        IReadOnlyList<Resource> resources;
        try
        {
            resources = ManifestParser.Parse(r.Yaml, r.FileName);
        }
        catch (ManifestException e)
        {
            throw AgentException.BadRequest(e.Message);
        }
        var services = resources.OfType<ServiceResource>().ToList();
        var slices = resources.OfType<EndpointSliceResource>().ToList();
        var other = resources.FirstOrDefault(x => x is not (ServiceResource or EndpointSliceResource));
        if (other is not null)
            throw AgentException.BadRequest($"{other.Location}: kind: a {other.Kind} is neither a Service nor an EndpointSlice; 'trellis service apply' takes those");
        if (services.Count == 0 && slices.Count == 0)
            throw AgentException.BadRequest($"{r.FileName}: no Service or EndpointSlice in the file");
        lock (_gate)
        {
            foreach (var x in services.Cast<Resource>().Concat(slices))
                NamespaceLabels(x.Namespace!); // throws for an unknown namespace
            _services.Apply(services, r.FileName, r.Yaml);
            if (slices.Count > 0) _services.ApplySlices(slices, r.FileName, r.Yaml);
            _services.Sync(EndpointStates());
            var names = services.Select(s => (s.Namespace, s.Name)).Concat(slices.Select(s => (s.Namespace, Name: s.ServiceName))).ToHashSet();
            var result = _services.List(EndpointStates()).Where(s => names.Contains((s.Namespace, s.Name))).ToList();
            RefreshSnapshotLocked();
            return result;
        }
    }

    public void DeleteEndpointSlice(string ns, string name)
    {
        lock (_gate)
        {
            if (!_services.DeleteSlice(ns, name))
                throw AgentException.NotFound($"no EndpointSlice named '{name}' in namespace '{ns}'");
            _services.Sync(EndpointStates());
        }
    }

    /// <summary>Marks a backend address (ip:port) quarantined or in maintenance on every service that has it, or
    /// active again. Open connections are not cut; new ones avoid it.</summary>
    public void SetBackendState(BackendStateRequest r)
    {
        if (!System.Net.IPEndPoint.TryParse(r.Address, out var ep) || ep.Address.AddressFamily != System.Net.Sockets.AddressFamily.InterNetwork || ep.Port == 0)
            throw AgentException.BadRequest($"backend address '{r.Address}' is not IPv4:PORT (e.g. 10.200.0.5:8080)");
        var state = r.State switch
        {
            "active" => Services.BackendState.Active,
            "quarantined" => Services.BackendState.Quarantined,
            "maintenance" => Services.BackendState.Maintenance,
            _ => throw AgentException.BadRequest($"backend state '{r.State}' is not one of active, quarantined, maintenance (terminating comes from deleting the pod)"),
        };
        var address = $"{ep.Address}:{ep.Port}";
        lock (_gate)
        {
            if (state != Services.BackendState.Active && !_services.KnowsBackend(address, EndpointStates()))
                throw AgentException.NotFound($"no service has the backend {address} (see 'trellis service list')");
            _services.SetBackendState(address, state);
            _services.Sync(EndpointStates());
        }
    }

    public void DeleteService(string ns, string name)
    {
        lock (_gate)
        {
            if (!_services.Delete(ns, name))
                throw AgentException.NotFound($"no service named '{name}' in namespace '{ns}'");
            _services.Sync(EndpointStates());
            RefreshSnapshotLocked();
        }
    }

    public List<ServiceDto> ServiceList()
    {
        lock (_gate) return _services.List(EndpointStates());
    }

    // --- namespaces ---

    public NamespaceDto PutNamespace(NamespaceRequest r)
    {
        ValidateName(r.Name, "namespace name");
        var labels = new Labels(r.Labels);
        lock (_gate)
        {
            // The pods' new identities first: with etcd that can fail (unreachable), and then nothing has changed.
            foreach (var ep in _endpoints.Values.Where(e => e.State.Namespace == r.Name))
                _identities.GetOrAllocate(IdentityLabels.For(r.Name, new Labels(ep.State.Labels), labels), out _);
            _store.Put($"namespaces/{r.Name}", JsonSerializer.Serialize(labels.ToDictionary()));
            _namespaces[r.Name] = labels;
            // Namespace labels are part of the identity of every pod in it.
            Reidentify(_endpoints.Values.Where(e => e.State.Namespace == r.Name).ToList());
        }
        RefreshSnapshot();
        return new NamespaceDto(r.Name, labels.ToDictionary());
    }

    public List<NamespaceDto> Namespaces()
    {
        lock (_gate)
            return _namespaces.OrderBy(n => n.Key).Select(n => new NamespaceDto(n.Key, n.Value.ToDictionary())).ToList();
    }

    private Labels NamespaceLabels(string ns) =>
        _namespaces.TryGetValue(ns, out var l) ? l
        : ns == "default" ? new Labels(new Dictionary<string, string>())
        : throw AgentException.NotFound($"namespace '{ns}' does not exist; create it first (a Namespace resource in the lab file)");

    /// <summary>Moves endpoints to the identity their labels now give. Order matters so no allowed packet
    /// drops: allocate the new identities, let every affected peer's policy learn them, switch the
    /// endpoints (ipcache and endpoint map), then release the old identities and drop their entries.</summary>
    private void Reidentify(IReadOnlyList<EndpointRuntime> eps)
    {
        var moves = new List<(EndpointRuntime Ep, uint NewId)>();
        foreach (var ep in eps)
        {
            var labels = IdentityLabels.For(ep.State.Namespace, new Labels(ep.State.Labels), NamespaceLabels(ep.State.Namespace));
            var id = _identities.GetOrAllocate(labels, out _);
            if (id != ep.State.Identity) moves.Add((ep, id));
        }
        if (moves.Count == 0) return;
        RegenerateAfterIdentityChange();
        foreach (var (ep, id) in moves)
        {
            var s = ep.State with { Identity = id };
            _store.Put($"endpoints/{s.Key}", JsonSerializer.Serialize(s));
            var moved = _endpoints[s.Key] with { State = s };
            _endpoints[s.Key] = moved;
            _dp.UpdateEndpoint(ep.Ifindex, ToInfo(s, FlagsOf(moved)));
            SetEndpointIpcache(moved);
        }
        foreach (var old in moves.Select(m => m.Ep.State.Identity).Distinct())
            ReleaseIdentityIfUnused(old);
        // The moved endpoints' own policy (their selectors may match differently now) and the peers' stale entries.
        var movedKeys = moves.Select(m => m.Ep.State.Key).ToHashSet();
        var selected = SelectedByAny(Sources());
        RegenerateWhere(ep => movedKeys.Contains(ep.State.Key) || selected(ep));
    }

    /// <summary>Changes a pod's labels (as `kubectl label` does): its identity and every policy that selects
    /// it, or selects it as a peer, follow.</summary>
    public EndpointDto SetEndpointLabels(string ns, string pod, IReadOnlyDictionary<string, string?> changes)
    {
        var key = $"{ns}/{pod}";
        lock (_gate)
        {
            if (!_endpoints.TryGetValue(key, out var ep))
                throw AgentException.NotFound($"endpoint {key} does not exist on node {_opt.Node}");
            var labels = new Dictionary<string, string>(ep.State.Labels);
            foreach (var (k, v) in changes)
            {
                if (v is null) labels.Remove(k);
                else labels[k] = v;
            }
            foreach (var (k, v) in labels)
                if ((LabelValidation.LabelKeyError(k) ?? LabelValidation.LabelValueError(v)) is { } err)
                    throw AgentException.BadRequest($"labels of {key}: {k}={v}: {err}");
            // The identity first: with etcd it can fail (unreachable), and then nothing has changed.
            _identities.GetOrAllocate(IdentityLabels.For(ns, new Labels(labels), NamespaceLabels(ns)), out _);
            var s = ep.State with { Labels = labels };
            _store.Put($"endpoints/{key}", JsonSerializer.Serialize(s));
            _endpoints[key] = ep with { State = s };
            Reidentify([_endpoints[key]]);
            _services.Sync(EndpointStates());
            RefreshSnapshot();
            return ToDto(_endpoints[key]);
        }
    }

    // --- IPAM ---

    public AllocateIpResponse AllocateIp(string owner)
    {
        try
        {
            return new AllocateIpResponse(_ipam.Allocate(owner).ToString());
        }
        catch (IpamException e)
        {
            throw AgentException.Conflict(e.Message);
        }
    }

    public void ReleaseIp(string owner)
    {
        lock (_gate)
        {
            if (_endpoints.ContainsKey(owner))
                throw AgentException.Conflict($"endpoint {owner} still uses its address; delete the endpoint first");
            _ipam.Release(owner);
        }
    }

    // --- endpoints ---

    public EndpointDto PutEndpoint(CreateEndpointRequest r)
    {
        ValidateName(r.Namespace, "namespace");
        ValidateName(r.Pod, "pod name");
        var key = $"{r.Namespace}/{r.Pod}";
        if (!IPAddress.TryParse(r.Ip, out var ip) || ip.AddressFamily != System.Net.Sockets.AddressFamily.InterNetwork)
            throw AgentException.BadRequest($"endpoint {key}: ip '{r.Ip}' is not an IPv4 address");
        if ((r.Mac is null) != (r.HostMac is null))
            throw AgentException.BadRequest($"endpoint {key}: give both mac and hostMac, or neither");
        if (r.Mac is not null && Mac.ParseUnicast(r.Mac) is null)
            throw AgentException.BadRequest($"endpoint {key}: mac '{r.Mac}' is not a unicast MAC address (aa:bb:cc:dd:ee:ff)");
        if (r.HostMac is not null && Mac.ParseUnicast(r.HostMac) is null)
            throw AgentException.BadRequest($"endpoint {key}: hostMac '{r.HostMac}' is not a unicast MAC address (aa:bb:cc:dd:ee:ff)");
        if (r.ProxyVisibility is { } visibility)
        {
            try { ProxyVisibility.Parse(visibility); }
            catch (FormatException e) { throw AgentException.BadRequest($"endpoint {key}: annotation {ProxyVisibility.Annotation}: {e.Message}"); }
            if (_opt.ProxyPort == 0)
                throw AgentException.BadRequest($"endpoint {key}: annotation {ProxyVisibility.Annotation} needs the node's L7 proxy, which this agent runs without (--proxy-port 0)");
        }
        lock (_gate)
        {
            var nsLabels = NamespaceLabels(r.Namespace);
            if (!_ipam.IsAllocatedTo(ip, key))
                throw AgentException.BadRequest($"endpoint {key}: {r.Ip} was not allocated to it by this node's IPAM (POST /v1/ipam/allocate first)");
            int ifindex = BpfFs.IfNameToIndex(r.Ifname);
            if (ifindex <= 0)
                throw AgentException.BadRequest($"endpoint {key}: interface '{r.Ifname}' does not exist in the node's network namespace");
            if (_endpoints.TryGetValue(key, out var existing) && existing.State.Ifname != r.Ifname)
                throw AgentException.Conflict($"endpoint {key} already exists on interface {existing.State.Ifname}");

            var labels = new Labels(r.Labels);
            var identity = _identities.GetOrAllocate(IdentityLabels.For(r.Namespace, labels, nsLabels), out var newIdentity);
            var s = new EndpointState
            {
                PolicyAuditMode = existing?.State.PolicyAuditMode ?? false,
                Id = existing?.State.Id ?? NextEndpointId(),
                Namespace = r.Namespace,
                Pod = r.Pod,
                Labels = labels.ToDictionary(),
                Ip = ip.ToString(),
                Ifname = r.Ifname,
                NetnsPath = r.NetnsPath,
                CgroupPath = r.CgroupPath,
                Identity = identity,
                Ports = r.Ports?.ToList() ?? [],
                ProxyVisibility = r.ProxyVisibility,
                Mac = r.Mac,
                HostMac = r.HostMac,
            };
            _store.Put($"endpoints/{key}", JsonSerializer.Serialize(s));
            var rt = new EndpointRuntime(s, ifindex, false, false, "ready");
            _endpoints[key] = rt;
            // Peers learn a new identity before its first packet; then this endpoint's own policy goes in
            // before its entry and programs, so the first packet already sees the policy.
            bool othersAffected = newIdentity || s.Ports.Any(p => p.Name is not null);
            _cgroupIds.Remove(r.CgroupPath); // a pod created again under the same path has a new cgroup
            if (othersAffected) RegenerateSelectedBy(Sources(), except: key);
            Regenerate(rt, attach: true);
            _services.Sync(EndpointStates());
            if (existing is not null && existing.State.Identity != identity)
            {
                ReleaseIdentityIfUnused(existing.State.Identity);
                RegenerateAfterIdentityChange();
            }
            RefreshSnapshot();
            return ToDto(_endpoints[key]);
        }
    }

    private uint NextEndpointId()
    {
        var used = _endpoints.Values.Select(e => e.State.Id).ToHashSet();
        uint id = 1;
        while (used.Contains(id)) id++;
        return id;
    }

    public void DeleteEndpoint(string ns, string pod)
    {
        var key = $"{ns}/{pod}";
        lock (_gate)
        {
            if (!_endpoints.Remove(key, out var ep))
                throw AgentException.NotFound($"endpoint {key} does not exist on node {_opt.Node}");
            int ifindex = BpfFs.IfNameToIndex(ep.State.Ifname);
            _dp.DetachEndpoint(ifindex, ep.State.Id, NetOrder.FromAddress(IPAddress.Parse(ep.State.Ip)));
            _store.Delete($"endpoints/{key}");
            _services.Sync(EndpointStates()); // no new connection picks the departed pod
            _ipam.Release(key);
            if (ReleaseIdentityIfUnused(ep.State.Identity) || ep.State.Ports.Any(p => p.Name is not null))
                RegenerateAfterIdentityChange();
        }
        RefreshSnapshot();
    }

    /// <summary>The pod is going away (graceful deletion): its backends take no new connections from now on,
    /// while its open connections and its policy stay until the endpoint is deleted.</summary>
    public EndpointDto TerminateEndpoint(string ns, string pod)
    {
        var key = $"{ns}/{pod}";
        lock (_gate)
        {
            if (!_endpoints.TryGetValue(key, out var ep))
                throw AgentException.NotFound($"endpoint {key} does not exist on node {_opt.Node}");
            if (ep.State.TerminatingSince is null)
            {
                var state = ep.State with { TerminatingSince = DateTimeOffset.UtcNow };
                _store.Put($"endpoints/{key}", JsonSerializer.Serialize(state));
                _endpoints[key] = ep = ep with { State = state, Status = "terminating" };
                _services.Sync(EndpointStates());
            }
            return ToDto(ep);
        }
    }

    // --- node devices ---

    private void ScanDevices()
    {
        try
        {
            var interfaces = NodeAddresses.Ipv4(); // netlink: not under the lock
            lock (_gate)
                if (ScanDevicesLocked(interfaces))
                    _services.Sync(EndpointStates());
        }
        catch (Exception e)
        {
            _log.LogError(e, "scanning the node's devices failed");
        }
    }

    /// <summary>Finds the node's own devices (up, not loopback, not a pod veth, with an IPv4 address), attaches the
    /// NodePort load balancer to new ones and gives their addresses the host identity. Returns whether the
    /// node's addresses changed. One netlink address dump: its cost does not grow with the pods.</summary>
    private bool ScanDevicesLocked(IReadOnlyList<InterfaceAddresses>? interfaces = null)
    {
        var found = new List<DeviceDto>();
        var addresses = new List<uint> { NetOrder.FromAddress(_ipam.RouterIp) };
        var podIfs = _endpoints.Values.Select(e => e.State.Ifname).ToHashSet();
        foreach (var nic in interfaces ?? NodeAddresses.Ipv4())
        {
            if (nic.Loopback || !nic.Up || nic.Name.StartsWith("lxc", StringComparison.Ordinal) || podIfs.Contains(nic.Name))
                continue;
            found.Add(new DeviceDto(nic.Name, nic.Ifindex, nic.Addresses.Select(a => a.ToString()).ToList()));
            addresses.AddRange(nic.Addresses.Select(NetOrder.FromAddress));
        }
        foreach (var d in found.Where(d => !_devices.Any(o => o.Ifindex == d.Ifindex)))
        {
            _dp.AttachNetdev(d.Ifindex);
            _log.LogInformation("device {Name} (ifindex {Index}, {Addresses}): NodePort load balancer attached", d.Name, d.Ifindex, string.Join(", ", d.Addresses));
        }
        foreach (var a in found.SelectMany(d => d.Addresses).Except(_devices.SelectMany(d => d.Addresses)))
            _dp.SetIpcache(NetOrder.FromAddress(IPAddress.Parse(a)), Identities.Host);
        foreach (var a in _devices.SelectMany(d => d.Addresses).Except(found.SelectMany(d => d.Addresses)))
            _dp.DeleteIpcache(IpcacheKey.Host(NetOrder.FromAddress(IPAddress.Parse(a))));
        _devices = found;
        return _services.SetNodeAddresses(addresses);
    }

    private bool ReleaseIdentityIfUnused(uint id)
    {
        if (_endpoints.Values.Any(e => e.State.Identity == id)) return false;
        _identities.Release(id);
        return true;
    }

    public List<EndpointDto> Endpoints()
    {
        lock (_gate)
            return _endpoints.Values.OrderBy(e => e.State.Id).Select(ToDto).ToList();
    }

    private static EndpointDto ToDto(EndpointRuntime e) => new(
        e.State.Id, e.State.Namespace, e.State.Pod, e.State.Ip, e.State.Identity, e.State.Labels,
        e.IngressEnforced, e.EgressEnforced, e.State.Ifname, e.Ifindex, e.Status, e.State.NetnsPath, e.State.CgroupPath,
        e.State.PolicyAuditMode);

    public List<IdentityDto> IdentityList()
    {
        lock (_gate)
            return _identities.All.OrderBy(i => i.Id)
                .Select(i => new IdentityDto(i.Id, i.Labels.ToDictionary(), _endpoints.Values.Count(e => e.State.Identity == i.Id)))
                .ToList();
    }

    // --- policy ---

    public ApplyPolicyResponse ApplyPolicy(ApplyPolicyRequest r)
    {
        IReadOnlyList<Resource> resources;
        IReadOnlyList<ManifestWarning> warnings;
        try
        {
            resources = ManifestParser.Parse(r.Yaml, r.FileName, new ManifestParserOptions { AllowL7Rules = _opt.ProxyPort != 0 }, out warnings);
        }
        catch (ManifestException e)
        {
            throw AgentException.BadRequest(e.Message);
        }
        var policies = resources.OfType<PolicyResource>().ToList();
        var other = resources.FirstOrDefault(x => x is not PolicyResource);
        if (other is not null)
            throw AgentException.BadRequest($"{other.Location.File}:{other.Location.Line}:{other.Location.Column}: kind: a {other.Kind} is not a policy; 'trellis policy apply' takes CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy and NetworkPolicy");
        if (policies.Count == 0)
            throw AgentException.BadRequest($"{r.FileName}: no policy in the file");
        var dup = policies.GroupBy(p => (p.Kind, p.Namespace, p.Name)).FirstOrDefault(g => g.Count() > 1);
        if (dup is not null)
            throw AgentException.BadRequest($"{r.FileName}: {dup.Key.Kind} {dup.Key.Namespace}/{dup.Key.Name} is defined {dup.Count()} times");
        lock (_gate)
        {
            foreach (var p in policies.Where(p => p.Namespace is not null && p.Namespace != "default" && !_namespaces.ContainsKey(p.Namespace)))
                throw AgentException.NotFound($"{p.Location.File}:{p.Location.Line}:{p.Location.Column}: metadata.namespace: namespace '{p.Namespace}' does not exist");
            var keys = policies.Select(p => (p.Kind, p.Namespace, p.Name)).ToHashSet();
            var previous = _policies.All.Where(p => keys.Contains((p.Resource.Kind, p.Resource.Namespace, p.Resource.Name)))
                .Select(p => new CompiledPolicySource(p.Stored.Id, p.Resource)).ToList();
            var applied = _policies.Apply(policies, r.FileName, r.Yaml, DateTimeOffset.UtcNow);
            // New CIDR identities go into the ipcache before any policy refers to them; unused ones leave after.
            var cidrs = PolicyCompiler.ReferencedCidrs(Sources());
            _cidrs.Add(cidrs);
            RegenerateSelectedBy([.. previous, .. applied.Select(a => new CompiledPolicySource(a.Stored.Id, a.Resource))]);
            _cidrs.Sync(cidrs);
            RefreshSnapshot();
            return new ApplyPolicyResponse(applied.Select(a => $"{a.Stored.Kind}/{(a.Stored.Namespace is null ? "" : a.Stored.Namespace + "/")}{a.Stored.Name}").ToList(),
                warnings.Select(w => w.ToString()).ToList());
        }
    }

    public void DeletePolicy(string? ns, string name)
    {
        lock (_gate)
        {
            if (ns is not null && ns != "default" && !_namespaces.ContainsKey(ns))
                throw AgentException.NotFound($"namespace '{ns}' does not exist");
            var deleted = _policies.Delete(ns, name) ?? throw AgentException.NotFound(ns is null
                ? $"no CiliumClusterwideNetworkPolicy named '{name}'"
                : $"no policy named '{name}' in namespace '{ns}'");
            RegenerateSelectedBy([new CompiledPolicySource(deleted.Stored.Id, deleted.Resource)]);
            _cidrs.Sync(PolicyCompiler.ReferencedCidrs(Sources()));
        }
        RefreshSnapshot();
    }

    public List<PolicyDto> PolicyList()
    {
        lock (_gate)
            return _policies.All.Select(p => new PolicyDto(p.Stored.Id, p.Stored.Kind, p.Stored.Name, p.Stored.Namespace,
                p.Resource.Rules.Count, p.Stored.FileName, p.Stored.AppliedAt)).ToList();
    }

    public PolicyDetailDto GetPolicy(string? ns, string name)
    {
        lock (_gate)
        {
            var p = _policies.All.FirstOrDefault(x => x.Stored.Name == name && x.Stored.Namespace == ns)
                ?? throw AgentException.NotFound(ns is null ? $"no CiliumClusterwideNetworkPolicy named '{name}'" : $"no policy named '{name}' in namespace '{ns}'");
            var dto = new PolicyDto(p.Stored.Id, p.Stored.Kind, p.Stored.Name, p.Stored.Namespace, p.Resource.Rules.Count, p.Stored.FileName, p.Stored.AppliedAt);
            return new PolicyDetailDto(dto, p.Stored.Yaml); // the policy's own document
        }
    }

    public EndpointDetailDto GetEndpoint(string ns, string pod)
    {
        lock (_gate)
        {
            if (!_endpoints.TryGetValue($"{ns}/{pod}", out var ep))
                throw AgentException.NotFound($"endpoint {ns}/{pod} does not exist on node {_opt.Node}");
            var policyNames = _policies.All.ToDictionary(p => p.Stored.Id);
            var rows = new List<PolicyEntryDto>();
            foreach (var (k, v) in ep.Installed?.Entries ?? new Dictionary<Trellis.Policy.PolicyKey, PolicyEntry>())
            {
                IReadOnlyList<string> peer = k.Identity switch
                {
                    0 => ["(any)"],
                    Identities.Host => ["reserved:host"],
                    Identities.World => ["reserved:world"],
                    var id when _cidrs.CidrOf(id) is { } cidr => [$"cidr:{cidr}", "reserved:world"],
                    var id => _identities.LabelsOf(id)?.Select(l => $"{l.Key}={l.Value}").ToList() ?? [$"identity {id}"],
                };
                policyNames.TryGetValue(v.PolicyId, out var pol);
                rows.Add(new PolicyEntryDto(k.Direction.ToString().ToUpperInvariant(), k.Identity, peer,
                    k.Proto == L4Proto.Any ? "ANY" : k.Proto.ToString().ToUpperInvariant(),
                    k.Port == 0 && k.EndPort >= (k.Proto == L4Proto.Icmp ? 255 : 65535) ? "any" : k.Port == k.EndPort ? k.Port.ToString() : $"{k.Port}-{k.EndPort}",
                    v.Deny ? "DENY" : "ALLOW", pol?.Stored.Name, pol?.Stored.Namespace));
            }
            var selecting = PolicyCompiler.SelectingRules(new IdentityInfo(ep.State.Identity, _identities.LabelsOf(ep.State.Identity)!), Sources())
                .Select(r => new SelectingRuleDto(r.Kind.ToString(), r.Name, r.Namespace, r.RuleIndex, r.Description,
                    r.Ingress, r.Egress, r.IngressDefaultDeny, r.EgressDefaultDeny, r.Location.ToString())).ToList();
            return new EndpointDetailDto(ToDto(ep), rows, selecting);
        }
    }

    /// <summary>Answers "would this connection be allowed, and by which rule" from the policy installed
    /// in the kernel, with the same deny-wins, wildcard and range rules the datapath applies.</summary>
    public TraceResponse Trace(TraceRequest r)
    {
        if (r.Port is < 0 or > 65535)
            throw AgentException.BadRequest($"port: {r.Port} is not 0-65535");
        if (!Enum.TryParse<L4Proto>(r.Protocol, ignoreCase: true, out var proto) || proto == L4Proto.Any)
            throw AgentException.BadRequest($"protocol: '{r.Protocol}' is not TCP, UDP, SCTP or ICMP");
        lock (_gate)
        {
            var (src, srcId) = Party(r.FromNamespace, r.FromPod, r.FromIp, "from");
            var (dst, dstId) = Party(r.ToNamespace, r.ToPod, r.ToIp, "to");
            var names = _policies.All.ToDictionary(p => p.Stored.Id);
            var steps = new List<TraceStep>
            {
                Step(src, Direction.Egress, dstId, proto, (ushort)r.Port, names, r.FromIp ?? ""),
                Step(dst, Direction.Ingress, srcId, proto, (ushort)r.Port, names, r.ToIp ?? ""),
            };
            return new TraceResponse(steps.All(s => s.Allowed), srcId, dstId, steps);
        }
    }

    private (EndpointRuntime? Endpoint, uint Identity) Party(string? ns, string? pod, string? ip, string side)
    {
        if (pod is not null)
        {
            var key = $"{ns ?? "default"}/{pod}";
            if (!_endpoints.TryGetValue(key, out var ep))
                throw AgentException.NotFound($"{side}: pod {key} is not an endpoint on node {_opt.Node}");
            return (ep, ep.State.Identity);
        }
        if (ip is null || !IPAddress.TryParse(ip, out var addr) || addr.AddressFamily != System.Net.Sockets.AddressFamily.InterNetwork)
            throw AgentException.BadRequest($"{side}: give a pod or an IPv4 address");
        var local = _endpoints.Values.FirstOrDefault(e => e.State.Ip == addr.ToString());
        if (local is not null) return (local, local.State.Identity);
        if (addr.Equals(_ipam.RouterIp)) return (null, Identities.Host);
        // Longest CIDR identity covering the address, as the kernel's LPM ipcache would answer.
        var b = addr.GetAddressBytes();
        uint hostOrder = (uint)(b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3]);
        var best = _cidrs.Identities.Select(c => (c, Prefix: Ipv4Prefix.Parse(c.Cidr)))
            .Where(x => x.Prefix.Contains(hostOrder)).OrderByDescending(x => x.Prefix.Length).FirstOrDefault();
        return (null, best.c?.Id ?? Identities.World);
    }

    private static TraceStep Step(EndpointRuntime? ep, Direction dir, uint peer, L4Proto proto, ushort port,
        Dictionary<uint, ActivePolicy> names, string otherName)
    {
        var what = dir == Direction.Egress ? "egress of" : "ingress of";
        if (ep?.Installed is not { } policy)
            return new TraceStep(dir.ToString().ToUpperInvariant(), otherName, false, false, true, $"{what} {otherName}: not a local endpoint, not decided here", null, null, null);
        var name = $"{ep.State.Namespace}/{ep.State.Pod}";
        var v = PolicyEvaluator.Evaluate(policy, dir, peer, proto, port);
        names.TryGetValue(v.Entry?.PolicyId ?? 0, out var pol);
        bool enforced = dir == Direction.Ingress ? policy.IngressEnforced : policy.EgressEnforced;
        bool audit = ep.State.PolicyAuditMode;
        string verdict = (v.Allowed, v.Entry) switch
        {
            (true, { } e) => $"allowed by {(e.Deny ? "" : "rule ")}{v.Key}",
            (true, null) => enforced ? "allowed" : "allowed (no policy selects this direction)",
            (false, { Deny: true }) => $"denied by deny rule {v.Key}",
            _ => "denied: no rule allows it (default deny)",
        };
        if (!v.Allowed && audit) verdict += " — endpoint in audit mode: would pass, reported as AUDIT";
        if (v.Allowed && policy.HttpRulesFor(dir, peer, proto, port) is { } http)
            verdict += policy.VisibilityOnly.Count > 0 && http.All(h => h.IsAllowAll)
                ? ", through the node's L7 proxy for visibility (every request allowed and logged)"
                : $", through the node's L7 proxy: each HTTP request must match one of {string.Join(", ", http)}";
        return new TraceStep(dir.ToString().ToUpperInvariant(), name, true, enforced, v.Allowed, $"{what} {name}: {verdict}",
            pol?.Stored.Name, pol?.Stored.Namespace, v.Key?.ToString());
    }

    // --- regeneration ---

    private void RegenerateAll(string? except = null) =>
        RegenerateWhere(ep => ep.State.Key != except);

    /// <summary>Recompiles the endpoints <paramref name="affected"/> picks; the others keep their maps untouched.
    /// The changed maps are swapped in with one batch (see <see cref="NodeDatapath.ReplacePolicies"/>), then each
    /// endpoint's flags follow.</summary>
    private void RegenerateWhere(Func<EndpointRuntime, bool> affected)
    {
        var inputs = Inputs();
        var sources = Sources();
        var shared = new Dictionary<string, EndpointPolicy>();
        var plans = _endpoints.Values.Where(affected)
            .Select(ep => (Ep: ep, Next: CompileFor(ep, inputs, sources, shared))).ToList();
        if (_opt.ProxyPort != 0)
        {
            // New or changed HTTP rules reach the proxy before the datapath redirects to them.
            var upcoming = plans.Where(p => p.Next.HttpRules.Count > 0 && (p.Ep.Installed is null || !SameHttpRules(p.Ep.Installed, p.Next)))
                .ToDictionary(p => p.Ep.State.Key, p => p.Next);
            if (upcoming.Count > 0)
                PublishProxyPolicyLocked(upcoming, wait: true);
        }
        var changed = plans.Where(p => !Unchanged(p.Ep, p.Next)).ToList();
        foreach (var (ep, _) in changed)
            // Spliced sockets skip the TC programs: take this pod's out so the new policy applies to their packets.
            _dp.EvictAcceleratedSockets(NetOrder.FromAddress(IPAddress.Parse(ep.State.Ip)));
        // Policy first, then the flags that turn enforcement on: never a moment enforcing an empty map.
        _dp.ReplacePolicies(changed.Select(p => (p.Ep.State.Id, MapEntries(p.Next))).ToList());
        PolicyMapWrites += changed.Count;
        foreach (var (ep, next) in changed)
            Commit(ep, next);
        PublishProxyPolicyLocked();
    }

    private bool SelectedBy(uint identity, IReadOnlyList<CompiledPolicySource> policies) =>
        policies.Count > 0 && _identities.LabelsOf(identity) is { } labels
        && PolicyCompiler.SelectingRules(new IdentityInfo(identity, labels), policies).Count > 0;

    /// <summary><see cref="SelectedBy(uint, IReadOnlyList{CompiledPolicySource})"/> once per identity, not per endpoint:
    /// endpoints sharing labels share the answer.</summary>
    private Func<EndpointRuntime, bool> SelectedByAny(IReadOnlyList<CompiledPolicySource> policies)
    {
        var byIdentity = new Dictionary<uint, bool>();
        return ep => byIdentity.TryGetValue(ep.State.Identity, out var hit) ? hit : byIdentity[ep.State.Identity] = SelectedBy(ep.State.Identity, policies);
    }

    // A policy's entries only land in the maps of the endpoints it selects; a change to the set of
    // identities (or named ports) only matters to endpoints some policy selects.
    private void RegenerateSelectedBy(IReadOnlyList<CompiledPolicySource> policies, string? except = null)
    {
        var selected = SelectedByAny(policies);
        RegenerateWhere(ep => ep.State.Key != except && selected(ep));
    }

    private void RegenerateAfterIdentityChange()
    {
        var selected = SelectedByAny(Sources());
        RegenerateWhere(ep => selected(ep) || ep.Installed is null);
    }

    private PolicyInputs Inputs()
    {
        var portsByIdentity = _endpoints.Values.GroupBy(e => e.State.Identity)
            .ToDictionary(g => g.Key, g => (IReadOnlyList<NamedPort>)g.SelectMany(e => NamedPorts(e.State)).Distinct().ToList());
        return new PolicyInputs(_identities.All, _cidrs.Identities,
            id => portsByIdentity.TryGetValue(id, out var p) ? p : []);
    }

    private static IEnumerable<NamedPort> NamedPorts(EndpointState s) =>
        s.Ports.Where(p => !string.IsNullOrEmpty(p.Name))
            .Select(p => new NamedPort(p.Name!, (ushort)p.Port, Enum.TryParse<L4Proto>(p.Protocol, ignoreCase: true, out var proto) ? proto : L4Proto.Tcp));

    /// <summary>Compiles and installs one endpoint's policy; with <paramref name="attach"/>, also attaches its programs.</summary>
    private EndpointPolicy Regenerate(EndpointRuntime ep, bool attach)
    {
        var compiled = CompileFor(ep, Inputs(), Sources(), null);
        if (attach && _opt.ProxyPort != 0 && compiled.HttpRules.Count > 0)
            PublishProxyPolicyLocked(new Dictionary<string, EndpointPolicy> { [ep.State.Key] = compiled }, wait: true);
        if (!attach && Unchanged(ep, compiled))
            return compiled;
        PolicyMapWrites++;
        if (!attach)
            _dp.EvictAcceleratedSockets(NetOrder.FromAddress(IPAddress.Parse(ep.State.Ip)));
        _dp.ReplacePolicy(ep.State.Id, MapEntries(compiled));
        if (attach)
        {
            var updated = WithPolicy(ep, compiled);
            _dp.AttachEndpoint(ep.Ifindex, ToInfo(ep.State, FlagsOf(updated)), ep.State.Identity, IngressL7(compiled));
            _endpoints[ep.State.Key] = updated;
        }
        else
            Commit(ep, compiled);
        return compiled;
    }

    private static EndpointRuntime WithPolicy(EndpointRuntime ep, EndpointPolicy compiled) =>
        ep with { IngressEnforced = compiled.IngressEnforced, EgressEnforced = compiled.EgressEnforced, Installed = compiled };

    private static bool Unchanged(EndpointRuntime ep, EndpointPolicy compiled) =>
        ep.Installed is { } old && old.IngressEnforced == compiled.IngressEnforced && old.EgressEnforced == compiled.EgressEnforced
        && old.Entries.Count == compiled.Entries.Count && old.Entries.All(kv => compiled.Entries.TryGetValue(kv.Key, out var v) && v == kv.Value)
        && SameHttpRules(old, compiled);

    private static IReadOnlyDictionary<Trellis.Datapath.PolicyKey, Trellis.Datapath.PolicyValue> MapEntries(EndpointPolicy compiled) =>
        PolicyMapBuilder.Build(compiled.Entries.Select(e => new PolicyStatement(
            e.Key.Identity, (TrafficDirection)e.Key.Direction, (byte)e.Key.Proto,
            e.Key.Port, e.Key.EndPort, e.Value.PolicyId, e.Value.Deny, compiled.Redirects(e.Key), compiled.VisibilityOnly.Contains(e.Key))));

    /// <summary>After its new map is in: the endpoint's flags, and its ipcache entry when its L7 ingress changed.</summary>
    private void Commit(EndpointRuntime ep, EndpointPolicy compiled)
    {
        var updated = WithPolicy(ep, compiled);
        _dp.UpdateEndpoint(ep.Ifindex, ToInfo(ep.State, FlagsOf(updated)));
        // Clients on this node look at this flag to send connections to the proxy for this endpoint's ingress rules.
        if (ep.Installed is null || IngressL7(ep.Installed) != IngressL7(compiled))
            SetEndpointIpcache(updated);
        _endpoints[ep.State.Key] = updated;
    }

    private EndpointPolicy CompileFor(EndpointRuntime ep, PolicyInputs inputs, IReadOnlyList<CompiledPolicySource> sources,
        Dictionary<string, EndpointPolicy>? shared)
    {
        var subject = new IdentityInfo(ep.State.Identity, _identities.LabelsOf(ep.State.Identity)!);
        var ports = NamedPorts(ep.State).ToList();
        // Endpoints with the same identity, named ports and visibility compile to the same policy: compile once.
        var cacheKey = $"{ep.State.Identity}|{string.Join(',', ports.Select(p => $"{p.Name}:{p.Port}/{p.Protocol}"))}|{ep.State.ProxyVisibility}";
        if (shared is null || !shared.TryGetValue(cacheKey, out var compiled))
        {
            compiled = PolicyCompiler.Compile(subject, ports, inputs, sources);
            if (ep.State.ProxyVisibility is { } visibility)
                compiled = ProxyVisibility.Apply(compiled, ProxyVisibility.Parse(visibility));
            if (shared is not null) shared[cacheKey] = compiled;
        }
        return compiled;
    }

    private static bool IngressL7(EndpointPolicy p) => p.HttpRules.Keys.Any(k => k.Direction == Direction.Ingress);

    private static bool SameHttpRules(EndpointPolicy a, EndpointPolicy b) =>
        a.HttpRules.Count == b.HttpRules.Count
        && a.HttpRules.All(kv => b.HttpRules.TryGetValue(kv.Key, out var rules) && rules.SequenceEqual(kv.Value));

    private void SetEndpointIpcache(EndpointRuntime e) =>
        _dp.SetIpcache(NetOrder.FromAddress(IPAddress.Parse(e.State.Ip)), e.State.Identity,
            IpcacheValue.FlagLocalEndpoint | (e.Installed is { } p && IngressL7(p) ? IpcacheValue.FlagL7Ingress : 0), e.State.Id);

    private List<CompiledPolicySource> Sources() => _policies.All.Select(p => new CompiledPolicySource(p.Stored.Id, p.Resource)).ToList();

    private static uint FlagsOf(EndpointRuntime e) =>
        (e.IngressEnforced ? EndpointInfo.FlagEnforceIngress : 0) | (e.EgressEnforced ? EndpointInfo.FlagEnforceEgress : 0)
        | (e.State.PolicyAuditMode ? EndpointInfo.FlagAudit : 0)
        | (HasDeny(e, Direction.Ingress) ? EndpointInfo.FlagDenyIngress : 0)
        | (HasDeny(e, Direction.Egress) ? EndpointInfo.FlagDenyEgress : 0)
        | (e.Installed is { } p && IngressL7(p) ? EndpointInfo.FlagRedirectIngress : 0)
        | (e.Installed is { } q && q.HttpRules.Keys.Any(k => k.Direction == Direction.Egress) ? EndpointInfo.FlagRedirectEgress : 0);

    private static bool HasDeny(EndpointRuntime e, Direction d) =>
        e.Installed?.Entries.Any(kv => kv.Value.Deny && kv.Key.Direction == d) ?? false;

    // --- audit mode ---

    /// <summary>Node-wide settings: policy audit mode (policy drops pass and are reported with verdict AUDIT) and
    /// flow events on/off. Persisted; the datapath's config entry is rewritten whole.</summary>
    public ConfigDto SetConfig(ConfigDto c)
    {
        lock (_gate)
        {
            if (c.PolicyAuditMode is { } audit) _store.Put("config/policy-audit-mode", audit ? "true" : "false");
            if (c.FlowEvents is { } events) _store.Put("config/flow-events", events ? "true" : "false");
            if (c.SocketAcceleration is { } accel) _store.Put("config/socket-acceleration", accel ? "true" : "false");
            ApplyNodeConfig();
            if (c.SocketAcceleration == false)
                _dp.EvictAcceleratedSockets(); // spliced connections go back through TCP/IP and TC
            return Config();
        }
    }

    private void ApplyNodeConfig() =>
        _dp.SetNodeConfig(audit: _store.Get("config/policy-audit-mode") == "true", flowEvents: _store.Get("config/flow-events") != "false",
            proxyPort: _opt.ProxyPort, socketAcceleration: _store.Get("config/socket-acceleration") == "true");

    public ConfigDto Config() => new(_dp.AuditMode, _dp.FlowEvents, _dp.SocketAcceleration);

    public EndpointDto SetEndpointConfig(string ns, string pod, EndpointConfigDto c)
    {
        var key = $"{ns}/{pod}";
        lock (_gate)
        {
            if (!_endpoints.TryGetValue(key, out var ep))
                throw AgentException.NotFound($"endpoint {key} does not exist on node {_opt.Node}");
            var s = ep.State with { PolicyAuditMode = c.PolicyAuditMode };
            _store.Put($"endpoints/{key}", JsonSerializer.Serialize(s));
            var updated = ep with { State = s };
            _endpoints[key] = updated;
            _dp.UpdateEndpoint(ep.Ifindex, ToInfo(s, FlagsOf(updated)));
            return ToDto(updated);
        }
    }

    private void RefreshSnapshot()
    {
        lock (_gate) RefreshSnapshotLocked();
    }

    private void RefreshSnapshotLocked()
    {
        if (_monitor is null) return;
        PublishProxyPolicyLocked();
        {
            var byIp = _endpoints.Values.ToFrozenDictionary(
                e => NetOrder.FromAddress(IPAddress.Parse(e.State.Ip)),
                e => new EndpointRef(e.State.Namespace, e.State.Pod, e.State.Labels.OrderBy(l => l.Key).Select(l => $"k8s:{l.Key}={l.Value}").ToList(), e.State.Identity));
            var labels = _identities.All.ToDictionary(i => i.Id, i => (IReadOnlyList<string>)i.Labels.Select(l => $"k8s:{l.Key}={l.Value}").ToList());
            labels[Identities.Host] = ["reserved:host"];
            labels[Identities.World] = ["reserved:world"];
            foreach (var c in _cidrs.Identities)
                labels[c.Id] = [$"cidr:{c.Cidr}", "reserved:world"];
            var pols = _policies.All.ToFrozenDictionary(p => p.Stored.Id, p => new PolicyRef(p.Stored.Name, p.Stored.Namespace));
            var byCgroup = new Dictionary<ulong, (uint, uint)>();
            var cgroupIds = new Dictionary<string, ulong>();
            foreach (var e in _endpoints.Values)
                if (e.State.CgroupPath is { Length: > 0 } cg
                    && (_cgroupIds.TryGetValue(cg, out var known) ? known : NativeFs.InodeOf(cg)) is { } id)
                {
                    cgroupIds[cg] = id;
                    byCgroup[id] = (NetOrder.FromAddress(IPAddress.Parse(e.State.Ip)), e.State.Identity);
                }
            _cgroupIds = cgroupIds; // endpoints gone are dropped
            var frontends = new Dictionary<uint, string>();
            foreach (var (stored, svc) in _services.All)
                for (int i = 0; i < svc.Ports.Count; i++)
                {
                    var name = $"{stored.Namespace}/{stored.Name}:{svc.Ports[i].Name ?? svc.Ports[i].Port.ToString()}";
                    frontends[Services.ServiceManager.FrontendId(stored.Id, i, nodePort: false)] = name;
                    frontends[Services.ServiceManager.FrontendId(stored.Id, i, nodePort: true)] = name;
                }
            _monitor.Snapshot = new EnrichmentSnapshot(byIp, labels.ToFrozenDictionary(), pols, byCgroup.ToFrozenDictionary(), frontends.ToFrozenDictionary());
        }
    }

    private void CollectConntrack()
    {
        try
        {
            ulong now = (ulong)(Stopwatch.GetTimestamp() * (1e9 / Stopwatch.Frequency));
            int n = _dp.CollectConntrack(now);
            if (n > 0) _log.LogDebug("conntrack GC removed {N} expired entries", n);
        }
        catch (Exception e)
        {
            _log.LogError(e, "conntrack GC failed");
        }
    }

    // --- status ---

    public StatusResponse Status()
    {
        lock (_gate)
        {
            var attached = _endpoints.Count;
            return new StatusResponse(
                _opt.Node,
                typeof(NodeAgent).Assembly.GetName().Version?.ToString() ?? "0",
                StartedAt,
                KernelRelease(),
                _ipam.Cidr,
                _ipam.RouterIp.ToString(),
                _opt.PinRoot,
                _opt.StateDir,
                Features.Probe().Select(f => new FeatureDto(f.Name, f.Supported)).ToList(),
                _endpoints.Count,
                _identities.All.Count,
                _policies.All.Count,
                _dp.ProgramInfo().Select(p => new ProgramDto(p.Name, p.Id, p.RunTimeNs, p.RunCount, attached)).ToList(),
                _dp.Fill().Select(f => new MapDto(f.Name, f.Entries, f.MaxEntries)).ToList(),
                _dp.Counter(Counters.Forwarded),
                _dp.Counter(Counters.Dropped),
                _dp.Counter(Counters.Audit),
                _dp.Counter(Counters.LbTranslated),
                _dp.Counter(Counters.LbNoBackend),
                _services.All.Count,
                _dp.AuditMode,
                _dp.Counter(Counters.EventsLost),
                _monitor.Received,
                PolicyMapWrites,
                Flows.Count,
                Flows.Capacity,
                _devices,
                _dp.Counter(Counters.LbNat),
                ProxyStatus(),
                _dp.SocketAcceleration,
                _dp.AcceleratedSockets,
                _cluster?.Status() ?? Cluster.ClusterMembership.Embedded());
        }
    }

    // --- metrics (read by Metrics/AgentMetrics at every scrape) ---

    /// <summary>Counts under the lock (briefly), datapath maps and counters read outside it.</summary>
    public Metrics.AgentHealth Health()
    {
        int endpoints, identities, cidrIdentities, policies, services;
        ProxyStatusDto proxy;
        lock (_gate)
        {
            proxy = ProxyStatus();
            endpoints = _endpoints.Count;
            identities = _identities.All.Count;
            cidrIdentities = _cidrs.Identities.Count;
            policies = _policies.All.Count;
            services = _services.All.Count;
        }
        return new Metrics.AgentHealth(endpoints, identities, cidrIdentities, policies, services, _dp.Fill(), _dp.ProgramInfo(),
            new Metrics.DatapathCounters(_dp.Counter(Counters.Forwarded), _dp.Counter(Counters.Dropped), _dp.Counter(Counters.Audit),
                _dp.Counter(Counters.LbTranslated), _dp.Counter(Counters.LbNoBackend), _dp.Counter(Counters.LbNat), _dp.Counter(Counters.EventsLost)),
            _monitor.Received, PolicyMapWrites, proxy);
    }

    private static string KernelRelease()
    {
        try { return File.ReadAllText("/proc/sys/kernel/osrelease").Trim(); }
        catch (IOException) { return Environment.OSVersion.VersionString; }
    }

    internal static void ValidateName(string name, string what)
    {
        if (string.IsNullOrEmpty(name) || name.Length > 63 || !name.All(c => c is (>= 'a' and <= 'z') or (>= '0' and <= '9') or '-')
            || name[0] == '-' || name[^1] == '-')
            throw AgentException.BadRequest($"{what} '{name}' is not a valid name (lowercase letters, digits and '-', at most 63)");
    }

    public void Dispose()
    {
        _cluster?.Dispose(); // the node's keys expire after the lease TTL; the datapath keeps enforcing
        _proxy?.Dispose(); // the proxy keeps running: the next agent adopts it
        _l7?.Dispose();
        _ctGc?.Dispose();
        _deviceScan?.Dispose();
        _monitor?.Dispose();
        _dp?.Dispose(); // pinned maps and attached programs stay: the datapath keeps enforcing
    }
}
