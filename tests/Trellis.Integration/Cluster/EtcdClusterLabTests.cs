using System.Diagnostics;
using System.Text.Json;
using Trellis.Agent.Tests.State.Etcd;
using Trellis.Api;
using Trellis.Integration.Infrastructure;
using static Trellis.Integration.Infrastructure.Labs;

namespace Trellis.Integration.Cluster;

/// <summary>Lab nodes whose agents join one cluster through a real 3-member etcd (started for this class, killed at
/// the end): shared identities, the node list in `trellis status`, a dead node leaving after its lease, and an etcd
/// outage the datapath rides out.</summary>
[Collection(LabCollectionA.Name)]
[Trait("Requires", "root")]
public sealed class EtcdClusterLabTests(EtcdCluster etcd) : IClassFixture<EtcdCluster>, IAsyncLifetime
{
    private string Urls => string.Join(",", etcd.ClientUrls);

    // Every test starts with all members up (a failed test may have left them down) and a cluster name of its own.
    public Task InitializeAsync() => etcd.EnsureAllRunningAsync();
    public Task DisposeAsync() => Task.CompletedTask;

    private static string ClusterName() => "w8-" + Guid.NewGuid().ToString("N")[..8];

    /// <summary>Namespace shop and one idle pod per app, named and labelled app=&lt;name&gt;, created in this order.</summary>
    private static string IdlePods(params string[] apps) =>
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n" + IdlePodsIn("shop", apps);

    /// <summary>Only the pods, in <paramref name="ns"/> ("default" needs no Namespace resource).</summary>
    private static string IdlePodsIn(string ns, params string[] apps) => string.Concat(apps.Select(app => $$"""
        ---
        apiVersion: v1
        kind: Pod
        metadata: { name: {{app}}, namespace: {{ns}}, labels: { app: {{app}} } }
        spec:
          containers: [{ name: idle, command: ["sleep", "infinity"] }]

        """));

    [Fact]
    public async Task Two_nodes_share_identities_list_each_other_and_a_killed_node_leaves_after_its_lease()
    {
        var cluster = ClusterName();
        await using var a = await TestLab.UpInClusterAsync(IdlePods("first", "web"), Urls, cluster, "a");
        await using var b = await TestLab.UpInClusterAsync(IdlePods("web"), Urls, cluster, "b");

        // Node a allocated app=first, then app=web; node b only has app=web. Node-local allocation would give b's pod
        // the lowest free id (a's "first"); the cluster gives it a's id for the same labels.
        var webOnA = await a.EndpointAsync("shop", "web");
        var webOnB = await b.EndpointAsync("shop", "web");
        var firstOnA = await a.EndpointAsync("shop", "first");
        Assert.NotEqual(firstOnA.Identity, webOnA.Identity);
        Assert.Equal(webOnA.Identity, webOnB.Identity);
        // b learns the identities a allocated (the watch), though none of its pods uses them.
        await WaitAsync(async () => (await b.Agent.IdentitiesAsync()).Any(i => i.Id == firstOnA.Identity), "node b knows node a's identity of app=first");

        foreach (var lab in new[] { a, b })
        {
            // The node list is what the last probe (every 2 s) read.
            await WaitAsync(async () => (await StatusJsonAsync(lab)).Cluster!.Nodes.Count == 2, $"both nodes in {lab.Node}'s status");
            var status = await StatusJsonAsync(lab);
            Assert.Equal("etcd", status.Cluster!.Store);
            Assert.True(status.Cluster.Healthy, $"store healthy on {lab.Node}: {status.Cluster.Error}");
            Assert.Equal(cluster, status.Cluster.Cluster);
            Assert.Equal(new[] { a.Node, b.Node }.Order(), status.Cluster.Nodes.Select(n => n.Name).Order());
            Assert.Equal(b.PodCidr, status.Cluster.Nodes.Single(n => n.Name == b.Node).PodCidr);
            var text = await TrellisCli.RunAsync("--node", lab.Node, "status");
            Assert.True(text.Ok, text.ToString());
            Assert.Contains("healthy", text.Stdout);
            Assert.Contains(a.Node, text.Stdout);
            Assert.Contains(b.Node, text.Stdout);
        }

        // SIGKILL: no goodbye; b disappears from a's view once its lease (10 s) expires.
        using (var kill = Process.Start("kill", ["-KILL", b.AgentPid().ToString()])) kill.WaitForExit();
        await WaitAsync(async () => (await StatusJsonAsync(a)).Cluster!.Nodes.All(n => n.Name != b.Node),
            $"node {b.Node} gone from {a.Node}'s status after its lease expired", TimeSpan.FromSeconds(60));
        var after = await StatusJsonAsync(a);
        Assert.True(after.Cluster!.Healthy);
        Assert.Equal([a.Node], after.Cluster.Nodes.Select(n => n.Name));
    }

