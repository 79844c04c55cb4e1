using System.Buffers;
using System.Collections.Frozen;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Trellis.Agent.Flows;
using Trellis.Agent.Proxy;
using Trellis.Api;
using Trellis.Datapath;
using Trellis.Proxy;
using Trellis.Proxy.Node;

namespace Trellis.Agent.Tests.Proxy;

/// <summary>The agent's side of the proxy's records: real unix datagrams in, L7 flows in the store.</summary>
public sealed class L7FlowReceiverTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("trellis-l7-");
    private readonly FlowStore _store = new(64);
    private readonly Socket _sender = new(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);

    private static readonly EndpointRef Client = new("shop", "client", ["k8s:app=client"], 300);
    private static readonly EndpointRef Server = new("shop", "server", ["k8s:app=server"], 301);

    private static EnrichmentSnapshot Snapshot() => EnrichmentSnapshot.Empty with
    {
        EndpointsByIp = new Dictionary<uint, EndpointRef>
        {
            [NetOrder.FromAddress(IPAddress.Parse("10.200.0.3"))] = Client,
            [NetOrder.FromAddress(IPAddress.Parse("10.200.0.2"))] = Server,
        }.ToFrozenDictionary(),
        IdentityLabels = new Dictionary<uint, IReadOnlyList<string>> { [300] = ["k8s:app=client"], [301] = ["k8s:app=server"] }.ToFrozenDictionary(),
    };

    public void Dispose()
    {
        _sender.Dispose();
        _dir.Delete(recursive: true);
    }

    private void Send(string path, L7Record r, long dropped)
    {
        var buffer = new ArrayBufferWriter<byte>();
        L7RecordWire.Write(buffer, r, dropped);
        _sender.SendTo(buffer.WrittenSpan, new UnixDomainSocketEndPoint(path));
    }

    private static L7Record Record(L7Verdict verdict, int code) => new(DateTimeOffset.UtcNow, 300,
        IPEndPoint.Parse("10.200.0.3:40000"), IPEndPoint.Parse("10.200.0.2:8080"), "GET", "http://10.200.0.2:8080/admin",
        "HTTP/1.1", code, TimeSpan.FromMilliseconds(3), verdict, verdict == L7Verdict.Dropped ? L7Record.PolicyDeniedReason : null);

    private async Task<List<StoredFlow>> WaitForFlows(int n)
    {
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (_store.Count < n && DateTime.UtcNow < deadline)
            await Task.Delay(10);
        return _store.Recent(100);
    }

    [Fact]
    public async Task Records_become_named_L7_flows_with_verdict_reason_and_direction()
    {
        var path = Path.Combine(_dir.FullName, "l7.sock");
        var ingress = false; // read by the receiver thread
        using var receiver = new L7FlowReceiver(path, _store, Snapshot, _ => Volatile.Read(ref ingress), NullLogger.Instance);
        receiver.Start();

        Send(path, Record(L7Verdict.Dropped, 403), dropped: 0);
        await WaitForFlows(1);
        ingress = true; // the destination's ingress rules sent the next one to the proxy
        Send(path, Record(L7Verdict.Forwarded, 200), dropped: 7);
        var flows = await WaitForFlows(2);

        Assert.Equal(2, flows.Count);
        var denied = FlowConverter.ToDto(flows[0], "n1");
        Assert.Equal(("DROPPED", "L7 policy denied", "EGRESS"), (denied.Verdict, denied.DropReason, denied.Direction));
        Assert.Equal(("shop", "client", 300u), (denied.Source.Namespace, denied.Source.Pod, denied.Source.Identity));
        Assert.Equal(("server", 8080, 301u), (denied.Destination.Pod, denied.Destination.Port, denied.Destination.Identity));
        Assert.Equal(new HttpRecordDto("GET", "http://10.200.0.2:8080/admin", 403, "HTTP/1.1"), denied.L7!.Http);
        Assert.Equal(3_000_000, denied.L7.LatencyNs);
        var allowed = FlowConverter.ToDto(flows[1], "n1");
        Assert.Equal(("FORWARDED", (string?)null, "INGRESS"), (allowed.Verdict, allowed.DropReason, allowed.Direction));
        Assert.Equal(2, receiver.Received);
        Assert.Equal(7, receiver.ProxyDropped);
    }

    [Fact]
    public async Task Malformed_datagrams_are_counted_and_skipped()
    {
        var path = Path.Combine(_dir.FullName, "l7.sock");
        using var receiver = new L7FlowReceiver(path, _store, Snapshot, _ => false, NullLogger.Instance);
        receiver.Start();
        _sender.SendTo("{\"not\":\"a record\"}"u8, new UnixDomainSocketEndPoint(path));
        Send(path, Record(L7Verdict.Error, 503), 0);
        var flows = await WaitForFlows(1);
        Assert.Equal("ERROR", FlowConverter.ToDto(Assert.Single(flows), "n1").Verdict);
        Assert.Equal(1, receiver.Malformed);
    }
}
