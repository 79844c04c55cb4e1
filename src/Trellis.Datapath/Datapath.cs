using Trellis.Bpf;

namespace Trellis.Datapath;

public sealed record MapFill(string Name, int Entries, uint MaxEntries);

/// <summary>The node's datapath: the lxc object loaded with every map pinned under <see cref="PinRoot"/>.
/// Loading again (agent restart) reuses the pinned maps, so state and enforcement carry over;
/// re-attaching replaces the programs on each veth atomically.</summary>
public sealed class NodeDatapath : IDisposable
{
    private readonly BpfObject _obj;
    private readonly BpfObject _sock;
    private readonly BpfObject _netdev;
    private readonly Lock _policyGate = new();

    public string PinRoot { get; }
    public BpfMap Ipcache { get; }
    public BpfMap Endpoints { get; }
    /// <summary>trellis_lxc: local endpoints by IPv4 → host-side ifindex, for delivery straight into a pod.</summary>
    public BpfMap Lxc { get; }
    public BpfMap Policy { get; }
    public BpfMap Conntrack { get; }
    public BpfMap Events { get; }
    public BpfMap Counters { get; }
    public BpfMap Config { get; }
    /// <summary>trellis_policy_gen: bumped after every change a policy verdict depends on (<see cref="BumpPolicyGen"/>).</summary>
    public BpfMap PolicyGen { get; }
    public BpfProgram FromContainer { get; }
    public BpfProgram ToContainer { get; }

    public BpfMap Lb4Frontends { get; }
    public BpfMap Lb4Backends { get; }
    public BpfMap Lb4Nat { get; }
    public BpfMap Lb4Maglev { get; }
    /// <summary>trellis_sock_accel: spliced same-node TCP sockets (sockhash).</summary>
    public BpfMap SockAccel { get; }
    public BpfProgram FromNetdev { get; }

    private static readonly (string Program, CgroupAttachType Type)[] SockPrograms =
    [
        ("sock4_connect", CgroupAttachType.Inet4Connect),
        ("sock4_sendmsg", CgroupAttachType.Udp4Sendmsg),
        ("sock4_recvmsg", CgroupAttachType.Udp4Recvmsg),
        ("sock4_getpeername", CgroupAttachType.Inet4Getpeername),
    ];

    // Attached only while socket acceleration is on: with a sock_ops program on the cgroup every TCP socket runs it
    // at ~9 points of its life (~0.5 µs per connection), which a node without acceleration need not pay.
    private static readonly (string Program, CgroupAttachType Type) SockAccelOps = ("sock_accel_ops", CgroupAttachType.SockOps);

    // Programs earlier versions attached to the cgroup, detached when found (cgroup programs outlive the agent).
    private static readonly (string Program, CgroupAttachType Type)[] RetiredSockPrograms =
    [
        ("sock_release", CgroupAttachType.InetSockRelease), // service translations now live in socket storage
    ];

    private string? _sockCgroup;

    private NodeDatapath(BpfObject obj, BpfObject sock, BpfObject netdev, string pinRoot)
    {
        _obj = obj;
        _sock = sock;
        _netdev = netdev;
        Lb4Frontends = sock.Map(Names.Lb4Frontends);
        Lb4Backends = sock.Map(Names.Lb4Backends);
        Lb4Nat = netdev.Map(Names.Lb4Nat);
        Lb4Maglev = netdev.Map(Names.Lb4Maglev);
        SockAccel = sock.Map(Names.SockAccel);
        FromNetdev = netdev.Program(Names.FromNetdev);
        PinRoot = pinRoot;
        Ipcache = obj.Map(Names.Ipcache);
        Endpoints = obj.Map(Names.Endpoints);
        Lxc = obj.Map(Names.Lxc);
        Policy = obj.Map(Names.Policy);
        Conntrack = obj.Map(Names.Conntrack);
        Events = obj.Map(Names.Events);
        Counters = obj.Map(Names.Counters);
        Config = obj.Map(Names.Config);
        PolicyGen = obj.Map(Names.PolicyGen);
        FromContainer = obj.Program(Names.FromContainer);
        ToContainer = obj.Program(Names.ToContainer);
    }

    public static readonly string[] RequiredFeatures =
    [
        "prog:sched_cls (tc)", "map:lpm_trie", "map:hash_of_maps", "map:lru_hash", "map:ringbuf", "map:percpu_array",
    ];

