using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Trellis.Agent.Flows;
using Trellis.Api;
using Trellis.Datapath;
using Trellis.Proxy;
using Trellis.Proxy.Node;

namespace Trellis.Agent.Proxy;

/// <summary>
/// Receives the proxy's L7 records (one datagram each, see <see cref="L7RecordWire"/>) and stores them as L7 flows:
/// verdict FORWARDED, DROPPED with reason "L7 policy denied", or ERROR; both ends named from the enrichment snapshot;
/// direction INGRESS when the destination is a local endpoint whose ingress rules got the request there, else EGRESS.
/// </summary>
public sealed class L7FlowReceiver : IDisposable
{
    private readonly Socket _socket;
    private readonly string _path;
    private readonly FlowStore _store;
    private readonly Func<EnrichmentSnapshot> _snapshot;
    private readonly Func<uint, bool> _hasIngressRules;
    private readonly ILogger _log;
    private readonly Thread _thread;
    private volatile bool _stopping;
    private long _received;
    private long _malformed;
    private long _proxyDropped;

    public L7FlowReceiver(string path, FlowStore store, Func<EnrichmentSnapshot> snapshot, Func<uint, bool> hasIngressRules, ILogger log)
    {
        _path = path;
        _store = store;
        _snapshot = snapshot;
        _hasIngressRules = hasIngressRules;
        _log = log;
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.Delete(path);
        _socket = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        _socket.Bind(new UnixDomainSocketEndPoint(path));
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        _socket.ReceiveBufferSize = 4 << 20;
        _thread = new Thread(Run) { IsBackground = true, Name = "l7-records" };
    }

    public long Received => Interlocked.Read(ref _received);
    /// <summary>Records the proxy reported it could not deliver (queue full or no agent listening).</summary>
    public long ProxyDropped => Interlocked.Read(ref _proxyDropped);
    public long Malformed => Interlocked.Read(ref _malformed);

    public void Start() => _thread.Start();

    private void Run()
    {
        var buffer = new byte[65536];
        while (!_stopping)
        {
            int n;
            try
            {
                n = _socket.Receive(buffer);
            }
            catch (SocketException) when (_stopping)
            {
                return;
            }
            catch (ObjectDisposedException)
            {
                return;
            }
            try
            {
                var (record, dropped) = L7RecordWire.Read(buffer.AsSpan(0, n));
                Interlocked.Increment(ref _received);
                Interlocked.Exchange(ref _proxyDropped, dropped);
                _store.Add(ToFlow(record));
            }
            catch (FormatException e)
            {
                if (Interlocked.Increment(ref _malformed) == 1)
                    _log.LogWarning("ignoring a malformed L7 record: {Error}", e.Message);
            }
        }
    }

    private StoredFlow ToFlow(L7Record r)
    {
        var snap = _snapshot();
        var src = NetOrder.FromAddress(r.Source.Address.MapToIPv4());
        var dst = NetOrder.FromAddress(r.Destination.Address.MapToIPv4());
        snap.EndpointsByIp.TryGetValue(src, out var source);
        snap.EndpointsByIp.TryGetValue(dst, out var destination);
        var srcIdentity = source?.Identity ?? r.ClientIdentity;
        var dstIdentity = destination?.Identity ?? Identities.World;
        snap.IdentityLabels.TryGetValue(srcIdentity, out var srcLabels);
        snap.IdentityLabels.TryGetValue(dstIdentity, out var dstLabels);
        var ingress = destination is not null && (source is null || _hasIngressRules(dst));
        var ev = new FlowEvent
        {
            TimestampNs = 0,
            SAddr = src,
            DAddr = dst,
            SPort = (ushort)r.Source.Port,
            DPort = (ushort)r.Destination.Port,
            Proto = 6,
            SrcIdentity = srcIdentity,
            DstIdentity = dstIdentity,
            Verdict = (byte)(r.Verdict switch
            {
                L7Verdict.Forwarded => Verdict.Forwarded,
                L7Verdict.Dropped => Verdict.Dropped,
                _ => Verdict.Error,
            }),
            Reason = r.Verdict == L7Verdict.Dropped ? (byte)DropReason.L7Denied : (byte)0,
            Dir = (byte)(ingress ? TrafficDirection.Ingress : TrafficDirection.Egress),
        };
        var l7 = new L7RecordDto("RESPONSE", r.Latency.Ticks * 100, new HttpRecordDto(r.Method, r.Url, r.StatusCode, r.Protocol));
        return new StoredFlow(ev, r.Time, source, destination, srcLabels, dstLabels, null) { L7 = l7 };
    }

    public void Dispose()
    {
        _stopping = true;
        _socket.Dispose();
        try { File.Delete(_path); } catch (IOException) { }
    }
}
