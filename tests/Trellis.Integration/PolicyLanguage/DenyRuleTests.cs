using Trellis.Integration.Infrastructure;
using static Trellis.Integration.Infrastructure.Labs;

namespace Trellis.Integration.PolicyLanguage;

/// <summary>ingressDeny rules: they win over any allow, whichever policy came first, and need no default deny.</summary>
[Collection(LabCollectionB.Name)]
[Trait("Requires", "root")]
public sealed class DenyRuleTests
{
    private const string AllowNamespace = """
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata:
          name: allow-namespace
          namespace: shop
        spec:
          endpointSelector:
            matchLabels:
              app: server
          ingress:
            - fromEndpoints:
                - {}
        """;

    private const string DenyEcho2 = """
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata:
          name: deny-echo2
          namespace: shop
        spec:
          endpointSelector:
            matchLabels:
              app: server
          ingressDeny:
            - fromEndpoints:
                - {}
              toPorts:
                - ports:
                    - port: "7100"
                      protocol: TCP
        """;

    [Fact]
    public async Task Deny_rule_beats_an_allow_all_from_namespace_whichever_is_applied_first()
    {
        await using var lab = await ShopAsync();
        var client = lab.Pod("shop", "client");
        var serverIp = await lab.IpAsync("shop", "server");
        var clientIp = await lab.IpAsync("shop", "client");

        foreach (var (first, second) in new[] { (AllowNamespace, DenyEcho2), (DenyEcho2, AllowNamespace) })
        {
            var order = first == AllowNamespace ? "allow applied first" : "deny applied first";
            var since = DateTimeOffset.UtcNow;
            await lab.ApplyPolicyAsync(first, "first.yaml");
            await lab.ApplyPolicyAsync(second, "second.yaml");

            await client.AssertConnectsAsync(serverIp, TcpEcho, $"allowed from the namespace; {order}");
            var http = await client.HttpGetAsync(serverIp, Http);
            Assert.True(http.Ok, $"HTTP is allowed from the namespace ({order}): {http}");
            await client.AssertBlockedAsync(serverIp, TcpEcho2, $"the deny rule covers 7100; {order}");

            var drop = await lab.WaitForFlowSinceAsync(since, f => Probes.Syn(f, clientIp, serverIp, TcpEcho2) && f.Verdict == "DROPPED",
                $"DROPPED client -> server:7100 ({order})");
            Assert.Equal("policy deny rule", drop.DropReason);
            Assert.Equal("INGRESS", drop.Direction);
            await lab.WaitForFlowSinceAsync(since, f => Probes.Syn(f, clientIp, serverIp, TcpEcho) && f.Verdict == "FORWARDED",
                $"FORWARDED client -> server:7000 ({order})");

            var trace = await lab.Agent.TraceAsync(new("shop", "client", null, "shop", "server", null, TcpEcho2, "TCP"));
            Assert.False(trace.Allowed);
            var ingress = Assert.Single(trace.Steps, s => s.Direction == "INGRESS");
            Assert.Equal("deny-echo2", ingress.PolicyName);

            await lab.Agent.DeletePolicyAsync("shop", "allow-namespace");
            await lab.Agent.DeletePolicyAsync("shop", "deny-echo2");
        }
    }

    [Fact]
    public async Task Deny_rule_without_default_deny_blocks_only_its_port()
    {
        await using var lab = await ShopAsync();
        var client = lab.Pod("shop", "client");
        var intruder = lab.Pod("data", "intruder");
        var serverIp = await lab.IpAsync("shop", "server");
        var intruderIp = await lab.IpAsync("data", "intruder");

        await lab.ApplyPolicyAsync("""
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata:
              name: only-deny-echo2
              namespace: shop
            spec:
              endpointSelector:
                matchLabels:
                  app: server
              enableDefaultDeny:
                ingress: false
              ingressDeny:
                - fromEntities:
                    - all
                  toPorts:
                    - ports:
                        - port: "7100"
                          protocol: TCP
            """);

        await client.AssertBlockedAsync(serverIp, TcpEcho2, "denied from all");
        await intruder.AssertBlockedAsync(serverIp, TcpEcho2, "denied from all");
        await client.AssertConnectsAsync(serverIp, TcpEcho, "no default deny: unlisted ports stay open");
        await intruder.AssertConnectsAsync(serverIp, TcpEcho, "no default deny: other namespaces too");
        var http = await intruder.HttpGetAsync(serverIp, Http);
        Assert.True(http.Ok, $"HTTP from another namespace is untouched: {http}");

        var drop = await lab.WaitForFlowAsync(f => Probes.Syn(f, intruderIp, serverIp, TcpEcho2) && f.Verdict == "DROPPED", "DROPPED intruder -> server:7100");
        Assert.Equal("policy deny rule", drop.DropReason);
        var fwd = await lab.WaitForFlowAsync(f => Probes.Syn(f, intruderIp, serverIp, TcpEcho) && f.Verdict == "FORWARDED", "FORWARDED intruder -> server:7000");
        Assert.Null(fwd.DropReason);

        var trace = await lab.Agent.TraceAsync(new("data", "intruder", null, "shop", "server", null, TcpEcho, "TCP"));
        Assert.True(trace.Allowed, string.Join("; ", trace.Steps.Select(s => s.Verdict)));
    }
}
