using Trellis.Integration.Infrastructure;
using Trellis.Integration.PolicyLanguage;
using Trellis.Lab;

namespace Trellis.Integration.L7;

/// <summary>HTTP rules on a pod's ingress for clients that are not pods of the node: a client outside the node is
/// redirected by the node device's TC program; the node itself has no TC ingress hook to redirect from, so its
/// connections to such a port are refused (fail closed) — the documented limit.</summary>
[Collection(LabCollectionB.Name)]
[Trait("Requires", "root")]
public sealed class L7FromOutsideTests
{
    private const string WorldClient = "192.0.2.10";

    private const string LabYaml = """
        apiVersion: v1
        kind: Pod
        metadata: {name: web, labels: {app: web}}
        spec:
          containers:
            - {name: http, command: ["python3", "-m", "http.server", "8080"]}
        """;

    private const string Policy = """
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: web-http-from-outside}
        spec:
          endpointSelector: {matchLabels: {app: web}}
          ingress:
            - fromEntities: [world, host]
              toPorts:
                - ports: [{port: "8080", protocol: TCP}]
                  rules: {http: [{method: GET, path: "/"}]}
        """;

    [Fact]
    public async Task A_client_outside_the_node_gets_its_requests_checked_and_the_node_itself_is_refused()
    {
        await using var lab = await TestLab.UpAsync(LabYaml);
        using var world = WorldNetwork.Create(lab, WorldClient);
        await lab.Pod("default", "web").WaitListeningAsync(8080);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while ((await lab.Agent.StatusAsync()).Devices?.Any(d => d.Name == "world0") != true)
        {
            if (DateTime.UtcNow > deadline) throw new Xunit.Sdk.XunitException("the agent did not pick up device world0 within 10 s");
            await Task.Delay(200);
        }
        var web = await lab.IpAsync("default", "web");
        await lab.ApplyPolicyAsync(Policy);

        async Task<string> Curl(string netnsPath, string path) => (await Probes.NetnsExecAsync(netnsPath, TimeSpan.FromSeconds(10),
            "curl", "-s", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}", $"http://{web}:8080{path}")).Stdout.Trim();

        Assert.Equal("200", await Curl(world.NetnsPath, "/"));
        Assert.Equal("403", await Curl(world.NetnsPath, "/secret"));
        var redirected = await lab.WaitForFlowAsync(f => f.Source.Ip == WorldClient && f.Verdict == "REDIRECTED" && f.Destination.Port == 8080,
            "the outside client's connection handed to the proxy");
        Assert.Equal(2u, redirected.Source.Identity); // reserved:world: the real client, not the node
        var denied = await lab.WaitForFlowAsync(f => f.L7?.Http is { Code: 403 } && f.Source.Ip == WorldClient, "the L7 denial");
        Assert.Equal(("DROPPED", "L7 policy denied", "INGRESS"), (denied.Verdict, denied.DropReason, denied.Direction));
        Assert.EndsWith("/secret", denied.L7!.Http!.Url, StringComparison.Ordinal);
        var allowed = await lab.WaitForFlowAsync(f => f.L7?.Http is { Code: 200 } && f.Source.Ip == WorldClient, "the allowed request");
        Assert.Equal("FORWARDED", allowed.Verdict);

        // The node itself: allowed at L4 by the same rule, but its packets cross no TC ingress hook that could
        // hand them to the proxy, so they are refused rather than let through unchecked.
        Assert.Equal("000", await Curl(Naming.NetnsPath(Naming.NodeNetns(lab.Node)), "/"));
        var refused = await lab.WaitForFlowAsync(f => f.Destination.Port == 8080 && f.Source.Identity == 1 && f.Verdict == "DROPPED",
            "the node's connection refused");
        Assert.Equal("L7 policy denied", refused.DropReason);
    }
}
