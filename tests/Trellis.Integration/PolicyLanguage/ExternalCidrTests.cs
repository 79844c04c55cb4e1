using Trellis.Integration.Infrastructure;
using static Trellis.Integration.Infrastructure.Labs;

namespace Trellis.Integration.PolicyLanguage;

/// <summary>CIDR rules against real traffic leaving the cluster for a "world" namespace behind the node.</summary>
[Collection(LabCollectionA.Name)]
[Trait("Requires", "root")]
public sealed class ExternalCidrTests
{
    private const string Inside = "192.0.2.10";   // in 192.0.2.0/24, outside the except
    private const string Excepted = "192.0.2.200"; // in the except 192.0.2.128/25
    private const int Port = 9000;

    [Fact]
    public async Task CIDRSet_and_ipBlock_except_carve_a_hole_in_allowed_egress_to_the_world()
    {
        await using var lab = await ShopAsync();
        using var world = WorldNetwork.Create(lab, Inside, Excepted);
        await world.ServeTcpAsync(Port);
        var client = lab.Pod("shop", "client");
        var server = lab.Pod("shop", "server");
        var clientIp = await lab.IpAsync("shop", "client");
        await client.AssertConnectsAsync(Inside, Port, "no policy yet: the world is routed through the node");
        await client.AssertConnectsAsync(Excepted, Port, "no policy yet");

        await lab.ApplyPolicyAsync("""
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata:
              name: client-to-world
              namespace: shop
            spec:
              endpointSelector:
                matchLabels:
                  app: client
              egress:
                - toCIDRSet:
                    - cidr: 192.0.2.0/24
                      except:
                        - 192.0.2.128/25
                  toPorts:
                    - ports:
                        - port: "9000"
                          protocol: TCP
            """);

        await client.AssertConnectsAsync(Inside, Port, "inside the CIDR, outside the except");
        await client.AssertBlockedAsync(Excepted, Port, "inside the except");
        await server.AssertConnectsAsync(Inside, Port, "no policy selects the server");
        await server.AssertConnectsAsync(Excepted, Port, "no policy selects the server");

        var fwd = await lab.WaitForFlowAsync(f => Probes.Syn(f, clientIp, Inside, Port) && f.Verdict == "FORWARDED", $"FORWARDED client -> {Inside}");
        Assert.Equal("EGRESS", fwd.Direction);
        var drop = await lab.WaitForFlowAsync(f => Probes.Syn(f, clientIp, Excepted, Port) && f.Verdict == "DROPPED", $"DROPPED client -> {Excepted}");
        Assert.Equal("policy denied", drop.DropReason);
        Assert.Equal("EGRESS", drop.Direction);

        var allowed = await lab.Agent.TraceAsync(new("shop", "client", null, null, null, Inside, Port, "TCP"));
        Assert.True(allowed.Allowed, string.Join("; ", allowed.Steps.Select(s => s.Verdict)));
        var denied = await lab.Agent.TraceAsync(new("shop", "client", null, null, null, Excepted, Port, "TCP"));
        Assert.False(denied.Allowed, string.Join("; ", denied.Steps.Select(s => s.Verdict)));

        // The same hole through a Kubernetes NetworkPolicy ipBlock.
        await lab.Agent.DeletePolicyAsync("shop", "client-to-world");
        await client.AssertConnectsAsync(Excepted, Port, "the CNP is gone");
        var since = DateTimeOffset.UtcNow;
        await lab.ApplyPolicyAsync("""
            apiVersion: networking.k8s.io/v1
            kind: NetworkPolicy
            metadata:
              name: client-to-world-ipblock
              namespace: shop
            spec:
              podSelector:
                matchLabels:
                  app: client
              policyTypes: [Egress]
              egress:
                - to:
                    - ipBlock:
                        cidr: 192.0.2.0/24
                        except:
                          - 192.0.2.128/25
                  ports:
                    - port: 9000
            """);
        await client.AssertConnectsAsync(Inside, Port, "inside the ipBlock, outside the except");
        await client.AssertBlockedAsync(Excepted, Port, "inside the ipBlock's except");
        await server.AssertConnectsAsync(Excepted, Port, "no policy selects the server");
        var ipBlockDrop = await lab.WaitForFlowSinceAsync(since, f => Probes.Syn(f, clientIp, Excepted, Port) && f.Verdict == "DROPPED",
            $"DROPPED client -> {Excepted} (ipBlock)");
        Assert.Equal("policy denied", ipBlockDrop.DropReason);
    }

    [Fact]
    public async Task FromCIDRSet_except_admits_world_sources_inside_the_CIDR_only()
    {
        await using var lab = await ShopAsync();
        using var world = WorldNetwork.Create(lab, Inside, Excepted);
        var serverIp = await lab.IpAsync("shop", "server");

        await lab.ApplyPolicyAsync("""
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata:
              name: server-from-world
              namespace: shop
            spec:
              endpointSelector:
                matchLabels:
                  app: server
              ingress:
                - fromCIDRSet:
                    - cidr: 192.0.2.0/24
                      except:
                        - 192.0.2.128/25
                  toPorts:
                    - ports:
                        - port: "7000"
                          protocol: TCP
            """);

        var inside = await world.ConnectAsync(Inside, serverIp, TcpEcho);
        Assert.True(inside.Ok, $"{Inside} is in the CIDR and outside the except: {inside}");
        var excepted = await world.ConnectAsync(Excepted, serverIp, TcpEcho);
        Assert.False(excepted.Ok, $"{Excepted} is in the except: {excepted}");

        await lab.WaitForFlowAsync(f => Probes.Syn(f, Inside, serverIp, TcpEcho) && f.Verdict == "FORWARDED", $"FORWARDED {Inside} -> server");
        var drop = await lab.WaitForFlowAsync(f => Probes.Syn(f, Excepted, serverIp, TcpEcho) && f.Verdict == "DROPPED", $"DROPPED {Excepted} -> server");
        Assert.Equal("policy denied", drop.DropReason);
        Assert.Equal("INGRESS", drop.Direction);
        var trace = await lab.Agent.TraceAsync(new(null, null, Excepted, "shop", "server", null, TcpEcho, "TCP"));
        Assert.False(trace.Allowed, string.Join("; ", trace.Steps.Select(s => s.Verdict)));
    }
}