    /// <summary>Loads the datapath, pinning maps (and programs) under <paramref name="pinRoot"/> on bpffs.</summary>
    public static NodeDatapath Load(string pinRoot)
    {
        if (!BpfFs.IsRoot)
            throw new DatapathException("the Trellis datapath needs root (CAP_BPF, CAP_NET_ADMIN); run as root");
        BpfFs.EnsureMounted("/sys/fs/bpf");
        if (!pinRoot.StartsWith("/sys/fs/bpf/", StringComparison.Ordinal) && !BpfFs.IsBpfFs(Path.GetDirectoryName(pinRoot)!))
            throw new DatapathException($"pin root {pinRoot} is not on bpffs; use a path under /sys/fs/bpf");
        var missing = Features.MissingRequired(RequiredFeatures).ToList();
        if (missing.Count > 0)
            throw new DatapathException($"this kernel lacks BPF features the datapath needs: {string.Join(", ", missing)}");
        Directory.CreateDirectory(pinRoot);
        var obj = BpfObjects.Open(BpfObjects.Lxc, pinRoot);
        try
        {
            obj.Load();
        }
        catch (BpfException e) when (e.Message.Contains("reuse", StringComparison.OrdinalIgnoreCase))
        {
            obj.Dispose();
            throw new DatapathException($"maps pinned under {pinRoot} do not match this build's layout; remove them (trellis lab down, or rm -r {pinRoot}) and start again", e);
        }
        catch
        {
            obj.Dispose();
            throw;
        }
        BpfObject? sock = null, netdev = null;
        try
        {
            sock = BpfObjects.Open(BpfObjects.Sock, pinRoot);
            sock.Load();
            netdev = BpfObjects.Open(BpfObjects.Netdev, pinRoot);
            netdev.Load();
        }
        catch
        {
            netdev?.Dispose();
            sock?.Dispose();
            obj.Dispose();
            throw;
        }
        var dp = new NodeDatapath(obj, sock, netdev, pinRoot);
        Directory.CreateDirectory(Path.Combine(pinRoot, "progs"));
        dp.FromContainer.Pin(Path.Combine(pinRoot, "progs", Names.FromContainer));
        dp.ToContainer.Pin(Path.Combine(pinRoot, "progs", Names.ToContainer));
        dp.FromNetdev.Pin(Path.Combine(pinRoot, "progs", Names.FromNetdev));
        return dp;
    }

    // --- endpoints ---

    /// <summary>Puts the endpoint in the maps and (re)attaches both programs to its host-side veth.
    /// The endpoint entry goes in first: a program without one drops (fail closed).</summary>
    public void AttachEndpoint(int ifindex, EndpointInfo info, uint ipcacheIdentity, bool l7Ingress = false)
    {
        Endpoints.Update((uint)ifindex, info);
        Ipcache.Update(IpcacheKey.Host(info.Ipv4), new IpcacheValue
        {
            Identity = ipcacheIdentity,
            Flags = IpcacheValue.FlagLocalEndpoint | (l7Ingress ? IpcacheValue.FlagL7Ingress : 0),
            EndpointId = info.EndpointId,
        });
        Tc.Attach(ifindex, TcAttachPoint.Ingress, FromContainer);
        Tc.Attach(ifindex, TcAttachPoint.Egress, ToContainer);
        // Last: other pods deliver straight to it only once its entry and programs are in place.
        if ((info.Flags & EndpointInfo.FlagDirect) != 0)
            Lxc.Update(info.Ipv4, (uint)ifindex);
        else
            Lxc.Delete(info.Ipv4);
        BumpPolicyGen();
    }

    public void UpdateEndpoint(int ifindex, EndpointInfo info)
    {
        Endpoints.Update((uint)ifindex, info, MapUpdate.Exist);
        BumpPolicyGen();
    }

    public void DetachEndpoint(int ifindex, uint endpointId, uint ipv4)
    {
        Lxc.Delete(ipv4); // first: no more direct deliveries to an interface about to go
        if (ifindex > 0)
        {
            Tc.Detach(ifindex, TcAttachPoint.Ingress);
            Tc.Detach(ifindex, TcAttachPoint.Egress);
            Endpoints.Delete((uint)ifindex);
        }
        Ipcache.Delete(IpcacheKey.Host(ipv4));
        lock (_policyGate) Policy.Delete(endpointId);
        BumpPolicyGen();
    }

