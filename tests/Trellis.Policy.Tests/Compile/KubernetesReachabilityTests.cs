using System.Text;

namespace Trellis.Policy.Tests;

/// <summary>
/// The Kubernetes e2e "netpol" truth tables (kubernetes/kubernetes test/e2e/network/netpol/network_policy.go):
/// namespaces x, y, z with pods a, b, c labelled pod=a..c, each serving 80 and 81 on TCP, UDP and SCTP under the
/// names serve-80-tcp etc. Policies are compiled per pod and every pair is evaluated from the compiled entries.
/// Like the e2e suite, loopback (a pod to itself) is not judged.
/// </summary>
public class KubernetesReachabilityTests
{
    private static readonly string[] Namespaces = ["x", "y", "z"];
    private static readonly string[] PodNames = ["a", "b", "c"];

    private sealed record PodInfo(string Ns, string Name, IdentityInfo Identity, NamedPort[] Ports)
    {
        public string Key => $"{Ns}/{Name}";
    }

    private static readonly PodInfo[] Pods = Namespaces.SelectMany((ns, i) => PodNames.Select((p, j) =>
        new PodInfo(ns, p,
            new IdentityInfo((uint)(ReservedIdentity.MinimumAllocated + i * 3 + j), IdentityLabels.For(ns, Labels.From(("pod", p)), Labels.From(("ns", ns)))),
            [.. new ushort[] { 80, 81 }.SelectMany(port => new[] { ("tcp", L4Proto.Tcp), ("udp", L4Proto.Udp), ("sctp", L4Proto.Sctp) }
                .Select(pr => new NamedPort($"serve-{port}-{pr.Item1}", port, pr.Item2)))]))).ToArray();

    private static readonly PolicyInputs Inputs = new(
        Pods.Select(p => p.Identity).ToArray(), [], id => Pods.Single(p => p.Identity.Id == id).Ports);

    /// <summary>A truth table: starts all-true, edited like the e2e Reachability helper.</summary>
    private sealed class Reachability
    {
        private readonly Dictionary<(string From, string To), bool> _expected = Pods.SelectMany(f => Pods.Select(t => ((f.Key, t.Key), true))).ToDictionary();

        public Reachability ExpectPeer(string? fromNs, string? fromPod, string? toNs, string? toPod, bool value)
        {
            foreach (var f in Pods.Where(p => (fromNs is null || p.Ns == fromNs) && (fromPod is null || p.Name == fromPod)))
            foreach (var t in Pods.Where(p => (toNs is null || p.Ns == toNs) && (toPod is null || p.Name == toPod)))
                _expected[(f.Key, t.Key)] = value;
            return this;
        }

        public Reachability ExpectAllIngress(string pod, bool value) => ExpectPeer(null, null, pod[..1], pod[2..], value);

        public Reachability ExpectAllEgress(string pod, bool value) => ExpectPeer(pod[..1], pod[2..], null, null, value);

        public Reachability Expect(string from, string to, bool value) => ExpectPeer(from[..1], from[2..], to[..1], to[2..], value);

        public bool this[string from, string to] => _expected[(from, to)];
    }

    private static void Validate(string yaml, L4Proto proto, ushort port, Reachability expected)
    {
        var sources = ManifestParser.Parse(yaml, "netpol.yaml").Cast<PolicyResource>()
            .Select((p, i) => new CompiledPolicySource((uint)i + 1, p)).ToArray();
        var compiled = Pods.ToDictionary(p => p.Key, p => PolicyCompiler.Compile(p.Identity, p.Ports, Inputs, sources));

        var wrong = new StringBuilder();
        foreach (var from in Pods)
        foreach (var to in Pods)
        {
            if (from == to)
                continue;
            var actual = PolicyEvaluator.Allowed(compiled[from.Key], compiled[to.Key], from.Identity.Id, to.Identity.Id, proto, port);
            if (actual != expected[from.Key, to.Key])
                wrong.AppendLine($"{from.Key} -> {to.Key} {proto}/{port}: expected {(expected[from.Key, to.Key] ? "allowed" : "denied")}");
        }
        Assert.True(wrong.Length == 0, "reachability differs from the truth table:\n" + wrong);
    }

    private static string Np(string ns, string name, string spec) =>
        $"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}\n---\n";

    private static Reachability All() => new();

