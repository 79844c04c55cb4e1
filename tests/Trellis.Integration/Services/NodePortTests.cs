using Trellis.Api;
using Trellis.Integration.Infrastructure;
using Trellis.Integration.PolicyLanguage;

namespace Trellis.Integration.Services;

/// <summary>NodePort services with real traffic: from outside the node (a client network namespace behind a veth,
/// translated per packet by the TC program on the node's device), and from the node itself (socket load balancing).</summary>
[Collection(LabCollectionB.Name)]
[Trait("Requires", "root")]
public sealed class NodePortTests
{
    private const string WorldClient = "192.0.2.10";

    private static string Lab(string algorithm = "random") => ServiceLabs.ShopWithClient + $$$"""
        apiVersion: v1
        kind: Pod
        metadata: {name: web-1, namespace: shop, labels: {app: web}}
        spec:
          containers:
            - {name: c, command: ["socat", "TCP-LISTEN:8080,fork,reuseaddr", "SYSTEM:echo web-1"], ports: [{name: http, containerPort: 8080}]}
            - {name: dns, command: ["socat", "UDP-RECVFROM:5353,fork", "SYSTEM:echo web-1"]}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: web-2, namespace: shop, labels: {app: web}}
        spec:
          containers:
            - {name: c, command: ["socat", "TCP-LISTEN:8080,fork,reuseaddr", "SYSTEM:echo web-2"], ports: [{name: http, containerPort: 8080}]}
            - {name: dns, command: ["socat", "UDP-RECVFROM:5353,fork", "SYSTEM:echo web-2"]}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: web-3, namespace: shop, labels: {app: web}}
        spec:
          containers:
            - {name: c, command: ["socat", "TCP-LISTEN:8080,fork,reuseaddr", "SYSTEM:echo web-3"], ports: [{name: http, containerPort: 8080}]}
            - {name: dns, command: ["socat", "UDP-RECVFROM:5353,fork", "SYSTEM:echo web-3"]}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: web, namespace: shop, annotations: {service.cilium.io/lb-algorithm: {{{algorithm}}}}}
        spec:
          type: NodePort
          selector: {app: web}
          clusterIP: 10.96.8.8
          ports:
            - {name: http, port: 80, targetPort: http, nodePort: 30080}
            - {name: dns, port: 53, targetPort: 5353, protocol: UDP, nodePort: 30053}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: empty, namespace: shop}
        spec:
          type: NodePort
          selector: {app: nobody}
          ports: [{port: 80, nodePort: 30099}]
        """;

    // Connects from the world with the given source ports (one python process, so the test measures the load
    // balancer, not process start-up) and prints "port=backend" per connection.
    private const string WorldProbe = """
        import socket, sys
        host, port = sys.argv[1], int(sys.argv[2])
        out = []
        for sport in [int(p) for p in sys.argv[3].split(",")]:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.settimeout(3)
            s.bind(("192.0.2.10", sport))
            try:
                s.connect((host, port))
                out.append(f"{sport}={s.recv(64).decode().strip()}")
            except OSError as e:
                out.append(f"{sport}=error:{e.errno}")
            s.close()
        print(" ".join(out))
        """;

    private static async Task<Dictionary<int, string>> FromWorld(WorldNetwork world, IEnumerable<int> sourcePorts, int nodePort = 30080)
    {
        var r = await Probes.NetnsExecAsync(world.NetnsPath, TimeSpan.FromSeconds(120), "python3", "-c", WorldProbe,
            WorldNetwork.NodeSide, nodePort.ToString(), string.Join(",", sourcePorts));
        Assert.True(r.ExitCode == 0, $"world probe failed: {r}");
        return r.Stdout.Trim().Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(kv => kv.Split('='))
            .ToDictionary(kv => int.Parse(kv[0]), kv => kv[1]);
    }

    private static async Task<(TestLab Lab, WorldNetwork World)> UpAsync(string lab, string test)
    {
        var l = await TestLab.UpAsync(lab, test, "NodePortTests.cs");
        try
        {
            foreach (var p in new[] { "web-1", "web-2", "web-3" })
            {
                await l.Pod("shop", p).WaitListeningAsync(8080);
                await l.Pod("shop", p).WaitListeningAsync(5353, "udp");
            }
            var world = WorldNetwork.Create(l, WorldClient);
            // The agent finds the new device by itself and attaches the NodePort program to it.
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
            while ((await l.Agent.StatusAsync()).Devices?.Any(d => d.Name == "world0") != true)
            {
                if (DateTime.UtcNow > deadline) throw new Xunit.Sdk.XunitException("the agent did not pick up device world0 within 10 s");
                await Task.Delay(200);
            }
            return (l, world);
        }
        catch
        {
            await l.DisposeAsync();
            throw;
        }
    }

