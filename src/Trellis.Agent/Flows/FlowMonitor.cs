using System.Collections.Frozen;
using System.Diagnostics;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Trellis.Bpf;
using Trellis.Datapath;

namespace Trellis.Agent.Flows;

/// <summary>What the monitor needs to name the parties of a flow; swapped whole when endpoints,
/// identities or policies change, so the reader never takes a lock.</summary>
public sealed record EnrichmentSnapshot(
    FrozenDictionary<uint, EndpointRef> EndpointsByIp,
    FrozenDictionary<uint, IReadOnlyList<string>> IdentityLabels,
    FrozenDictionary<uint, PolicyRef> Policies,
    FrozenDictionary<ulong, (uint Ip, uint Identity)> EndpointsByCgroup,
    FrozenDictionary<uint, string> Frontends)
{
    public static readonly EnrichmentSnapshot Empty = new(
        FrozenDictionary<uint, EndpointRef>.Empty, FrozenDictionary<uint, IReadOnlyList<string>>.Empty, FrozenDictionary<uint, PolicyRef>.Empty,
        FrozenDictionary<ulong, (uint, uint)>.Empty, FrozenDictionary<uint, string>.Empty);
}

/// <summary>Reads flow events from the datapath's ring buffer on a dedicated thread into the flow store.</summary>
public sealed class FlowMonitor : IDisposable
{
    private readonly NodeDatapath _datapath;
    private readonly FlowStore _store;
    private readonly ILogger _log;
    private readonly Thread _thread;
    private volatile bool _stop;
    private readonly RingBuffer _ring;
    private readonly long _monoToWallOffsetTicks;
    public volatile EnrichmentSnapshot Snapshot = EnrichmentSnapshot.Empty;

    public long Received { get; private set; }

    /// <summary>How long a flow event may wait in the ring before the agent reads it.</summary>
    private const int DrainIntervalMs = 50;

    // Socket load balancing rewrites connect(); the packets that follow carry only the backend's address. The
    // translation event says which service it was, and the connection's first packet (seen right after at TC)
    // is matched to it by (client, backend, port, protocol). Bounded: cleared when full (a miss only loses the
    // service name of a flow, never the flow).
    private readonly Dictionary<(uint Client, uint Backend, ushort Port, byte Proto), uint> _recentTranslations = new();
    private const int RecentTranslationsMax = 16384;

    public FlowMonitor(NodeDatapath datapath, FlowStore store, ILogger log)
    {
        _datapath = datapath;
        _store = store;
        _log = log;
        // bpf_ktime_get_ns() and Stopwatch both read CLOCK_MONOTONIC on Linux.
        long monoNs = (long)(Stopwatch.GetTimestamp() * (1e9 / Stopwatch.Frequency));
        _monoToWallOffsetTicks = DateTimeOffset.UtcNow.UtcTicks - monoNs / 100;
        _ring = new RingBuffer(datapath.Events, OnRecord);
        _thread = new Thread(Run) { IsBackground = true, Name = "trellis-flow-monitor" };
    }

    public void Start() => _thread.Start();

    private void Run()
    {
        while (!_stop)
        {
            try
            {
                // Producers submit without waking us (see EVENTS_WAKEUP_BYTES in bpf/lib/maps.h): a wakeup only comes
                // when the ring fills up, so drain on a short timer too.
                _ring.Poll(DrainIntervalMs);
                _ring.Consume();
            }
            catch (BpfException e)
            {
                _log.LogError(e, "reading the flow ring buffer failed");
                Thread.Sleep(1000);
            }
        }
    }

    private void OnRecord(ReadOnlySpan<byte> data)
    {
        if (data.Length < Marshal.SizeOf<FlowEvent>()) return;
        var ev = MemoryMarshal.Read<FlowEvent>(data);
        Received++;
        var snap = Snapshot;
        if (ev.CgroupId != 0 && ev.SAddr == 0)
        {
            // A socket event: the client is the pod whose cgroup made the call; the socket programs sit on the
            // node's cgroup, so any other caller is a process of the host.
            if (snap.EndpointsByCgroup.TryGetValue(ev.CgroupId, out var client))
                (ev.SAddr, ev.SrcIdentity) = client;
            else
                ev.SrcIdentity = Identities.Host;
        }
        if (ev.Verdict == (byte)Verdict.Translated && ev.SAddr != 0)
        {
            if (_recentTranslations.Count >= RecentTranslationsMax) _recentTranslations.Clear();
            _recentTranslations[(ev.SAddr, ev.DAddr, ev.DPort, ev.Proto)] = ev.FrontendId;
        }
        else if (ev.FrontendId == 0 && ev.Verdict != (byte)Verdict.Translated &&
                 _recentTranslations.TryGetValue((ev.SAddr, ev.DAddr, ev.DPort, ev.Proto), out var fid))
        {
            ev.FrontendId = fid;
        }
        var time = new DateTimeOffset(_monoToWallOffsetTicks + (long)(ev.TimestampNs / 100), TimeSpan.Zero);
        snap.EndpointsByIp.TryGetValue(ev.SAddr, out var src);
        snap.EndpointsByIp.TryGetValue(ev.DAddr, out var dst);
        if (ev.DstIdentity == 0 && dst is not null) ev.DstIdentity = dst.Identity; // socket events know only the address
        snap.IdentityLabels.TryGetValue(ev.SrcIdentity, out var srcLabels);
        snap.IdentityLabels.TryGetValue(ev.DstIdentity, out var dstLabels);
        PolicyRef? policy = ev.PolicyId != 0 && snap.Policies.TryGetValue(ev.PolicyId, out var p) ? p : null;
        string? service = ev.FrontendId != 0 && snap.Frontends.TryGetValue(ev.FrontendId, out var svc) ? svc : null;
        _store.Add(new StoredFlow(ev, time, src, dst, srcLabels, dstLabels, policy, service));
    }

    public void Dispose()
    {
        _stop = true;
        if (_thread.IsAlive) _thread.Join(2000);
        _ring.Dispose();
    }
}
