using System.Net.Sockets;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using Trellis.Api;
using Trellis.Integration.Infrastructure;
using Trellis.Lab;
using Xunit.Abstractions;
using static Trellis.Integration.Infrastructure.Labs;
using H = Trellis.Hubble;

namespace Trellis.Integration.Observability;

/// <summary>The agent's Hubble-compatible observer API, read by a gRPC client generated (in this project) from the
/// same protos as any Hubble client: over the agent's unix socket, and over TCP 127.0.0.1:4244 inside the lab node's
/// network namespace by a third-party client (gRPC's C core, Debian's python3-grpcio).</summary>
[Collection(LabCollectionA.Name)]
[Trait("Requires", "root")]
public sealed class HubbleObserverTests(ITestOutputHelper output)
{
    private const string DenyEcho2 = """
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata:
          name: no-echo2
          namespace: shop
        spec:
          endpointSelector:
            matchLabels:
              app: server
          ingressDeny:
            - fromEntities:
                - all
              toPorts:
                - ports:
                    - port: "7100"
                      protocol: TCP
        """;

    private static GrpcChannel UnixChannel(string socketPath) => GrpcChannel.ForAddress("http://hubble", new GrpcChannelOptions
    {
        HttpHandler = new SocketsHttpHandler
        {
            ConnectCallback = async (_, ct) =>
            {
                var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await s.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), ct);
                    return new NetworkStream(s, ownsSocket: true);
                }
                catch
                {
                    s.Dispose();
                    throw;
                }
            },
        },
    });

    private static async Task<List<H.GetFlowsResponse>> ReadAllAsync(H.Observer.ObserverClient client, H.GetFlowsRequest request)
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        using var call = client.GetFlows(request, cancellationToken: cts.Token);
        var responses = new List<H.GetFlowsResponse>();
        await foreach (var r in call.ResponseStream.ReadAllAsync(cts.Token)) responses.Add(r);
        return responses;
    }

    private static string Describe(H.Flow f) =>
        $"{f.Source.Namespace}/{f.Source.PodName} {f.IP.Source} -> {f.Destination.Namespace}/{f.Destination.PodName} {f.IP.Destination}:{f.L4?.TCP?.DestinationPort} " +
        $"{f.Verdict} {f.DropReasonDesc} {f.TrafficDirection} allowed-by=[{string.Join(",", f.IngressAllowedBy.Concat(f.EgressAllowedBy).Select(p => p.Name))}] " +
        $"denied-by=[{string.Join(",", f.IngressDeniedBy.Concat(f.EgressDeniedBy).Select(p => p.Name))}]";

    [Fact]
    public async Task A_Hubble_client_reads_drops_with_reason_pods_and_policy_the_server_status_and_gets_errors_for_unsupported_filters()
    {
        await using var lab = await ShopAsync();
        var serverIp = await lab.IpAsync("shop", "server");
        var intruderIp = await lab.IpAsync("data", "intruder");
        await lab.ApplyPolicyAsync(ServerIngressFromClient("server-from-client", (TcpEcho, "TCP")));
        await lab.ApplyPolicyAsync(DenyEcho2, "deny.yaml");
        Assert.True((await lab.Pod("shop", "client").TcpConnectAsync(serverIp, TcpEcho)).Ok, "shop/client -> server:7000 is allowed");
        Assert.False((await lab.Pod("data", "intruder").TcpConnectAsync(serverIp, TcpEcho)).Ok, "data/intruder -> server:7000 is not");
        Assert.False((await lab.Pod("data", "intruder").TcpConnectAsync(serverIp, TcpEcho2)).Ok, "data/intruder -> server:7100 is denied by a rule");
        await lab.WaitForFlowAsync(f => f.Verdict == "DROPPED" && f.Source.Ip == intruderIp && f.Destination.Port == TcpEcho2,
            "DROPPED data/intruder -> server:7100");

        using var channel = UnixChannel(AgentPaths.HubbleSocket(lab.Node));
        var client = new H.Observer.ObserverClient(channel);

        // The last 50 drops.
        var drops = await ReadAllAsync(client, new H.GetFlowsRequest { Number = 50, Whitelist = { new H.FlowFilter { Verdict = { H.Verdict.Dropped } } } });
        output.WriteLine(string.Join('\n', drops.Select(r => Describe(r.Flow))));
        Assert.InRange(drops.Count, 2, 50);
        Assert.All(drops, r =>
        {
            Assert.Equal(H.GetFlowsResponse.ResponseTypesOneofCase.Flow, r.ResponseTypesCase);
            Assert.Equal(H.Verdict.Dropped, r.Flow.Verdict);
            Assert.Equal(lab.Node, r.NodeName);
            Assert.Equal(lab.Node, r.Flow.NodeName);
        });
        var denied = drops.Last(r => r.Flow.IP.Source == intruderIp && r.Flow.L4.TCP.DestinationPort == TcpEcho).Flow;
        Assert.Equal(H.DropReason.PolicyDenied, denied.DropReasonDesc);
#pragma warning disable CS0612
        Assert.Equal(133u, denied.DropReason);
#pragma warning restore CS0612
        Assert.Equal("data", denied.Source.Namespace);
        Assert.Equal("intruder", denied.Source.PodName);
        Assert.Equal("shop", denied.Destination.Namespace);
        Assert.Equal("server", denied.Destination.PodName);
        Assert.Equal(serverIp, denied.IP.Destination);
        Assert.Equal(H.IPVersion.Ipv4, denied.IP.IpVersion);
        Assert.True(denied.L4.TCP.Flags.SYN);
        Assert.Equal(H.TrafficDirection.Ingress, denied.TrafficDirection);
        Assert.Contains("k8s:app=client", denied.Source.Labels);
        Assert.NotEqual(0u, denied.Destination.ID);
        Assert.Equal((await lab.EndpointAsync("shop", "server")).Id, denied.Destination.ID);
        Assert.Equal((await lab.EndpointAsync("shop", "server")).Identity, denied.Destination.Identity);
        Assert.Empty(denied.IngressDeniedBy); // a default deny: no rule of any policy decided it

        var ruleDenied = drops.Last(r => r.Flow.IP.Source == intruderIp && r.Flow.L4.TCP.DestinationPort == TcpEcho2).Flow;
        Assert.Equal(H.DropReason.PolicyDeny, ruleDenied.DropReasonDesc);
        var denyPolicy = Assert.Single(ruleDenied.IngressDeniedBy);
        Assert.Equal(("no-echo2", "shop", "CiliumNetworkPolicy"), (denyPolicy.Name, denyPolicy.Namespace, denyPolicy.Kind));

        // The allowed connection names the policy that allowed it, at the server's ingress.
        var allowed = await ReadAllAsync(client, new H.GetFlowsRequest
        {
            Number = 50,
            Whitelist = { new H.FlowFilter { Verdict = { H.Verdict.Forwarded }, SourcePod = { "shop/client" }, DestinationPod = { "shop/server" }, TrafficDirection = { H.TrafficDirection.Ingress } } },
        });
        output.WriteLine(string.Join('\n', allowed.Select(r => Describe(r.Flow))));
        var first = allowed.First(r => r.Flow.IsReply == false).Flow;
        var allowedBy = Assert.Single(first.IngressAllowedBy);
        Assert.Equal(("server-from-client", "shop", "CiliumNetworkPolicy"), (allowedBy.Name, allowedBy.Namespace, allowedBy.Kind));
        Assert.Equal(H.Verdict.Forwarded, first.Verdict);

        // Blacklist and first: the oldest flow not from shop/client.
        var oldest = await ReadAllAsync(client, new H.GetFlowsRequest { Number = 1, First = true, Blacklist = { new H.FlowFilter { SourcePod = { "shop/client" } } } });
        Assert.NotEqual("client", Assert.Single(oldest).Flow.Source.PodName);

        // Server status: the flow store's capacity and what it has seen.
        var status = await client.ServerStatusAsync(new H.ServerStatusRequest());
        var agent = await lab.Agent.StatusAsync();
        Assert.Equal((ulong)agent.FlowStoreCapacity, status.MaxFlows);
        Assert.Equal(4096ul, status.MaxFlows);
        Assert.True(status.SeenFlows > 0);
        Assert.InRange(status.NumFlows, 1ul, status.MaxFlows);
        Assert.Equal(1u, status.NumConnectedNodes);
        Assert.Equal(0u, status.NumUnavailableNodes);
        Assert.True(status.UptimeNs > 0);
        Assert.False(string.IsNullOrEmpty(status.Version));

        var nodes = await client.GetNodesAsync(new H.GetNodesRequest());
        var node = Assert.Single(nodes.Nodes);
        Assert.Equal((lab.Node, H.NodeState.NodeConnected), (node.Name, node.State));
        var namespaces = await client.GetNamespacesAsync(new H.GetNamespacesRequest());
        Assert.Contains("data", namespaces.Namespaces.Select(n => n.Namespace_));
        Assert.Contains("shop", namespaces.Namespaces.Select(n => n.Namespace_));

        // A filter field Trellis does not evaluate is an error naming it, never ignored.
        var e = await Assert.ThrowsAsync<RpcException>(() => ReadAllAsync(client, new H.GetFlowsRequest
        {
            Number = 10,
            Whitelist = { new H.FlowFilter { SourceFqdn = { "*.example.com" } } },
        }));
        Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
        Assert.Contains("source_fqdn", e.Status.Detail);
        e = await Assert.ThrowsAsync<RpcException>(async () =>
        {
            using var call = client.GetAgentEvents(new H.GetAgentEventsRequest());
            await call.ResponseStream.MoveNext();
        });
        Assert.Equal(StatusCode.Unimplemented, e.StatusCode);

        // A third-party client (gRPC's C core) over TCP, inside the node's network namespace.
        await ThirdPartyClientOverTcpAsync(lab, intruderIp);
    }

    /// <summary>Python's grpcio sends the request bytes our generated types serialize and prints each response's bytes;
    /// our types decode them. No .NET on the client side of the wire.</summary>
    private async Task ThirdPartyClientOverTcpAsync(TestLab lab, string intruderIp)
    {
        const string script = """
            import binascii, sys, grpc
            channel = grpc.insecure_channel("127.0.0.1:4244")
            grpc.channel_ready_future(channel).result(timeout=10)
            status = channel.unary_unary("/observer.Observer/ServerStatus")(b"", timeout=10)
            print("status " + binascii.hexlify(status).decode())
            flows = channel.unary_stream("/observer.Observer/GetFlows")(binascii.unhexlify(sys.argv[1]), timeout=10)
            for r in flows:
                print("flow " + binascii.hexlify(r).decode())
            """;
        var request = new H.GetFlowsRequest { Number = 5, Whitelist = { new H.FlowFilter { SourceIp = { intruderIp }, Verdict = { H.Verdict.Dropped } } } };
        var netns = Naming.NetnsPath(Naming.NodeNetns(lab.Node));
        var r = await Processes.RunAsync("nsenter", TimeSpan.FromSeconds(30), $"--net={netns}", "--", "/usr/bin/python3", "-c", script,
            Convert.ToHexStringLower(request.ToByteArray()));
        Assert.True(r.Ok, $"python3 grpcio client over TCP 127.0.0.1:4244 in the node's netns (is python3-grpcio installed? scripts/install-deps.sh): {r}");
        var lines = r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var status = H.ServerStatusResponse.Parser.ParseFrom(Convert.FromHexString(lines.Single(l => l.StartsWith("status ", StringComparison.Ordinal))[7..]));
        Assert.Equal(4096ul, status.MaxFlows);
        Assert.True(status.SeenFlows > 0);
        var flows = lines.Where(l => l.StartsWith("flow ", StringComparison.Ordinal))
            .Select(l => H.GetFlowsResponse.Parser.ParseFrom(Convert.FromHexString(l[5..])).Flow).ToList();
        Assert.InRange(flows.Count, 1, 5);
        Assert.All(flows, f =>
        {
            Assert.Equal(H.Verdict.Dropped, f.Verdict);
            Assert.Equal(intruderIp, f.IP.Source);
            Assert.Equal("intruder", f.Source.PodName);
        });
    }

    [Theory]
    [InlineData("4244", "is not HOST:PORT")]
    [InlineData("127.0.0.1:grpc", "port 'grpc' is not a number")]
    [InlineData("hubble.example:4244", "host 'hubble.example' is not an IPv4 address")]
    public async Task A_bad_hubble_address_is_refused_before_the_agent_starts(string address, string message)
    {
        var r = await TrellisCli.RunAsync("agent", "--node", "it-nohubble", "--hubble-address", address);
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains($"--hubble-address: hubble address '{address}'", r.Stderr + r.Stdout);
        Assert.Contains(message, r.Stderr + r.Stdout);
    }

    [Fact]
    public async Task Follow_streams_a_flow_made_after_the_call_started()
    {
        await using var lab = await ShopAsync();
        var serverIp = await lab.IpAsync("shop", "server");
        await lab.ApplyPolicyAsync(ServerIngressFromClient("server-from-client", (TcpEcho, "TCP")));
        // Flows from before the call: a Follow with number 0 must not replay them.
        Assert.False((await lab.Pod("data", "intruder").TcpConnectAsync(serverIp, TcpEcho)).Ok);
        var intruderIp = await lab.IpAsync("data", "intruder");
        await lab.WaitForFlowAsync(f => f.Verdict == "DROPPED" && f.Source.Ip == intruderIp, "DROPPED from data/intruder");

        using var channel = UnixChannel(AgentPaths.HubbleSocket(lab.Node));
        var client = new H.Observer.ObserverClient(channel);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        using var call = client.GetFlows(new H.GetFlowsRequest
        {
            Follow = true,
            Whitelist = { new H.FlowFilter { SourcePod = { "data/intruder" }, DestinationPort = { TcpEcho2.ToString() }, TrafficDirection = { H.TrafficDirection.Ingress } } },
        }, cancellationToken: cts.Token);
        await call.ResponseHeadersAsync; // the agent has subscribed
        var started = DateTimeOffset.UtcNow;

        Assert.False((await lab.Pod("data", "intruder").TcpConnectAsync(serverIp, TcpEcho2)).Ok, "data/intruder -> server:7100 is not allowed");

        Assert.True(await call.ResponseStream.MoveNext(cts.Token), "the followed stream ended");
        var f = call.ResponseStream.Current.Flow;
        output.WriteLine(Describe(f));
        Assert.Equal("intruder", f.Source.PodName);
        Assert.Equal((uint)TcpEcho2, f.L4.TCP.DestinationPort);
        Assert.Equal(H.Verdict.Dropped, f.Verdict);
        Assert.Equal(H.DropReason.PolicyDenied, f.DropReasonDesc);
        Assert.True(f.Time.ToDateTimeOffset() >= started - TimeSpan.FromSeconds(1), $"flow at {f.Time.ToDateTimeOffset():O} predates the call ({started:O})");
        cts.Cancel();
    }
}
