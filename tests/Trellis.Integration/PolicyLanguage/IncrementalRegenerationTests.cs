using Trellis.Integration.Infrastructure;
using static Trellis.Integration.Infrastructure.Labs;

namespace Trellis.Integration.PolicyLanguage;

/// <summary>Changes rewrite only the policy maps of the endpoints they affect, and live traffic follows.</summary>
[Collection(LabCollectionB.Name)]
[Trait("Requires", "root")]
public sealed class IncrementalRegenerationTests
{
    [Fact]
    public async Task Policy_and_label_changes_rewrite_only_affected_endpoint_maps_and_traffic_follows()
    {
        await using var lab = await ShopAsync();
        var client = lab.Pod("shop", "client");
        var serverIp = await lab.IpAsync("shop", "server");
        async Task<long> Writes() => (await lab.Agent.StatusAsync()).PolicyMapWrites;

        // The policy selects only shop/server: one map is written, not three.
        var before = await Writes();
        await lab.ApplyPolicyAsync(ServerIngressFromClient("server-from-client", (TcpEcho, "TCP")));
        Assert.Equal(1, await Writes() - before);
        await client.AssertConnectsAsync(serverIp, TcpEcho, "client is allowed");

        // Re-applying the same policy changes nothing: no map is rewritten.
        before = await Writes();
        await lab.ApplyPolicyAsync(ServerIngressFromClient("server-from-client", (TcpEcho, "TCP")));
        Assert.Equal(0, await Writes() - before);

        // Relabelling the client gives it a new identity: the server's map (the only policy that could
        // name it) is rewritten, the client's own map (no policy selects it) is not, and traffic follows.
        before = await Writes();
        var moved = await lab.Agent.SetEndpointLabelsAsync("shop", "client", new Dictionary<string, string?> { ["app"] = "stranger" });
        Assert.Equal("stranger", moved.Labels["app"]);
        Assert.Equal(1, await Writes() - before);
        await client.AssertBlockedAsync(serverIp, TcpEcho, "client relabelled app=stranger");

        var back = await lab.Agent.SetEndpointLabelsAsync("shop", "client", new Dictionary<string, string?> { ["app"] = "client" });
        await client.AssertConnectsAsync(serverIp, TcpEcho, "client labelled app=client again");
        var trace = await lab.Agent.TraceAsync(new("shop", "client", null, "shop", "server", null, TcpEcho, "TCP"));
        Assert.True(trace.Allowed);
        Assert.Equal(back.Identity, trace.SourceIdentity);

        // Deleting the policy rewrites only the server's map again.
        before = await Writes();
        await lab.Agent.DeletePolicyAsync("shop", "server-from-client");
        Assert.Equal(1, await Writes() - before);
    }
}

[Collection(LabCollectionA.Name)]
[Trait("Requires", "root")]
public sealed class EndpointGetTests
{
    [Fact]
    public async Task Endpoint_get_names_the_selecting_rule_and_the_installed_allow_table()
    {
        await using var lab = await ShopAsync();
        await lab.ApplyPolicyAsync(ServerIngressFromClient("server-from-client", (TcpEcho, "TCP")));
        var client = await lab.EndpointAsync("shop", "client");

        var server = await lab.Agent.GetEndpointAsync("shop", "server");
        var rule = Assert.Single(server.SelectedBy!);
        Assert.Equal(("server-from-client", "shop", true, false), (rule.Name, rule.Namespace, rule.IngressDefaultDeny, rule.EgressDefaultDeny));
        var entry = Assert.Single(server.Policy);
        Assert.Equal(("INGRESS", client.Identity, "TCP", TcpEcho.ToString(), "ALLOW"), (entry.Direction, entry.PeerIdentity, entry.Protocol, entry.Ports, entry.Verdict));

        var unselected = await lab.Agent.GetEndpointAsync("shop", "client");
        Assert.Empty(unselected.SelectedBy!);
        Assert.Empty(unselected.Policy);
    }
}