    [Fact]
    public async Task Restarted_agent_references_its_identities_again_under_its_new_lease()
    {
        var cluster = ClusterName();
        // Namespace "default" and no Namespace resource: `lab up` then sends no namespace (which would reidentify the
        // pods), so only the restarted agent itself can reference the identities again.
        await using var a = await TestLab.UpInClusterAsync(IdlePodsIn("default", "first", "web"), Urls, cluster, "a");
        var before = (await a.Agent.EndpointsAsync()).Select(e => (e.Pod, e.Identity)).Order().ToList();
        using (var kill = Process.Start("kill", ["-KILL", a.AgentPid().ToString()])) kill.WaitForExit();
        await a.ReUpAsync();
        Assert.Equal(before, (await a.Agent.EndpointsAsync()).Select(e => (e.Pod, e.Identity)).Order().ToList());

        // The killed agent's lease (10 s) expires with its references; the new agent's must remain, so no node may
        // collect the ids while the pods use them.
        using var store = new Trellis.Agent.State.Etcd.EtcdStateStore(new Trellis.Agent.State.Etcd.EtcdOptions { Endpoints = etcd.ClientUrls, Cluster = cluster });
        await Task.Delay(TimeSpan.FromSeconds(15));
        var refs = store.ListKeys("identities/v1/value").Where(k => k.EndsWith("/" + a.Node, StringComparison.Ordinal)).ToList();
        Assert.Equal(2, refs.Count);
        Assert.Equal(before.Select(b => b.Identity).Order(), store.List("identities/v1/value").Where(kv => kv.Key.EndsWith("/" + a.Node, StringComparison.Ordinal)).Select(kv => uint.Parse(kv.Value)).Order());
    }

    [Fact]
    public async Task Etcd_outage_keeps_policy_enforced_and_status_degraded_then_healthy_again_without_restart()
    {
        await using var lab = await TestLab.UpInClusterAsync(Shop, Urls, ClusterName(), "a");
        var client = lab.Pod("shop", "client");
        var intruder = lab.Pod("data", "intruder");
        await lab.Pod("shop", "server").WaitListeningAsync(TcpEcho);
        var serverIp = await lab.IpAsync("shop", "server");
        await lab.ApplyPolicyAsync(ServerIngressFromClient("server-from-client", (TcpEcho, "TCP")));
        await AssertPolicyEnforcedAsync(client, intruder, serverIp, "with etcd up");
        var pid = lab.AgentPid();
        await WaitAsync(async () => (await StatusJsonAsync(lab)).Cluster!.Healthy, "status healthy with etcd up");

        try
        {
            etcd.KillAll();
            await WaitAsync(async () => !(await StatusJsonAsync(lab)).Cluster!.Healthy, "status says the store is unreachable", TimeSpan.FromSeconds(60));
            var degraded = (await StatusJsonAsync(lab)).Cluster!;
            Assert.Contains("unreachable", degraded.Error);
            Assert.Contains(etcd.ClientUrls[0], degraded.Error);
            var text = await TrellisCli.RunAsync("--node", lab.Node, "status");
            Assert.Contains("degraded", text.Stdout);
            await AssertPolicyEnforcedAsync(client, intruder, serverIp, "while etcd is down");
            // A change that needs a new identity is refused, naming the store, and changes nothing.
            var relabel = await TrellisCli.RunAsync("--node", lab.Node, "endpoint", "label", "client", "-n", "shop", "tier=new");
            Assert.NotEqual(0, relabel.ExitCode);
            Assert.Contains("cluster store is unavailable", relabel.Stderr);
            Assert.DoesNotContain("tier", (await lab.EndpointAsync("shop", "client")).Labels.Keys);
        }
        finally
        {
            await etcd.EnsureAllRunningAsync();
        }

        await WaitAsync(async () => (await StatusJsonAsync(lab)).Cluster!.Healthy, "status healthy again once etcd is back", TimeSpan.FromSeconds(90));
        Assert.Equal(pid, lab.AgentPid());
        await AssertPolicyEnforcedAsync(client, intruder, serverIp, "after etcd came back");
        // The node is registered (again, if its lease expired during the outage).
        await WaitAsync(async () => (await StatusJsonAsync(lab)).Cluster!.Nodes.Any(n => n.Name == lab.Node), "the node listed again", TimeSpan.FromSeconds(60));
    }

