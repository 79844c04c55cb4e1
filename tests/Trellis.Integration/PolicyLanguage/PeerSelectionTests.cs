using Trellis.Integration.Infrastructure;
using static Trellis.Integration.Infrastructure.Labs;

namespace Trellis.Integration.PolicyLanguage;

/// <summary>Who a rule's peer is: namespace and pod selectors combined, and the reserved entities.</summary>
[Collection(LabCollectionB.Name)]
[Trait("Requires", "root")]
public sealed class PeerSelectionTests
{
    private const string TwoNamespaces = """
        apiVersion: v1
        kind: Namespace
        metadata:
          name: x
          labels:
            ns: x
        ---
        apiVersion: v1
        kind: Namespace
        metadata:
          name: y
          labels:
            ns: y
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: server
          namespace: x
          labels:
            app: server
        spec:
          containers:
            - name: echo
              command: ["socat", "TCP-LISTEN:7000,fork,reuseaddr", "EXEC:cat"]
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: a
          namespace: x
          labels:
            pod: a
        spec:
          containers:
            - name: idle
              command: ["sleep", "infinity"]
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: a
          namespace: y
          labels:
            pod: a
        spec:
          containers:
            - name: idle
              command: ["sleep", "infinity"]
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: b
          namespace: y
          labels:
            pod: b
        spec:
          containers:
            - name: idle
              command: ["sleep", "infinity"]
        """;

    private static string ServerIngress(string name, string peers) => $$"""
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: {{name}}
          namespace: x
        spec:
          podSelector:
            matchLabels:
              app: server
          ingress:
            - from:
        {{peers}}
        """;

    [Fact]
    public async Task Namespace_and_pod_selector_in_one_peer_must_both_match_and_in_two_peers_either_may()
    {
        await using var lab = await TestLab.UpAsync(TwoNamespaces);
        await lab.Pod("x", "server").WaitListeningAsync(TcpEcho);
        var serverIp = await lab.IpAsync("x", "server");
        var ya = lab.Pod("y", "a");
        var yb = lab.Pod("y", "b");
        var xa = lab.Pod("x", "a");

        await lab.ApplyPolicyAsync(ServerIngress("y-and-a", """
                    - namespaceSelector:
                        matchLabels:
                          ns: y
                      podSelector:
                        matchLabels:
                          pod: a
            """));
        await ya.AssertConnectsAsync(serverIp, TcpEcho, "namespace ns=y AND pod=a");
        await yb.AssertBlockedAsync(serverIp, TcpEcho, "right namespace, wrong pod");
        await xa.AssertBlockedAsync(serverIp, TcpEcho, "right pod label, wrong namespace");
        var ybIp = await lab.IpAsync("y", "b");
        var drop = await lab.WaitForFlowAsync(f => Probes.Syn(f, ybIp, serverIp, TcpEcho) && f.Verdict == "DROPPED", "DROPPED y/b -> x/server");
        Assert.Equal("policy denied", drop.DropReason);
        Assert.Equal(("y", "b"), (drop.Source.Namespace, drop.Source.Pod));

        // The same selectors as two peers are an OR: any pod of y, or pod=a of the policy's own namespace.
        await lab.Agent.DeletePolicyAsync("x", "y-and-a");
        await lab.ApplyPolicyAsync(ServerIngress("y-or-a", """
                    - namespaceSelector:
                        matchLabels:
                          ns: y
                    - podSelector:
                        matchLabels:
                          pod: a
            """));
        await ya.AssertConnectsAsync(serverIp, TcpEcho, "in namespace y");
        await yb.AssertConnectsAsync(serverIp, TcpEcho, "in namespace y");
        await xa.AssertConnectsAsync(serverIp, TcpEcho, "pod=a in the policy's namespace");
    }

    private static string EntityPolicy(string entity) => $$"""
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata:
          name: from-{{entity}}
          namespace: shop
        spec:
          endpointSelector:
            matchLabels:
              app: server
          ingress:
            - fromEntities:
                - {{entity}}
        """;

    [Fact]
    public async Task Host_entity_admits_the_node_but_not_pods_and_cluster_entity_admits_pods()
    {
        await using var lab = await ShopAsync();
        var client = lab.Pod("shop", "client");
        var intruder = lab.Pod("data", "intruder");
        var serverIp = await lab.IpAsync("shop", "server");
        var clientIp = await lab.IpAsync("shop", "client");
        var routerIp = (await lab.Agent.StatusAsync()).RouterIp;
        Assert.Equal(LabRunnerRouterIp(lab.PodCidr), routerIp);

        await lab.ApplyPolicyAsync(EntityPolicy("host"));
        var fromNode = await Probes.NodeConnectAsync(lab, serverIp, TcpEcho, TimeSpan.FromSeconds(2));
        Assert.True(fromNode.Ok, $"the node ({routerIp}) is the host entity: {fromNode}");
        await client.AssertBlockedAsync(serverIp, TcpEcho, "a pod is not the host");
        await intruder.AssertBlockedAsync(serverIp, TcpEcho, "a pod is not the host");

        var hostFlow = await lab.WaitForFlowAsync(f => Probes.Syn(f, routerIp, serverIp, TcpEcho) && f.Verdict == "FORWARDED", "FORWARDED node -> server");
        Assert.Equal(1u, hostFlow.Source.Identity); // reserved:host
        var drop = await lab.WaitForFlowAsync(f => Probes.Syn(f, clientIp, serverIp, TcpEcho) && f.Verdict == "DROPPED", "DROPPED client -> server");
        Assert.Equal("policy denied", drop.DropReason);
        var trace = await lab.Agent.TraceAsync(new(null, null, routerIp, "shop", "server", null, TcpEcho, "TCP"));
        Assert.True(trace.Allowed, string.Join("; ", trace.Steps.Select(s => s.Verdict)));

        await lab.Agent.DeletePolicyAsync("shop", "from-host");
        await lab.ApplyPolicyAsync(EntityPolicy("cluster"));
        await client.AssertConnectsAsync(serverIp, TcpEcho, "pods of this node are in the cluster");
        await intruder.AssertConnectsAsync(serverIp, TcpEcho, "pods of any namespace are in the cluster");
    }

    private static string LabRunnerRouterIp(string cidr)
    {
        var b = System.Net.IPAddress.Parse(cidr.Split('/')[0]).GetAddressBytes();
        b[3] += 1;
        return new System.Net.IPAddress(b).ToString();
    }
}
