using Trellis.Api;
using Trellis.Integration.Infrastructure;

namespace Trellis.Integration;

/// <summary>Mistakes are reported with where they are and what to do, and change nothing.</summary>
[Collection(LabCollectionA.Name)]
[Trait("Requires", "root")]
public sealed class BadInputTests
{
    private const string SmallLab = """
        apiVersion: v1
        kind: Namespace
        metadata:
          name: shop
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: web
          namespace: shop
          labels:
            app: web
        spec:
          containers:
            - name: c
              command: ["sleep", "3600"]
        """;

    private const string GoodPolicy = """
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata:
          name: web-from-client
          namespace: shop
        spec:
          endpointSelector:
            matchLabels:
              app: web
          ingress:
            - fromEndpoints:
                - matchLabels:
                    app: client
        """;

    // A valid document first: a bad file applies nothing at all, not its valid part.
    private const string UnknownField = """
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata:
          name: valid-part
          namespace: shop
        spec:
          endpointSelector:
            matchLabels:
              app: web
          ingress:
            - fromEndpoints:
                - matchLabels:
                    app: client
        ---
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata:
          name: typo
          namespace: shop
        spec:
          endpointSelector:
            matchLabels:
              app: web
          ingress:
            - fromEndpoint:
                - matchLabels:
                    app: client
        """;

    private const string WrongProtocol = """
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata:
          name: bad-protocol
          namespace: shop
        spec:
          endpointSelector:
            matchLabels:
              app: web
          ingress:
            - toPorts:
                - ports:
                    - port: "80"
                      protocol: HTTP
        """;

    [Fact]
    public async Task Malformed_policy_is_rejected_with_file_line_and_field_and_nothing_is_applied()
    {
        await using var lab = await TestLab.UpAsync(SmallLab);
        await lab.ApplyPolicyAsync(GoodPolicy, "good.yaml");
        var before = await lab.Agent.PoliciesAsync();
        var endpointBefore = await lab.EndpointAsync("shop", "web");

        foreach (var (name, yaml, marker, field) in new[]
                 {
                     ("unknown-field.yaml", UnknownField, "- fromEndpoint:", "fromEndpoint"),
                     ("wrong-protocol.yaml", WrongProtocol, "protocol: HTTP", "protocol"),
                 })
        {
            var path = Path.Combine(lab.Dir, name);
            var e = await Assert.ThrowsAsync<AgentRequestException>(() => lab.Agent.ApplyPolicyAsync(path, yaml));
            Assert.Equal(System.Net.HttpStatusCode.BadRequest, e.Status);
            Assert.Contains($"{path}:{LineOf(yaml, marker)}:", e.Message);
            Assert.Contains(field, e.Message);
        }

        var after = await lab.Agent.PoliciesAsync();
        Assert.Equal(before.Select(p => (p.Id, p.Name, p.Namespace, p.AppliedAt)), after.Select(p => (p.Id, p.Name, p.Namespace, p.AppliedAt)));
        Assert.DoesNotContain(after, p => p.Name == "valid-part");
        var endpointAfter = await lab.EndpointAsync("shop", "web");
        Assert.Equal((endpointBefore.Identity, endpointBefore.IngressEnforced, endpointBefore.EgressEnforced),
            (endpointAfter.Identity, endpointAfter.IngressEnforced, endpointAfter.EgressEnforced));
    }

    [Fact]
    public async Task Endpoint_with_a_malformed_or_half_given_mac_is_refused_and_the_endpoint_is_unchanged()
    {
        await using var lab = await TestLab.UpAsync(SmallLab);
        var before = await lab.EndpointAsync("shop", "web");
        var request = new CreateEndpointRequest("shop", "web", new Dictionary<string, string> { ["app"] = "web" }, before.Ip, before.Ifname,
            Trellis.Lab.Naming.NetnsPath(Trellis.Lab.Naming.PodNetns(lab.Node, "shop", "web")), Trellis.Lab.Cgroups.PodDir(lab.Node, "shop", "web"));
        foreach (var (mac, hostMac, says) in new (string?, string?, string)[]
                 {
                     ("02:00:00:00:00:zz", "02:00:00:00:00:01", "mac '02:00:00:00:00:zz' is not a unicast MAC address"),
                     ("02:00:00:00:00:02", "ff:ff:ff:ff:ff:ff", "hostMac 'ff:ff:ff:ff:ff:ff' is not a unicast MAC address"),
                     ("02:00:00:00:00:02", null, "give both mac and hostMac, or neither"),
                 })
        {
            var e = await Assert.ThrowsAsync<AgentRequestException>(() => lab.Agent.PutEndpointAsync(request with { Mac = mac, HostMac = hostMac }));
            Assert.Equal(System.Net.HttpStatusCode.BadRequest, e.Status);
            Assert.Contains("endpoint shop/web: " + says, e.Message);
        }
        var after = await lab.EndpointAsync("shop", "web");
        Assert.Equal((before.Id, before.Identity, before.Ifindex), (after.Id, after.Identity, after.Ifindex));
    }

    [Fact]
    public async Task Cli_policy_apply_of_malformed_file_exits_non_zero_naming_file_and_line()
    {
        await using var lab = await TestLab.UpAsync(SmallLab);
        var before = await lab.Agent.PoliciesAsync();
        var path = lab.WriteFile("bad.yaml", UnknownField);

        var r = await TrellisCli.RunAsync("policy", "apply", "-f", path, "--node", lab.Node);

        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains($"{path}:{LineOf(UnknownField, "- fromEndpoint:")}:", r.Stderr);
        Assert.Contains("fromEndpoint", r.Stderr);
        Assert.DoesNotContain("applied", r.Stdout);
        Assert.Equal(before.Count, (await lab.Agent.PoliciesAsync()).Count);

        var good = await TrellisCli.RunAsync("policy", "apply", "-f", lab.WriteFile("good.yaml", GoodPolicy), "--node", lab.Node);
        Assert.True(good.Ok, $"a valid file applies through the CLI: {good}");
        Assert.Contains("web-from-client applied", good.Stdout);
    }

    [Fact]
    public async Task Cli_lab_exec_of_unknown_pod_exits_non_zero_saying_the_pod_is_not_found()
    {
        await using var lab = await TestLab.UpAsync(SmallLab);

        var r = await TrellisCli.RunAsync("lab", "exec", "nosuchpod", "-n", "default", "--node", lab.Node, "--", "true");

        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("nosuchpod", r.Stderr);
        Assert.Contains("not found", r.Stderr);

        var ok = await TrellisCli.RunAsync("lab", "exec", "web", "-n", "shop", "--node", lab.Node, "--", "true");
        Assert.True(ok.Ok, $"exec in an existing pod works: {ok}");
    }

    [Fact]
    public async Task Cli_status_without_an_agent_exits_non_zero_naming_the_socket()
    {
        var node = TestLab.NodeNameFor(nameof(Cli_status_without_an_agent_exits_non_zero_naming_the_socket));
        Assert.False(Directory.Exists(AgentPaths.RunDir(node)));

        var r = await TrellisCli.RunAsync("status", "--node", node);

        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains(AgentPaths.Socket(node), r.Stderr);
        Assert.Contains("does not exist", r.Stderr);
        Assert.Contains("trellis lab up", r.Stderr); // and what to do about it
    }

    private static int LineOf(string text, string marker)
    {
        var lines = text.Split('\n');
        var i = Array.FindIndex(lines, l => l.Contains(marker));
        Assert.True(i >= 0, $"marker '{marker}' not in the test's YAML");
        return i + 1;
    }
}