    [Fact]
    public void Default_deny_ingress()
    {
        var yaml = Np("x", "deny-ingress", "  podSelector: {}\n  policyTypes: [Ingress]");
        Validate(yaml, L4Proto.Tcp, 80, All().ExpectPeer(null, null, "x", null, false));
        Validate(yaml, L4Proto.Udp, 80, All().ExpectPeer(null, null, "x", null, false));
        Validate(yaml, L4Proto.Sctp, 80, All().ExpectPeer(null, null, "x", null, false));
    }

    [Fact]
    public void Default_deny_all()
    {
        var yaml = Np("x", "deny-all", "  podSelector: {}\n  policyTypes: [Ingress, Egress]");
        Validate(yaml, L4Proto.Tcp, 80, All().ExpectPeer(null, null, "x", null, false).ExpectPeer("x", null, null, null, false));
    }

    [Fact]
    public void Allow_from_pods_within_server_namespace_by_podSelector()
    {
        var yaml = Np("x", "x-a-allows-x-b", """
              podSelector: {matchLabels: {pod: a}}
              ingress:
              - from:
                - podSelector: {matchLabels: {pod: b}}
            """);
        Validate(yaml, L4Proto.Tcp, 80, All().ExpectAllIngress("x/a", false).Expect("x/b", "x/a", true));
    }

    [Fact]
    public void Allow_ingress_to_a_target_on_top_of_deny_all()
    {
        var yaml = Np("x", "deny-all", "  podSelector: {}\n  ingress: []") + Np("x", "allow-all-to-a", """
              podSelector: {matchLabels: {pod: a}}
              ingress:
              - from: [{podSelector: {}, namespaceSelector: {}}]
            """);
        Validate(yaml, L4Proto.Tcp, 80, All().ExpectAllIngress("x/a", true).ExpectAllIngress("x/b", false).ExpectAllIngress("x/c", false));
    }

    [Fact]
    public void Allow_from_pods_in_all_namespaces()
    {
        var yaml = Np("x", "allow-from-another-ns", """
              podSelector: {matchLabels: {pod: a}}
              ingress:
              - from: [{namespaceSelector: {}}]
            """);
        Validate(yaml, L4Proto.Tcp, 80, All());
    }

    [Fact]
    public void Allow_only_from_a_different_namespace_by_namespaceSelector()
    {
        var yaml = Np("x", "allow-client-a-via-ns-selector", """
              podSelector: {matchLabels: {pod: a}}
              ingress:
              - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}}]
            """);
        Validate(yaml, L4Proto.Tcp, 80, All().ExpectPeer("x", null, "x", "a", false).ExpectPeer("z", null, "x", "a", false));
    }

    [Fact]
    public void PodSelector_or_NamespaceSelector_as_two_peers()
    {
        var yaml = Np("x", "allow-ns-y-match-selector", """
              podSelector: {matchLabels: {pod: a}}
              ingress:
              - from:
                - namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [x]}]}
                - podSelector: {matchLabels: {pod: b}}
            """);
        Validate(yaml, L4Proto.Tcp, 80, All().Expect("x/a", "x/a", false).Expect("x/c", "x/a", false));
    }

    [Fact]
    public void PodSelector_and_NamespaceSelector_in_one_peer()
    {
        var yaml = Np("x", "allow-ns-y-podselector-and-nsselector", """
              podSelector: {matchLabels: {pod: a}}
              ingress:
              - from:
                - namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [x]}]}
                  podSelector: {matchLabels: {pod: b}}
            """);
        Validate(yaml, L4Proto.Tcp, 80, All().ExpectAllIngress("x/a", false).Expect("y/b", "x/a", true).Expect("z/b", "x/a", true));
    }

    [Fact]
    public void Allow_only_from_a_pod_in_a_different_namespace()
    {
        var yaml = Np("x", "allow-ns-y-pod-a-via-namespace-pod-selector", """
              podSelector: {matchLabels: {pod: a}}
              ingress:
              - from:
                - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}
                  podSelector: {matchLabels: {pod: a}}
            """);
        var expected = All().ExpectAllIngress("x/a", false).Expect("y/a", "x/a", true);
        Validate(yaml, L4Proto.Tcp, 80, expected);
        Validate(yaml, L4Proto.Udp, 80, expected);
        Validate(yaml, L4Proto.Sctp, 80, expected);
    }

    [Fact]
    public void Allow_port_81_only_from_namespace_y()
    {
        var yaml = Np("x", "allow-client-a-via-ns-selector", """
              podSelector: {matchLabels: {pod: a}}
              ingress:
              - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}}]
                ports: [{port: 81, protocol: TCP}]
            """);
        Validate(yaml, L4Proto.Tcp, 81, All().ExpectPeer("x", null, "x", "a", false).ExpectPeer("z", null, "x", "a", false));
        Validate(yaml, L4Proto.Tcp, 80, All().ExpectAllIngress("x/a", false));
    }

