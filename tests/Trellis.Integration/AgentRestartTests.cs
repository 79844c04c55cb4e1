using System.Diagnostics;
using Trellis.Api;
using Trellis.Integration.Infrastructure;
using static Trellis.Integration.Infrastructure.Labs;

namespace Trellis.Integration;

/// <summary>The datapath lives in the kernel: it keeps enforcing while the agent is gone, and a new agent
/// re-adopts the endpoints as they were.</summary>
[Collection(LabCollectionB.Name)]
[Trait("Requires", "root")]
public sealed class AgentRestartTests
{
    [Fact]
    public async Task Killed_agent_leaves_open_connection_and_policy_working_and_restart_readopts_same_endpoints()
    {
        await using var lab = await ShopAsync();
        var client = lab.Pod("shop", "client");
        var intruder = lab.Pod("data", "intruder");
        var serverIp = await lab.IpAsync("shop", "server");
        await lab.ApplyPolicyAsync(ServerIngressFromClient("server-from-client", (TcpEcho, "TCP")));
        var endpointsBefore = await lab.Agent.EndpointsAsync();
        var identitiesBefore = await lab.Agent.IdentitiesAsync();
        var policiesBefore = await lab.Agent.PoliciesAsync();

        var conn = client.OpenEcho(serverIp, TcpEcho);
        await conn.AssertWorksAsync("before the agent is killed");

        var pid = lab.AgentPid();
        KillAgent(pid, "KILL");

        // No agent: the kernel keeps forwarding and enforcing on its own.
        using (var fresh = new AgentClient(AgentPaths.Socket(lab.Node)))
            await Assert.ThrowsAsync<AgentUnavailableException>(() => fresh.StatusAsync());
        await conn.AssertWorksAsync("while the agent is down");
        await AssertPolicyEnforcedAsync(client, intruder, serverIp, "while the agent is down");

        await lab.ReUpAsync();
        var newPid = lab.AgentPid();
        Assert.NotEqual(pid, newPid);
        await conn.AssertWorksAsync("after the agent restarted");
        AssertSameEndpoints(endpointsBefore, await lab.Agent.EndpointsAsync());
        Assert.Equal(Describe(identitiesBefore), Describe(await lab.Agent.IdentitiesAsync()));
        Assert.Equal(policiesBefore.Select(p => (p.Id, p.Name, p.Namespace)), (await lab.Agent.PoliciesAsync()).Select(p => (p.Id, p.Name, p.Namespace)));
        await AssertPolicyEnforcedAsync(client, intruder, serverIp, "after the agent restarted");

        // `lab up` again is idempotent: same agent, same endpoints, the pods' servers keep running.
        await lab.ReUpAsync();
        Assert.Equal(newPid, lab.AgentPid());
        AssertSameEndpoints(endpointsBefore, await lab.Agent.EndpointsAsync());
        await conn.AssertWorksAsync("after a second lab up");
        Assert.False(conn.Exited);
    }

    [Fact]
    public async Task Identities_are_shared_by_equal_label_sets_per_namespace_and_stable_across_agent_restart()
    {
        await using var lab = await TestLab.UpAsync("""
            apiVersion: v1
            kind: Namespace
            metadata:
              name: shop
            ---
            apiVersion: v1
            kind: Namespace
            metadata:
              name: data
            ---
            apiVersion: v1
            kind: Pod
            metadata: {name: web-1, namespace: shop, labels: {app: web, tier: front}}
            spec: {containers: [{name: c, command: ["sleep", "3600"]}]}
            ---
            apiVersion: v1
            kind: Pod
            metadata: {name: web-2, namespace: shop, labels: {tier: front, app: web}}
            spec: {containers: [{name: c, command: ["sleep", "3600"]}]}
            ---
            apiVersion: v1
            kind: Pod
            metadata: {name: web-3, namespace: data, labels: {app: web, tier: front}}
            spec: {containers: [{name: c, command: ["sleep", "3600"]}]}
            ---
            apiVersion: v1
            kind: Pod
            metadata: {name: api, namespace: shop, labels: {app: api}}
            spec: {containers: [{name: c, command: ["sleep", "3600"]}]}
            """);
        var before = (await lab.Agent.EndpointsAsync()).ToDictionary(e => e.Pod);
        Assert.Equal(before["web-1"].Identity, before["web-2"].Identity);
        Assert.NotEqual(before["web-1"].Identity, before["web-3"].Identity);
        Assert.NotEqual(before["web-1"].Identity, before["api"].Identity);
        var identities = await lab.Agent.IdentitiesAsync();
        Assert.Equal(2, identities.Single(i => i.Id == before["web-1"].Identity).Endpoints);
        Assert.Equal(3, identities.Select(i => i.Id).Intersect(before.Values.Select(e => e.Identity)).Count());

        KillAgent(lab.AgentPid(), "TERM");
        await lab.ReUpAsync();
        var after = (await lab.Agent.EndpointsAsync()).ToDictionary(e => e.Pod);
        Assert.Equal(before.ToDictionary(e => e.Key, e => e.Value.Identity), after.ToDictionary(e => e.Key, e => e.Value.Identity));
        Assert.Equal(Describe(identities), Describe(await lab.Agent.IdentitiesAsync()));

        KillAgent(lab.AgentPid(), "KILL");
        await lab.ReUpAsync();
        after = (await lab.Agent.EndpointsAsync()).ToDictionary(e => e.Pod);
        Assert.Equal(before.ToDictionary(e => e.Key, e => e.Value.Identity), after.ToDictionary(e => e.Key, e => e.Value.Identity));
    }

    private static async Task AssertPolicyEnforcedAsync(Pod client, Pod intruder, string serverIp, string when)
    {
        var denied = await intruder.TcpConnectAsync(serverIp, TcpEcho);
        Assert.False(denied.Ok, $"data/intruder -> server:{TcpEcho} is denied {when}: {denied}");
        var allowed = await client.TcpConnectAsync(serverIp, TcpEcho);
        Assert.True(allowed.Ok, $"shop/client -> server:{TcpEcho} is allowed {when}: {allowed}");
        var deniedPort = await client.TcpConnectAsync(serverIp, TcpEcho2);
        Assert.False(deniedPort.Ok, $"shop/client -> server:{TcpEcho2} is denied {when}: {deniedPort}");
    }

    private static void AssertSameEndpoints(List<EndpointDto> before, List<EndpointDto> after)
    {
        static IEnumerable<string> Key(List<EndpointDto> l) => l.OrderBy(e => e.Namespace).ThenBy(e => e.Pod)
            .Select(e => $"{e.Namespace}/{e.Pod} id={e.Id} identity={e.Identity} ip={e.Ip} if={e.Ifname}#{e.Ifindex} in={e.IngressEnforced} out={e.EgressEnforced} {e.State}");
        Assert.Equal(Key(before), Key(after));
    }

    private static IEnumerable<string> Describe(List<IdentityDto> ids) =>
        ids.OrderBy(i => i.Id).Select(i => $"{i.Id} {string.Join(",", i.Labels.OrderBy(l => l.Key).Select(l => $"{l.Key}={l.Value}"))} x{i.Endpoints}");

    /// <summary>Signals the agent and waits until it and all its threads are gone.</summary>
    private static void KillAgent(int pid, string signal)
    {
        using (var kill = Process.Start("kill", [$"-{signal}", pid.ToString()])) kill.WaitForExit();
        var sw = Stopwatch.StartNew();
        while (Processes.IsRunning(pid))
        {
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(10), $"agent {pid} did not exit within 10 s of SIG{signal}");
            Thread.Sleep(50);
        }
    }
}