    public void SetIpcache(uint ipv4, uint identity, uint flags = 0, uint endpointId = 0) =>
        SetIpcache(IpcacheKey.Host(ipv4), new IpcacheValue { Identity = identity, Flags = flags, EndpointId = endpointId });

    public void SetIpcache(IpcacheKey key, IpcacheValue value)
    {
        Ipcache.Update(key, value);
        BumpPolicyGen();
    }

    public bool DeleteIpcache(IpcacheKey key)
    {
        bool deleted = Ipcache.Delete(key);
        BumpPolicyGen();
        return deleted;
    }

    /// <summary>
    /// Makes every policy verdict cached in conntrack stale, so the next packet of each flow is checked against the
    /// maps again. Called after each write to what a verdict depends on (policy maps, ipcache, endpoint flags): the
    /// datapath caches a flow's allowed verdict under the generation it read before deciding, so a packet racing a
    /// change either sees the new maps or is checked again on its next packet.
    /// </summary>
    public void BumpPolicyGen()
    {
        lock (_policyGate) BumpPolicyGenLocked();
    }

    private void BumpPolicyGenLocked()
    {
        PolicyGen.TryLookup(0u, out uint gen);
        gen = gen == uint.MaxValue ? 1 : gen + 1; // 0 means "never cached"
        PolicyGen.Update(0u, gen);
    }

    public uint CurrentPolicyGen => PolicyGen.TryLookup(0u, out uint gen) ? gen : 0;

    // --- policy ---

    /// <summary>Lays the statements out as LPM keys (<see cref="PolicyMapBuilder"/>) and installs them.</summary>
    public void ReplacePolicy(uint endpointId, IEnumerable<PolicyStatement> statements) =>
        ReplacePolicy(endpointId, PolicyMapBuilder.Build(statements));

    /// <summary>Replaces the endpoint's whole policy map atomically: a new inner map is filled
    /// first and then swapped into the outer map, so lookups never see a half-written or empty map.</summary>
    public void ReplacePolicy(uint endpointId, IReadOnlyDictionary<PolicyKey, PolicyValue> entries) =>
        ReplacePolicies([(endpointId, entries)]);

    /// <summary>
    /// <see cref="ReplacePolicy(uint, IReadOnlyDictionary{PolicyKey, PolicyValue})"/> for many endpoints: all inner
    /// maps are filled first, then swapped in with one batch update. The kernel waits for an RCU grace period after
    /// each update of a map of maps (~10 ms here), so one swap per endpoint made a policy that selects 1,000 pods
    /// take seconds; the batch waits once.
    /// </summary>
    public void ReplacePolicies(IReadOnlyList<(uint EndpointId, IReadOnlyDictionary<PolicyKey, PolicyValue> Entries)> policies)
    {
        if (policies.Count == 0) return;
        foreach (var (id, entries) in policies)
            if (entries.Count > Names.PolicyMaxEntries)
                throw new DatapathException($"endpoint {id} needs {entries.Count} policy entries, more than the map's {Names.PolicyMaxEntries}");
        var inners = new List<BpfMap>(policies.Count);
        try
        {
            var keys = new uint[policies.Count];
            var fds = new int[policies.Count];
            for (int i = 0; i < policies.Count; i++)
            {
                var (id, entries) = policies[i];
                var inner = BpfMap.Create(BpfMapType.LpmTrie, $"trellis_pol_{id}", 12, 8, Names.PolicyMaxEntries, flags: 1 /* BPF_F_NO_PREALLOC */);
                inners.Add(inner);
                foreach (var (k, v) in entries)
                    inner.Update(k, v);
                keys[i] = id;
                fds[i] = inner.Fd;
            }
            lock (_policyGate)
            {
                // The kernel stores the new inner maps at once but returns only after an RCU grace period (~10 ms).
                // Cached verdicts must go stale when the new maps become visible, not 10 ms later (a flow the new
                // policy denies would pass meanwhile), and not before (a packet in between would cache the old
                // verdict under the new generation): so the generation moves as soon as the last entry shows its
                // new map, while the update call is still waiting.
                var update = Task.Run(() => Policy.UpdateBatch<uint, int>(keys, fds)); // the outer map holds its own references
                uint lastKey = keys[^1], lastId = inners[^1].Id;
                while (!update.IsCompleted && !(Policy.TryLookup(lastKey, out uint id) && id == lastId))
                    Thread.Yield();
                BumpPolicyGenLocked();
                update.GetAwaiter().GetResult();
            }
        }
        finally
        {
            foreach (var m in inners) m.Dispose();
        }
    }

