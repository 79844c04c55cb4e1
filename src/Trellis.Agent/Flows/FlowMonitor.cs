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
    FrozenDictionary<uint, PolicyRef> Policies)
{
    public static readonly EnrichmentSnapshot Empty = new(
        FrozenDictionary<uint, EndpointRef>.Empty, FrozenDictionary<uint, IReadOnlyList<string>>.Empty, FrozenDictionary<uint, PolicyRef>.Empty);
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
                _ring.Poll(200);
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
        var time = new DateTimeOffset(_monoToWallOffsetTicks + (long)(ev.TimestampNs / 100), TimeSpan.Zero);
        snap.EndpointsByIp.TryGetValue(ev.SAddr, out var src);
        snap.EndpointsByIp.TryGetValue(ev.DAddr, out var dst);
        snap.IdentityLabels.TryGetValue(ev.SrcIdentity, out var srcLabels);
        snap.IdentityLabels.TryGetValue(ev.DstIdentity, out var dstLabels);
        PolicyRef? policy = ev.PolicyId != 0 && snap.Policies.TryGetValue(ev.PolicyId, out var p) ? p : null;
        _store.Add(new StoredFlow(ev, time, src, dst, srcLabels, dstLabels, policy));
    }

    public void Dispose()
    {
        _stop = true;
        if (_thread.IsAlive) _thread.Join(2000);
        _ring.Dispose();
    }
}
