using Trellis.Integration.Infrastructure;

namespace Trellis.Integration.Services;

/// <summary>ClusterIP services translated at connect()/sendmsg() by the cgroup socket programs, with real traffic.</summary>
[Collection(LabCollectionA.Name)]
[Trait("Requires", "root")]
public sealed class ServiceLoadBalancingTests
{
    private const string Lab = ServiceLabs.ShopWithClient + """
        apiVersion: v1
        kind: Pod
        metadata: {name: web-1, namespace: shop, labels: {app: web}}
        spec:
          containers:
            - name: c
              command: ["socat", "TCP-LISTEN:8080,fork,reuseaddr", "SYSTEM:echo web-1"]
              ports: [{name: http, containerPort: 8080}]
            - name: dns
              command: ["socat", "UDP-RECVFROM:5353,fork", "EXEC:cat"]
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: web-2, namespace: shop, labels: {app: web}}
        spec:
          containers:
            - name: c
              command: ["socat", "TCP-LISTEN:8080,fork,reuseaddr", "SYSTEM:echo web-2"]
              ports: [{name: http, containerPort: 8080}]
            - name: dns
              command: ["socat", "UDP-RECVFROM:5353,fork", "EXEC:cat"]
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: web-3, namespace: shop, labels: {app: web}}
        spec:
          containers:
            - name: c
              command: ["socat", "TCP-LISTEN:8080,fork,reuseaddr", "SYSTEM:echo web-3"]
              ports: [{name: http, containerPort: 8080}]
            - name: dns
              command: ["socat", "UDP-RECVFROM:5353,fork", "EXEC:cat"]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: web, namespace: shop}
        spec:
          selector: {app: web}
          clusterIP: 10.96.7.7
          ports:
            - {name: http, port: 80, targetPort: http}
            - {name: dns, port: 53, targetPort: 5353, protocol: UDP}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: sticky, namespace: shop}
        spec:
          selector: {app: web}
          clusterIP: 10.96.7.9
          sessionAffinity: ClientIP
          sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}
          ports: [{name: http, port: 80, targetPort: http}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: empty, namespace: shop}
        spec:
          selector: {app: nobody}
          clusterIP: 10.96.7.8
          ports: [{port: 80}]
        """;

    // One python process makes many connections, so the test measures the load balancer, not process start-up.
    private const string Probe = """
        import socket, sys, collections
        counts = collections.Counter()
        vip = sys.argv[2] if len(sys.argv) > 2 else "10.96.7.7"
        for _ in range(int(sys.argv[1])):
            s = socket.create_connection((vip, 80), 2)
            assert s.getpeername() == (vip, 80), s.getpeername()
            counts[s.recv(64).decode().strip()] += 1
            s.close()
        print(" ".join(f"{k}={v}" for k, v in sorted(counts.items())))
        """;

    private static async Task<Dictionary<string, int>> Distribution(Pod client, int n, string vip = "10.96.7.7")
    {
        var r = await client.ExecAsync(TimeSpan.FromSeconds(60), "python3", "-c", Probe, n.ToString(), vip);
        Assert.True(r.ExitCode == 0, $"probe failed: {r.Stdout} {r.Stderr}");
        return r.Stdout.Trim().Split(' ', StringSplitOptions.RemoveEmptyEntries)
            .Select(kv => kv.Split('=')).ToDictionary(kv => kv[0], kv => int.Parse(kv[1]));
    }

    [Fact]
    public async Task Connections_to_a_ClusterIP_spread_over_ready_backends_and_follow_backend_changes()
    {
        await using var lab = await TestLab.UpAsync(Lab);
        foreach (var p in new[] { "web-1", "web-2", "web-3" })
            await lab.Pod("shop", p).WaitListeningAsync(8080);
        var client = lab.Pod("shop", "client");

        var svc = Assert.Single(await lab.Agent.ServicesAsync(), s => s.Name == "web");
        Assert.Equal(3, svc.Ports.Single(p => p.Port == 80).Backends.Count);

        // 300 connections over 3 backends: each expects 100; random choice stays within 60..140 with overwhelming probability.
        var d = await Distribution(client, 300);
        Assert.Equal(["web-1", "web-2", "web-3"], d.Keys.Order());
        Assert.All(d.Values, n => Assert.InRange(n, 60, 140));

        // A pod removed from the service (relabelled) gets no new connections.
        await lab.Agent.SetEndpointLabelsAsync("shop", "web-2", new Dictionary<string, string?> { ["app"] = "retired" });
        d = await Distribution(client, 60);
        Assert.DoesNotContain("web-2", d.Keys);
        Assert.Equal(60, d.Values.Sum());

        var status = await lab.Agent.StatusAsync();
        Assert.True(status.ServiceConnectsTranslated >= 360);
    }