    /// <summary>Node-wide settings: policy audit mode (policy drops pass and are reported with verdict AUDIT) and
    /// whether flow events are sent at all.</summary>
    public void SetNodeConfig(bool audit, bool flowEvents, ushort proxyPort = 0, bool socketAcceleration = false)
    {
        Config.Update(0u, new NodeConfig
        {
            Flags = (audit ? NodeConfig.FlagAudit : 0) | (flowEvents ? 0 : NodeConfig.FlagNoFlowEvents)
                | (socketAcceleration ? NodeConfig.FlagSockAccel : 0),
            ProxyPortBe = System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(proxyPort),
        });
        SetSocketAccelerationHook(socketAcceleration);
        BumpPolicyGen();
    }

    public void SetAuditMode(bool on) => SetNodeConfig(on, FlowEvents, ProxyPort, SocketAcceleration);

    public bool SocketAcceleration => Config.TryLookup(0u, out NodeConfig c) && (c.Flags & NodeConfig.FlagSockAccel) != 0;

    /// <summary>
    /// Takes spliced sockets out of the acceleration map: those with <paramref name="ipv4"/> at either end, or all when
    /// null. Their data then goes through TCP/IP and the TC programs again, which check the (new) policy per packet.
    /// Returns how many were taken out.
    /// </summary>
    public int EvictAcceleratedSockets(uint? ipv4 = null)
    {
        int n = 0;
        foreach (var k in SockAccel.Keys<SockKey>())
            if ((ipv4 is null || k.Local == ipv4 || k.Remote == ipv4) && SockAccel.Delete(k))
                n++;
        return n;
    }

    /// <summary>Spliced sockets (two per same-node connection).</summary>
    public int AcceleratedSockets => SockAccel.Keys<SockKey>().Count;


    /// <summary>The node's L7 proxy port (127.0.0.1), 0 when none is configured.</summary>
    public ushort ProxyPort => Config.TryLookup(0u, out NodeConfig c) ? System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(c.ProxyPortBe) : (ushort)0;

    public bool AuditMode => Config.TryLookup(0u, out NodeConfig c) && (c.Flags & NodeConfig.FlagAudit) != 0;

    public bool FlowEvents => !Config.TryLookup(0u, out NodeConfig c) || (c.Flags & NodeConfig.FlagNoFlowEvents) == 0;

    /// <summary>The endpoint's policy entries as the kernel has them.</summary>
    public Dictionary<PolicyKey, PolicyValue> ReadPolicy(uint endpointId)
    {
        var result = new Dictionary<PolicyKey, PolicyValue>();
        if (!Policy.TryLookup(endpointId, out uint innerId)) return result;
        using var inner = BpfMap.FromId(innerId);
        foreach (var k in inner.Keys<PolicyKey>())
            if (inner.TryLookup(k, out PolicyValue v))
                result[k] = v;
        return result;
    }

    // --- conntrack ---

    /// <summary>Deletes expired conntrack entries; returns how many.</summary>
    public int CollectConntrack(ulong nowMonotonicNs)
    {
        int removed = 0;
        foreach (var k in Conntrack.Keys<CtKey>())
        {
            if (Conntrack.TryLookup(k, out CtEntry e) && e.ExpiresNs < nowMonotonicNs && Conntrack.Delete(k))
                removed++;
        }
        return removed;
    }

    // --- counters and status ---

    public ulong Counter(uint index) => Counters.LookupPerCpu<uint, ulong>(index).Aggregate(0UL, (a, b) => a + b);

    public IReadOnlyList<MapFill> Fill() =>
    [
        new(Names.Ipcache, Ipcache.Count(), Ipcache.MaxEntries),
        new(Names.Endpoints, Endpoints.Count(), Endpoints.MaxEntries),
        new(Names.Policy, Policy.Count(), Policy.MaxEntries),
        new(Names.Conntrack, Conntrack.Count(), Conntrack.MaxEntries),
    ];

    public IReadOnlyList<BpfProgramInfo> ProgramInfo() => [FromContainer.Info(), ToContainer.Info(), FromNetdev.Info()];