    [Fact]
    public void Stacked_policies_add_up_per_port()
    {
        var port81 = Np("x", "allow-81", """
              podSelector: {matchLabels: {pod: a}}
              ingress:
              - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}}]
                ports: [{port: 81, protocol: TCP}]
            """);
        var port80 = Np("x", "allow-80", """
              podSelector: {matchLabels: {pod: a}}
              ingress:
              - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}}]
                ports: [{port: 80, protocol: TCP}]
            """);
        var allowY = All().ExpectPeer("x", null, "x", "a", false).ExpectPeer("z", null, "x", "a", false);
        Validate(port81 + port80, L4Proto.Tcp, 80, allowY);
        Validate(port81 + port80, L4Proto.Tcp, 81, allowY);
    }

    [Fact]
    public void Allow_all_rule_allows_every_port()
    {
        var yaml = Np("x", "allow-all", "  podSelector: {}\n  ingress: [{}]");
        Validate(yaml, L4Proto.Tcp, 80, All());
        Validate(yaml, L4Proto.Tcp, 81, All());
    }

    [Fact]
    public void Ingress_on_one_named_port()
    {
        var yaml = Np("x", "allow-all", """
              podSelector: {}
              ingress:
              - ports: [{port: serve-81-tcp}]
            """);
        Validate(yaml, L4Proto.Tcp, 81, All());
        Validate(yaml, L4Proto.Tcp, 80, All().ExpectPeer(null, null, "x", null, false));
    }

    [Fact]
    public void Ingress_from_namespace_on_one_named_port()
    {
        var yaml = Np("x", "allow-client-a-via-ns-selector-80", """
              podSelector: {matchLabels: {pod: a}}
              ingress:
              - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}}]
                ports: [{port: serve-80-tcp, protocol: TCP}]
            """);
        Validate(yaml, L4Proto.Tcp, 80, All().ExpectPeer("x", null, "x", "a", false).ExpectPeer("z", null, "x", "a", false));
        Validate(yaml, L4Proto.Tcp, 81, All().ExpectAllIngress("x/a", false));
    }

    [Fact]
    public void Egress_on_one_named_port()
    {
        var yaml = Np("x", "allow-egress", """
              podSelector: {}
              policyTypes: [Egress]
              egress:
              - ports: [{port: serve-80-tcp}]
            """);
        Validate(yaml, L4Proto.Tcp, 80, All());
        Validate(yaml, L4Proto.Tcp, 81, All().ExpectPeer("x", null, null, null, false));
    }

    [Fact]
    public void Deny_ingress_from_pods_of_other_namespaces()
    {
        var yaml = Np("x", "deny-empty-policy", """
              podSelector: {}
              ingress:
              - from: [{podSelector: {}}]
            """);
        Validate(yaml, L4Proto.Tcp, 80, All().ExpectPeer("y", null, "x", null, false).ExpectPeer("z", null, "x", null, false));
    }

    [Fact]
    public void Deny_egress_from_a_pod_and_from_a_namespace()
    {
        Validate(Np("x", "deny-egress-pod-a", "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]"),
            L4Proto.Tcp, 80, All().ExpectAllEgress("x/a", false));
        Validate(Np("x", "deny-egress-ns-x", "  podSelector: {}\n  policyTypes: [Egress]"),
            L4Proto.Tcp, 80, All().ExpectPeer("x", null, null, null, false));
    }

    [Fact]
    public void Ingress_and_egress_specified_together()
    {
        var yaml = Np("x", "allow-client-a-via-pod-selector", """
              podSelector: {matchLabels: {pod: a}}
              policyTypes: [Egress, Ingress]
              ingress:
              - from: [{podSelector: {matchLabels: {pod: b}}}]
              egress:
              - ports: [{port: 80}]
            """);
        Validate(yaml, L4Proto.Tcp, 80, All().ExpectAllIngress("x/a", false).Expect("x/b", "x/a", true));
        Validate(yaml, L4Proto.Tcp, 81, All().ExpectAllIngress("x/a", false).ExpectAllEgress("x/a", false).Expect("x/b", "x/a", true));
    }