    [Fact]
    public async Task NodePort_from_outside_reaches_the_backends_with_policy_on_the_real_client()
    {
        var (lab, world) = await UpAsync(Lab(), nameof(NodePort_from_outside_reaches_the_backends_with_policy_on_the_real_client));
        await using var _ = lab;
        using var __ = world;

        var got = await FromWorld(world, Enumerable.Range(42000, 60));
        Assert.All(got.Values, v => Assert.StartsWith("web-", v));
        Assert.True(got.Values.Distinct().Count() > 1, "60 connections all went to one backend");
        var flow = await lab.WaitForFlowAsync(f => f.Source.Ip == WorldClient && f.Destination.Port == 8080 && f.Verdict == "FORWARDED",
            "NodePort flow into a backend");
        Assert.Equal("shop/web:http", flow.Service);
        Assert.StartsWith("web-", flow.Destination.Pod);

        // UDP: the answer comes back from the node address and NodePort the client sent to. UDP may lose a datagram
        // on a loaded machine (a CI run lost one once), so the client asks up to 3 times, as a UDP client would; the
        // answer must still come from the NodePort.
        var udp = await Probes.NetnsExecAsync(world.NetnsPath, TimeSpan.FromSeconds(15), "python3", "-c",
            "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(3)\n" +
            $"for attempt in range(3):\n    s.sendto(b'x', ('{WorldNetwork.NodeSide}', 30053))\n" +
            "    try:\n        d, a = s.recvfrom(64); print(d.decode().strip(), a[0], a[1]); break\n    except socket.timeout:\n        pass");
        Assert.Matches($@"^web-\d {WorldNetwork.NodeSide.Replace(".", "\\.")} 30053$", udp.Stdout.Trim());

        // Policy decides on the backend's identity and the real client (world), not on the node.
        await lab.ApplyPolicyAsync("""
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata: {name: web-from-cluster-only, namespace: shop}
            spec:
              endpointSelector: {matchLabels: {app: web}}
              ingress:
                - fromEntities: [cluster]
            """);
        got = await FromWorld(world, Enumerable.Range(43000, 3));
        Assert.All(got.Values, v => Assert.StartsWith("error:", v));
        var drop = await lab.WaitForFlowAsync(f => f.Source.Ip == WorldClient && f.Verdict == "DROPPED" && f.DropReason == "policy denied",
            "policy drop of the world client at a backend");
        Assert.Equal("shop/web:http", drop.Service);
        Assert.Equal(2u, drop.Source.Identity); // reserved:world
    }

    [Fact]
    public async Task NodePort_and_ClusterIP_work_from_the_node_itself_and_from_pods()
    {
        var (lab, world) = await UpAsync(Lab(), nameof(NodePort_and_ClusterIP_work_from_the_node_itself_and_from_pods));
        await using var _ = lab;
        using var __ = world;
        var router = (await lab.Agent.StatusAsync()).RouterIp;
        foreach (var target in new[] { $"TCP:{router}:30080", $"TCP:{WorldNetwork.NodeSide}:30080", "TCP:10.96.8.8:80" })
        {
            var host = await Processes.RunAsync(TestLab.TrellisExe, TimeSpan.FromSeconds(10),
                "lab", "host-exec", "--node", lab.Node, "--", "socat", "-T2", "-", target + ",connect-timeout=2");
            Assert.True(host.Ok && host.Stdout.Trim().StartsWith("web-", StringComparison.Ordinal), $"host -> {target}: {host}");
            var pod = await lab.Pod("shop", "client").ExecAsync("socat", "-T2", "-", target + ",connect-timeout=2");
            Assert.True(pod.Ok && pod.Stdout.Trim().StartsWith("web-", StringComparison.Ordinal), $"pod -> {target}: {pod}");
        }
        var translated = await lab.WaitForFlowAsync(f => f.Verdict == "TRANSLATED" && f.Source.Pod == "client", "socket translation event");
        Assert.Equal("shop/web:http", translated.Service);
    }

    [Fact]
    public async Task Maglev_keeps_most_flows_on_their_backend_when_one_is_removed()
    {
        var (lab, world) = await UpAsync(Lab("maglev"), nameof(Maglev_keeps_most_flows_on_their_backend_when_one_is_removed));
        await using var _ = lab;
        using var __ = world;
        var ports = Enumerable.Range(44000, 90).ToList();
        var before = await FromWorld(world, ports);
        Assert.All(before.Values, v => Assert.StartsWith("web-", v));
        Assert.Equal(3, before.Values.Distinct().Count());
        // The same flows (same 5-tuples) again: Maglev is a function of the tuple, so nothing moves.
        Assert.Equal(before, await FromWorld(world, ports));

        await lab.Agent.SetEndpointLabelsAsync("shop", "web-2", new Dictionary<string, string?> { ["app"] = "retired" });
        var after = await FromWorld(world, ports);
        Assert.DoesNotContain("web-2", after.Values);
        var survivors = ports.Where(p => before[p] != "web-2").ToList();
        var kept = survivors.Count(p => after[p] == before[p]);
        // Random selection would keep about half of them (2 backends left); Maglev keeps nearly all.
        Assert.True(kept >= survivors.Count * 0.9, $"only {kept} of {survivors.Count} flows kept their backend");
    }

    [Fact]
    public async Task NodePort_without_backends_is_refused_at_once()
    {
        var (lab, world) = await UpAsync(Lab(), nameof(NodePort_without_backends_is_refused_at_once));
        await using var _ = lab;
        using var __ = world;
        var started = DateTime.UtcNow;
        var got = await FromWorld(world, [45000], nodePort: 30099);
        Assert.Equal("error:111", got[45000]); // ECONNREFUSED: a RST, not a timeout
        Assert.True(DateTime.UtcNow - started < TimeSpan.FromSeconds(2.5), "refusal must not wait for a timeout");
        var flow = await lab.WaitForFlowAsync(f => f.Verdict == "DROPPED" && f.DropReason == "no service backend" && f.Source.Ip == WorldClient,
            "no-service-backend drop at the node device");
        Assert.Equal("shop/empty:80", flow.Service);
    }
}