    /// <summary>Removes every pin under the root (maps and programs disappear once nothing else holds them).</summary>
    public static void RemovePins(string pinRoot)
    {
        if (Directory.Exists(pinRoot))
            Directory.Delete(pinRoot, recursive: true);
    }

    /// <summary>Attaches the socket load balancer to the cgroup holding the node's pods, replacing any
    /// copy an earlier agent attached (cgroup programs outlive the process that attached them).</summary>
    public void AttachSocketLb(string cgroupPath)
    {
        foreach (var (name, type) in RetiredSockPrograms)
            DetachByName(cgroupPath, name, type);
        foreach (var (name, type) in SockPrograms)
        {
            var prog = _sock.Program(name);
            DetachByName(cgroupPath, prog.Name, type);
            Cgroup.Attach(cgroupPath, prog, type);
        }
        // The message verdict program belongs to the sockhash itself (replaced in place by a new agent).
        SockAccel.AttachProgram(_sock.Program(Names.SockAccelMsg), BpfMapAttachType.SkMsgVerdict);
        _sockCgroup = cgroupPath;
        SetSocketAccelerationHook(SocketAcceleration);
    }

    /// <summary>Attaches or detaches sock_accel_ops on the pods' cgroup (once <see cref="AttachSocketLb"/> named it).</summary>
    private void SetSocketAccelerationHook(bool on)
    {
        if (_sockCgroup is null) return;
        var prog = _sock.Program(SockAccelOps.Program);
        DetachByName(_sockCgroup, prog.Name, SockAccelOps.Type);
        if (on)
            Cgroup.Attach(_sockCgroup, prog, SockAccelOps.Type);
    }

    private static void DetachByName(string cgroupPath, string name, CgroupAttachType type)
    {
        foreach (var id in Cgroup.Query(cgroupPath, type))
            if (BpfProgram.InfoById(id)?.Name == name[..Math.Min(name.Length, 15)]) // the kernel keeps 15 characters
                Cgroup.DetachById(cgroupPath, id, type);
    }

    // --- node devices and the per-packet load balancer ---

    /// <summary>Attaches the NodePort load balancer to a node device's TC ingress (replacing an earlier copy).</summary>
    /// <summary>
    /// Attaches proxy_lookup (sk_lookup) to the calling thread's network namespace (the node's), pinned as a link so it
    /// stays with the other programs across agent restarts: a new connection that meets a TIME_WAIT socket of the L7
    /// proxy reaches the proxy's listener (see bpf/lib/proxy.h).
    /// </summary>
    public void AttachProxyLookup() =>
        NetnsLink.AttachSkLookup(ProxyLookup, Path.Combine(PinRoot, "links", Names.ProxyLookup));

    /// <summary>The sk_lookup program that gives the L7 proxy's listener new connections meeting its TIME_WAIT sockets.</summary>
    public BpfProgram ProxyLookup => _obj.Program(Names.ProxyLookup);

    public void AttachNetdev(int ifindex) => Tc.Attach(ifindex, TcAttachPoint.Ingress, FromNetdev);

    public void DetachNetdev(int ifindex) => Tc.Detach(ifindex, TcAttachPoint.Ingress);

    /// <summary>Installs a frontend's Maglev table: a new inner array is filled and swapped in whole, so a
    /// packet never sees a half-written table.</summary>
    public void SetMaglevTable(uint frontendId, ReadOnlySpan<Lb4Backend> table)
    {
        if (table.Length != Lb4Frontend.MaglevTableSize)
            throw new ArgumentException($"a Maglev table has {Lb4Frontend.MaglevTableSize} entries, not {table.Length}");
        using var inner = BpfMap.Create(BpfMapType.Array, $"trellis_mg_{frontendId}", 4, 8, (uint)Lb4Frontend.MaglevTableSize);
        for (uint i = 0; i < table.Length; i++)
            inner.Update(i, table[(int)i]);
        Lb4Maglev.Update(frontendId, inner.Fd);
    }

    public void DeleteMaglevTable(uint frontendId) => Lb4Maglev.Delete(frontendId);

    public void Dispose()
    {
        _netdev.Dispose();
        _sock.Dispose();
        _obj.Dispose();
    }
}

public sealed class DatapathException : Exception
{
    public DatapathException(string message, Exception? inner = null) : base(message, inner) { }
}