    [Fact]
    public async Task ClientIP_affinity_keeps_a_client_on_one_backend_while_others_spread()
    {
        await using var lab = await TestLab.UpAsync(Lab);
        foreach (var p in new[] { "web-1", "web-2", "web-3" })
            await lab.Pod("shop", p).WaitListeningAsync(8080);
        var sticky = Assert.Single(await lab.Agent.ServicesAsync(), s => s.Name == "sticky");
        Assert.Equal("ClientIP (600s)", sticky.SessionAffinity);

        // 60 connections from one pod: by chance alone all on one of 3 backends has probability 3^-59.
        var d = await Distribution(lab.Pod("shop", "client"), 60, "10.96.7.9");
        Assert.Equal(60, Assert.Single(d).Value);
        // The same client without affinity (the other service) still spreads.
        Assert.True((await Distribution(lab.Pod("shop", "client"), 60)).Count > 1);
    }

    [Fact]
    public async Task Service_without_backends_refuses_at_once_and_reports_no_service_backend()
    {
        await using var lab = await TestLab.UpAsync(Lab);
        var client = lab.Pod("shop", "client");
        var started = DateTime.UtcNow;
        var r = await client.ExecAsync(TimeSpan.FromSeconds(10), "python3", "-c",
            "import socket\ntry:\n  socket.create_connection(('10.96.7.8', 80), 5)\n  print('connected')\nexcept OSError as e:\n  print('refused', e.errno)");
        Assert.StartsWith("refused", r.Stdout.Trim());
        Assert.True(DateTime.UtcNow - started < TimeSpan.FromSeconds(4), "refusal must not wait for a timeout");
        var flow = await lab.WaitForFlowAsync(f => f.Verdict == "DROPPED" && f.DropReason == "no service backend" && f.Destination.Ip == "10.96.7.8",
            "no-service-backend drop");
        Assert.Equal(80, flow.Destination.Port);
    }

    [Fact]
    public async Task Udp_service_answers_from_the_service_address_and_policy_applies_to_the_chosen_backend()
    {
        await using var lab = await TestLab.UpAsync(Lab);
        var client = lab.Pod("shop", "client");
        foreach (var p in new[] { "web-1", "web-2", "web-3" })
            await lab.Pod("shop", p).WaitListeningAsync(8080);

        var r = await client.ExecAsync(TimeSpan.FromSeconds(10), "python3", "-c",
            "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(3)\ns.sendto(b'ping', ('10.96.7.7', 53))\ndata, addr = s.recvfrom(64)\nprint(data.decode(), addr[0], addr[1])");
        Assert.Equal("ping 10.96.7.7 53", r.Stdout.Trim());

        // Policy is enforced on the backend's identity after translation: deny the client at the backends.
        await lab.ApplyPolicyAsync("""
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata: {name: web-only-from-nobody, namespace: shop}
            spec:
              endpointSelector: {matchLabels: {app: web}}
              ingress:
                - fromEndpoints: [{matchLabels: {app: nobody}}]
            """);
        var blocked = await client.ExecAsync(TimeSpan.FromSeconds(10), "python3", "-c",
            "import socket\ntry:\n  socket.create_connection(('10.96.7.7', 80), 1)\n  print('connected')\nexcept OSError:\n  print('blocked')");
        Assert.Equal("blocked", blocked.Stdout.Trim());
        var drop = await lab.WaitForFlowAsync(f => f.Verdict == "DROPPED" && f.DropReason == "policy denied" && f.Destination.Port == 8080,
            "policy drop at the chosen backend");
        Assert.StartsWith("web-", drop.Destination.Pod);
    }
}