    [Fact]
    public async Task Single_node_status_says_the_store_is_embedded()
    {
        await using var lab = await TestLab.UpAsync(IdlePods("web"));
        var status = await StatusJsonAsync(lab);
        Assert.Equal("embedded", status.Cluster!.Store);
        Assert.Empty(status.Cluster.Nodes);
        var text = await TrellisCli.RunAsync("--node", lab.Node, "status");
        Assert.Contains("embedded", text.Stdout);
    }

    [Theory]
    [InlineData("agent", "https://127.0.0.1:2379", "not supported yet")]
    [InlineData("agent", "http://127.0.0.1", "http://HOST:PORT")]
    [InlineData("agent", "ftp://x:1", "http://HOST:PORT")]
    [InlineData("agent", ",", "no etcd endpoint")]
    [InlineData("lab-up", "https://127.0.0.1:2379", "not supported yet")]
    public async Task Bad_etcd_flag_fails_with_a_clear_message(string command, string value, string message)
    {
        var r = command == "agent"
            ? await TrellisCli.RunAsync("--node", "w8-bad", "agent", "--etcd", value)
            : await TrellisCli.RunAsync("--node", "w8-bad", "lab", "up", "-f", "/nonexistent.yaml", "--etcd", value);
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("--etcd", r.Stderr);
        Assert.Contains(message, r.Stderr);
        Assert.False(Directory.Exists("/run/trellis/w8-bad"), "nothing was started");
    }

    [Fact]
    public async Task Agent_exits_with_an_error_naming_the_endpoints_when_etcd_is_unreachable_at_start()
    {
        const string node = "w8-noetcd";
        var closed = ClosedPort();
        try
        {
            var r = await TrellisCli.RunAsync("--node", node, "agent", "--etcd", $"http://127.0.0.1:{closed}",
                "--metrics-address", "off", "--hubble-address", "off", "--proxy-port", "0");
            Assert.NotEqual(0, r.ExitCode);
            Assert.False(r.TimedOut);
            Assert.Contains($"cannot join cluster 'default' in etcd (http://127.0.0.1:{closed})", r.Stderr);
            Assert.False(File.Exists(AgentPaths.Socket(node)), "no API was served");
        }
        finally
        {
            Trellis.Lab.LabRunner.Down(node);
        }
    }

    private static int ClosedPort()
    {
        var l = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        l.Start();
        var port = ((System.Net.IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }

    [Fact]
    public async Task Bad_cluster_name_fails_with_a_clear_message()
    {
        var r = await TrellisCli.RunAsync("--node", "w8-bad", "agent", "--etcd", "http://127.0.0.1:2379", "--cluster", "a/b");
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("--cluster: 'a/b' is not a valid cluster name", r.Stderr);
    }

    private static async Task<StatusResponse> StatusJsonAsync(TestLab lab)
    {
        var r = await TrellisCli.RunAsync("--node", lab.Node, "status", "-o", "json");
        Assert.True(r.Ok, r.ToString());
        return JsonSerializer.Deserialize<StatusResponse>(r.Stdout, AgentClient.Json)!;
    }

    private static async Task WaitAsync(Func<Task<bool>> condition, string what, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(30));
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline) throw new Xunit.Sdk.XunitException($"timed out waiting: {what}");
            await Task.Delay(500);
        }
    }

    private static async Task AssertPolicyEnforcedAsync(Pod client, Pod intruder, string serverIp, string when)
    {
        var denied = await intruder.TcpConnectAsync(serverIp, TcpEcho);
        Assert.False(denied.Ok, $"data/intruder -> server:{TcpEcho} is denied {when}: {denied}");
        var allowed = await client.TcpConnectAsync(serverIp, TcpEcho);
        Assert.True(allowed.Ok, $"shop/client -> server:{TcpEcho} is allowed {when}: {allowed}");
    }
}
