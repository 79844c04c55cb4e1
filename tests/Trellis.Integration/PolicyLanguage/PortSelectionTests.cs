using Trellis.Integration.Infrastructure;

namespace Trellis.Integration.PolicyLanguage;

/// <summary>Which destination ports a rule covers: named ports resolved against the pod's containers, and ranges.</summary>
[Collection(LabCollectionA.Name)]
[Trait("Requires", "root")]
public sealed class PortSelectionTests
{
    private const string NamedPortLab = """
        apiVersion: v1
        kind: Namespace
        metadata:
          name: web
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: server
          namespace: web
          labels:
            app: server
        spec:
          containers:
            - name: http
              command: ["python3", "-m", "http.server", "8080"]
              ports:
                - name: http
                  containerPort: 8080
            - name: echo
              command: ["socat", "TCP-LISTEN:7000,fork,reuseaddr", "EXEC:cat"]
              ports:
                - name: echo
                  containerPort: 7000
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: client
          namespace: web
          labels:
            app: client
        spec:
          containers:
            - name: idle
              command: ["sleep", "infinity"]
        """;

    [Fact]
    public async Task Kubernetes_named_port_allows_the_containerPort_it_names_and_no_other()
    {
        await using var lab = await TestLab.UpAsync(NamedPortLab);
        var server = lab.Pod("web", "server");
        await server.WaitListeningAsync(8080);
        await server.WaitListeningAsync(7000);
        var client = lab.Pod("web", "client");
        var serverIp = await lab.IpAsync("web", "server");
        var clientIp = await lab.IpAsync("web", "client");
        await client.AssertConnectsAsync(serverIp, 7000, "no policy yet");

        await lab.ApplyPolicyAsync("""
            apiVersion: networking.k8s.io/v1
            kind: NetworkPolicy
            metadata:
              name: server-http-only
              namespace: web
            spec:
              podSelector:
                matchLabels:
                  app: server
              ingress:
                - from:
                    - podSelector: {}
                  ports:
                    - port: http
                      protocol: TCP
            """);

        var get = await client.HttpGetAsync(serverIp, 8080);
        Assert.True(get.Ok && get.Stdout.Trim() == "200", $"port 'http' is 8080 in the pod spec, so HTTP passes: {get}");
        await client.AssertBlockedAsync(serverIp, 7000, "7000 is named 'echo', not 'http'");

        var fwd = await lab.WaitForFlowAsync(f => Probes.Syn(f, clientIp, serverIp, 8080) && f.Verdict == "FORWARDED", "FORWARDED client -> server:8080");
        Assert.Equal("INGRESS", fwd.Direction);
        var drop = await lab.WaitForFlowAsync(f => Probes.Syn(f, clientIp, serverIp, 7000) && f.Verdict == "DROPPED", "DROPPED client -> server:7000");
        Assert.Equal("policy denied", drop.DropReason);

        var trace = await lab.Agent.TraceAsync(new("web", "client", null, "web", "server", null, 8080, "TCP"));
        Assert.True(trace.Allowed, $"trace to 8080: {string.Join("; ", trace.Steps.Select(s => s.Verdict))}");
        Assert.Contains(trace.Steps, s => s.Direction == "INGRESS" && s.PolicyName == "server-http-only");
    }

    private const string RangeLab = """
        apiVersion: v1
        kind: Namespace
        metadata:
          name: web
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: server
          namespace: web
          labels:
            app: server
        spec:
          containers:
            - name: low
              command: ["socat", "TCP-LISTEN:8000,fork,reuseaddr", "EXEC:cat"]
            - name: high
              command: ["socat", "TCP-LISTEN:8010,fork,reuseaddr", "EXEC:cat"]
            - name: beyond
              command: ["socat", "TCP-LISTEN:8011,fork,reuseaddr", "EXEC:cat"]
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: client
          namespace: web
          labels:
            app: client
        spec:
          containers:
            - name: idle
              command: ["sleep", "infinity"]
        """;

    [Fact]
    public async Task Cilium_endPort_range_includes_both_ends_and_excludes_the_next_port()
    {
        await using var lab = await TestLab.UpAsync(RangeLab);
        var server = lab.Pod("web", "server");
        foreach (var port in new[] { 8000, 8010, 8011 }) await server.WaitListeningAsync(port);
        var client = lab.Pod("web", "client");
        var serverIp = await lab.IpAsync("web", "server");
        var clientIp = await lab.IpAsync("web", "client");
        await client.AssertConnectsAsync(serverIp, 8011, "no policy yet");

        await lab.ApplyPolicyAsync("""
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata:
              name: server-8000-8010
              namespace: web
            spec:
              endpointSelector:
                matchLabels:
                  app: server
              ingress:
                - fromEndpoints:
                    - matchLabels:
                        app: client
                  toPorts:
                    - ports:
                        - port: "8000"
                          endPort: 8010
                          protocol: TCP
            """);

        await client.AssertConnectsAsync(serverIp, 8000, "first port of the range");
        await client.AssertConnectsAsync(serverIp, 8010, "endPort is inclusive");
        await client.AssertBlockedAsync(serverIp, 8011, "one past endPort");

        await lab.WaitForFlowAsync(f => Probes.Syn(f, clientIp, serverIp, 8010) && f.Verdict == "FORWARDED", "FORWARDED client -> server:8010");
        var drop = await lab.WaitForFlowAsync(f => Probes.Syn(f, clientIp, serverIp, 8011) && f.Verdict == "DROPPED", "DROPPED client -> server:8011");
        Assert.Equal("policy denied", drop.DropReason);
        Assert.Equal("INGRESS", drop.Direction);
    }
}
