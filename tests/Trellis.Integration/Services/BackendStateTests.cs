using Trellis.Integration.Infrastructure;
using Trellis.Integration.PolicyLanguage;
using Trellis.Lab;

namespace Trellis.Integration.Services;

/// <summary>Backend states (terminating, quarantined), services without selector (EndpointSlices) and
/// internalTrafficPolicy Local, with real connections through a ClusterIP.</summary>
[Collection(LabCollectionA.Name)]
[Trait("Requires", "root")]
public sealed class BackendStateTests
{
    private const string Vip = "10.96.9.9";

    private const string Lab = ServiceLabs.ShopWithClient + """
        apiVersion: v1
        kind: Pod
        metadata: {name: web-1, namespace: shop, labels: {app: web}}
        spec:
          containers: [{name: c, command: ["socat", "TCP-LISTEN:8080,fork,reuseaddr", "SYSTEM:echo web-1; cat"]}]
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: web-2, namespace: shop, labels: {app: web}}
        spec:
          containers: [{name: c, command: ["socat", "TCP-LISTEN:8080,fork,reuseaddr", "SYSTEM:echo web-2; cat"]}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: web, namespace: shop}
        spec:
          selector: {app: web}
          clusterIP: 10.96.9.9
          ports: [{port: 80, targetPort: 8080}]
        """;

    // Many connections from one python process; each reports the first line the server sends ("hello" when the
    // server only echoes what it gets).
    private const string Probe = """
        import socket, sys, collections
        counts = collections.Counter()
        for _ in range(int(sys.argv[2])):
            s = socket.create_connection((sys.argv[1], 80), 2)
            s.sendall(b"hello\n")
            counts[s.recv(64).decode().split()[0]] += 1
            s.close()
        print(" ".join(f"{k}={v}" for k, v in sorted(counts.items())))
        """;

    private static async Task<Dictionary<string, int>> Distribution(TestLab lab, int n, string vip = Vip)
    {
        var r = await lab.Pod("shop", "client").ExecAsync(TimeSpan.FromSeconds(60), "python3", "-c", Probe, vip, n.ToString());
        Assert.True(r.ExitCode == 0, $"probe failed: {r}");
        return r.Stdout.Trim().Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(kv => kv.Split('='))
            .ToDictionary(kv => kv[0], kv => int.Parse(kv[1]));
    }

    private static async Task<Dictionary<string, string>> States(TestLab lab, string service = "web") =>
        (await lab.Agent.ServicesAsync()).Single(s => s.Name == service).Ports.Single().Backends.ToDictionary(b => b.Pod, b => b.State);