    [Fact]
    public void Egress_deny_on_the_client_wins_even_if_the_server_allows()
    {
        var yaml = Np("x", "allow-to-ns-y-pod-a", """
              podSelector: {matchLabels: {pod: a}}
              policyTypes: [Egress]
              egress:
              - to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}, podSelector: {matchLabels: {pod: a}}}]
            """);
        foreach (var target in new[] { "a", "b" })
        {
            yaml += Np("y", $"allow-from-xa-on-y{target}", "  podSelector: {matchLabels: {pod: " + target + "}}\n" + """
                  ingress:
                  - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: x}}, podSelector: {matchLabels: {pod: a}}}]
                """);
        }
        Validate(yaml, L4Proto.Tcp, 80, All()
            .ExpectPeer("x", "a", null, null, false)
            .ExpectPeer(null, null, "y", "a", false)
            .ExpectPeer("x", "a", "y", "a", true)
            .ExpectPeer(null, null, "y", "b", false));
    }

    [Fact]
    public void Allow_any_port_on_one_protocol()
    {
        var yaml = Np("x", "allow-ingress-by-proto", """
              podSelector: {matchLabels: {pod: a}}
              ingress:
              - ports: [{protocol: TCP}]
            """);
        Validate(yaml, L4Proto.Tcp, 80, All());
        Validate(yaml, L4Proto.Udp, 80, All().ExpectAllIngress("x/a", false));
    }

    [Fact]
    public void Allow_all_policy_takes_precedence_over_a_narrower_one()
    {
        var narrow = Np("x", "allow-ingress-port-80", "  podSelector: {}\n  ingress:\n  - ports: [{port: 80}]");
        Validate(narrow, L4Proto.Tcp, 81, All().ExpectPeer(null, null, "x", null, false));
        Validate(narrow + Np("x", "allow-ingress", "  podSelector: {}\n  ingress: [{}]"), L4Proto.Tcp, 81, All());
    }

    [Fact]
    public void Sctp_rule_is_not_tcp()
    {
        var yaml = Np("x", "allow-only-sctp-ingress-on-port-80", """
              podSelector: {matchLabels: {pod: a}}
              ingress:
              - ports: [{port: 80, protocol: SCTP}]
            """);
        Validate(yaml, L4Proto.Tcp, 81, All().ExpectAllIngress("x/a", false));
        Validate(yaml, L4Proto.Tcp, 80, All().ExpectAllIngress("x/a", false));
        Validate(yaml, L4Proto.Sctp, 80, All());
    }

    [Fact]
    public void EndPort_range_allows_every_port_in_it()
    {
        // The e2e endPort case: ingress to x/a from namespace y on 80..81.
        var yaml = Np("x", "allow-range", """
              podSelector: {matchLabels: {pod: a}}
              ingress:
              - from: [{namespaceSelector: {matchLabels: {ns: y}}}]
                ports: [{port: 80, endPort: 81, protocol: TCP}]
            """);
        var allowY = All().ExpectPeer("x", null, "x", "a", false).ExpectPeer("z", null, "x", "a", false);
        Validate(yaml, L4Proto.Tcp, 80, allowY);
        Validate(yaml, L4Proto.Tcp, 81, allowY);
        Validate(yaml, L4Proto.Tcp, 82, All().ExpectAllIngress("x/a", false));
    }

    [Fact]
    public void Egress_by_namespaceSelector_matchExpressions_on_the_default_namespace_label()
    {
        var yaml = Np("x", "allow-ns-y-match-selector-for-immutable-ns-label", """
              podSelector: {matchLabels: {pod: a}}
              policyTypes: [Egress]
              egress:
              - to: [{namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [y]}]}}]
            """);
        Validate(yaml, L4Proto.Tcp, 80, All().ExpectPeer("x", "a", "y", null, false));
    }

    [Fact]
    public void Egress_rules_without_policyTypes_also_isolate_ingress()
    {
        // Kubernetes default policyTypes: Ingress always, Egress because egress rules are present.
        var yaml = Np("x", "egress-only-rules", "  podSelector: {matchLabels: {pod: a}}\n  egress: [{}]");
        Validate(yaml, L4Proto.Tcp, 80, All().ExpectAllIngress("x/a", false));
    }

    [Fact]
    public void Kubernetes_and_cilium_policies_combine_and_cilium_deny_wins()
    {
        var yaml = Np("x", "allow-all", "  podSelector: {}\n  ingress: [{}]") + """
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata: {name: deny-y, namespace: x}
            spec:
              endpointSelector: {matchLabels: {pod: a}}
              ingressDeny:
              - fromEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: y}}]
            """;
        Validate(yaml, L4Proto.Tcp, 80, All().ExpectPeer("y", null, "x", "a", false));
    }
}