    private static async Task WaitForAsync(Func<Task<bool>> condition, string what)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline) throw new Xunit.Sdk.XunitException($"timed out waiting for {what}");
            await Task.Delay(100);
        }
    }

    [Fact]
    public async Task A_terminating_backend_keeps_its_open_connection_and_gets_no_new_ones()
    {
        await using var lab = await TestLab.UpAsync(Lab);
        foreach (var p in new[] { "web-1", "web-2" })
            await lab.Pod("shop", p).WaitListeningAsync(8080);
        var echo = lab.Pod("shop", "client").OpenEcho(Vip, 80);
        await WaitForAsync(() => Task.FromResult(echo.Received > 0), "the first echo through the service");
        // Which backend holds the connection: the one with an established socket on 8080.
        string? holder = null;
        foreach (var p in new[] { "web-1", "web-2" })
            if ((await lab.Pod("shop", p).ExecAsync("ss", "-Htn", "state", "established", "( sport = :8080 )")).Stdout.Trim().Length > 0)
                holder = p;
        Assert.NotNull(holder);
        var other = holder == "web-1" ? "web-2" : "web-1";

        var runner = new LabRunner(new LabOptions { Node = lab.Node, PodCidr = lab.PodCidr, TrellisCommand = [TestLab.TrellisExe] });
        var deletion = runner.DeletePodAsync("shop", holder, TimeSpan.FromSeconds(8));
        await WaitForAsync(async () => (await States(lab))[$"shop/{holder}"] == "terminating", $"{holder} to turn terminating");

        var d = await Distribution(lab, 30);
        Assert.Equal(new Dictionary<string, int> { [other] = 30 }, d);
        long before = echo.Received;
        await Task.Delay(1000);
        Assert.True(echo.Received > before + 3, $"the open connection to the terminating {holder} stopped echoing");
        Assert.False(echo.Exited);

        await deletion;
        Assert.Equal([$"shop/{other}"], (await States(lab)).Keys);
        Assert.Equal(new Dictionary<string, int> { [other] = 10 }, await Distribution(lab, 10));
    }

    [Fact]
    public async Task Quarantined_backends_are_skipped_and_terminating_ones_serve_only_when_nothing_else_is_left()
    {
        await using var lab = await TestLab.UpAsync(Lab);
        foreach (var p in new[] { "web-1", "web-2" })
            await lab.Pod("shop", p).WaitListeningAsync(8080);
        var web1 = await lab.IpAsync("shop", "web-1");

        var cli = await Processes.RunAsync(TestLab.TrellisExe, TimeSpan.FromSeconds(20), "service", "backend-state", $"{web1}:8080", "quarantined", "--node", lab.Node);
        Assert.True(cli.Ok, cli.ToString());
        Assert.Equal("quarantined", (await States(lab))["shop/web-1"]);
        Assert.Equal(new Dictionary<string, int> { ["web-2"] = 20 }, await Distribution(lab, 20));

        // The only active backend starts terminating: with no active backend left it still serves (Kubernetes'
        // terminating-endpoint fallback); the quarantined one never does.
        await lab.Agent.TerminateEndpointAsync("shop", "web-2");
        Assert.Equal(new Dictionary<string, int> { ["web-2"] = 20 }, await Distribution(lab, 20));

        // Back to active: it takes every new connection again (active beats terminating).
        await lab.Agent.SetBackendStateAsync($"{web1}:8080", "active");
        Assert.Equal(new Dictionary<string, int> { ["web-1"] = 20 }, await Distribution(lab, 20));

        // Bad input is refused with a clear error and changes nothing.
        var bad = await Processes.RunAsync(TestLab.TrellisExe, TimeSpan.FromSeconds(20), "service", "backend-state", "10.1.2.3:80", "quarantined", "--node", lab.Node);
        Assert.NotEqual(0, bad.ExitCode);
        Assert.Contains("no service has the backend 10.1.2.3:80", bad.Stderr);
        bad = await Processes.RunAsync(TestLab.TrellisExe, TimeSpan.FromSeconds(20), "service", "backend-state", "not-an-address", "quarantined", "--node", lab.Node);
        Assert.Contains("is not IPv4:PORT", bad.Stderr);
        Assert.Equal("active", (await States(lab))["shop/web-1"]);
    }

    [Fact]
    public async Task A_service_without_selector_uses_its_EndpointSlices_and_Local_keeps_traffic_on_the_node()
    {
        await using var lab = await TestLab.UpAsync(Lab);
        await lab.Pod("shop", "web-1").WaitListeningAsync(8080);
        using var world = WorldNetwork.Create(lab, "192.0.2.20");
        await world.ServeTcpAsync(9090); // an echo server outside the cluster: answers "hello"
        var web1 = await lab.IpAsync("shop", "web-1");

        string Manifests(string trafficPolicy, string remoteReady) => $$"""
            apiVersion: v1
            kind: Service
            metadata: {name: legacy, namespace: shop}
            spec:
              clusterIP: 10.96.9.10
              internalTrafficPolicy: {{trafficPolicy}}
              ports: [{name: http, port: 80}]
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata:
              name: legacy-local
              namespace: shop
              labels: {kubernetes.io/service-name: legacy}
            addressType: IPv4
            ports: [{name: http, port: 8080}]
            endpoints: [{addresses: ["{{web1}}"], nodeName: {{lab.Node}}}]
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata:
              name: legacy-remote
              namespace: shop
              labels: {kubernetes.io/service-name: legacy}
            addressType: IPv4
            ports: [{name: http, port: 9090}]
            endpoints:
            - addresses: ["192.0.2.20"]
              nodeName: node-b
              conditions:
                ready: {{remoteReady}}
            """;

        await lab.Agent.ApplyServicesAsync(Path.Combine(lab.Dir, "legacy.yaml"), Manifests("Cluster", "true"));
        var d = await Distribution(lab, 40, "10.96.9.10");
        Assert.Equal(["hello", "web-1"], d.Keys.Order());
        var states = (await lab.Agent.ServicesAsync()).Single(s => s.Name == "legacy").Ports.Single().Backends;
        Assert.Contains(states, b => b.Ip == "192.0.2.20" && b.Port == 9090 && !b.Local && b.State == "active");

        // internalTrafficPolicy Local: only this node's endpoint.
        await lab.Agent.ApplyServicesAsync(Path.Combine(lab.Dir, "legacy.yaml"), Manifests("Local", "true"));
        Assert.Equal(new Dictionary<string, int> { ["web-1"] = 40 }, await Distribution(lab, 40, "10.96.9.10"));

        // Back to Cluster, but the remote endpoint not ready: not used either.
        await lab.Agent.ApplyServicesAsync(Path.Combine(lab.Dir, "legacy.yaml"), Manifests("Cluster", "false"));
        Assert.Equal(new Dictionary<string, int> { ["web-1"] = 40 }, await Distribution(lab, 40, "10.96.9.10"));
        Assert.Equal("not-ready", (await States(lab, "legacy"))["slice shop/legacy-remote"]);

        // Deleting the local slice leaves a service with no usable backend: refused at once.
        await lab.Agent.DeleteEndpointSliceAsync("shop", "legacy-local");
        var r = await lab.Pod("shop", "client").ExecAsync("python3", "-c",
            "import socket\ntry:\n  socket.create_connection(('10.96.9.10', 80), 3)\n  print('connected')\nexcept OSError as e:\n  print('refused')");
        Assert.Equal("refused", r.Stdout.Trim());
    }
}
