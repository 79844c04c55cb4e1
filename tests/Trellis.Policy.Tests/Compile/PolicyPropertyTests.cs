namespace Trellis.Policy.Tests;

/// <summary>
/// Hand-rolled property tests over random policy sets (seeded, so failures reproduce): allows only add, denies only
/// remove, and the order policies are handed in does not matter.
/// </summary>
public class PolicyPropertyTests
{
    private const int Runs = 60;

    private static readonly string[] Ns = ["x", "y", "z"];
    private static readonly string[] PodNames = ["a", "b", "c"];

    private static readonly (IdentityInfo Identity, NamedPort[] Ports)[] Pods = Ns.SelectMany((ns, i) => PodNames.Select((p, j) =>
        (new IdentityInfo((uint)(300 + i * 3 + j), IdentityLabels.For(ns, Labels.From(("pod", p)), Labels.Empty)),
         new[] { new NamedPort("serve-80-tcp", 80, L4Proto.Tcp), new NamedPort("serve-81-udp", 81, L4Proto.Udp) }))).ToArray();

    private static readonly CidrIdentity[] Cidrs = [new(ReservedIdentity.CidrMinimum, "10.0.0.0/8"), new(ReservedIdentity.CidrMinimum + 1, "10.1.0.0/16")];

    private static readonly PolicyInputs Inputs = new(Pods.Select(p => p.Identity).ToArray(), Cidrs,
        id => Pods.FirstOrDefault(p => p.Identity.Id == id).Ports ?? []);

    private static readonly uint[] Peers = [.. Pods.Select(p => p.Identity.Id), ReservedIdentity.World, ReservedIdentity.Host, .. Cidrs.Select(c => c.Id)];

    private static readonly (L4Proto Proto, ushort Port)[] Probes = [(L4Proto.Tcp, 80), (L4Proto.Tcp, 81), (L4Proto.Udp, 81), (L4Proto.Sctp, 80), (L4Proto.Icmp, 8)];

    /// <summary>Every (pod, direction, peer, probe) the policies allow.</summary>
    private static HashSet<string> Allowed(IReadOnlyList<CompiledPolicySource> policies)
    {
        var result = new HashSet<string>();
        foreach (var (identity, ports) in Pods)
        {
            var compiled = PolicyCompiler.Compile(identity, ports, Inputs, policies);
            foreach (var direction in new[] { Direction.Ingress, Direction.Egress })
            foreach (var peer in Peers)
            foreach (var (proto, port) in Probes)
            {
                if (PolicyEvaluator.Evaluate(compiled, direction, peer, proto, port).Allowed)
                    result.Add($"{identity.Id} {direction} {peer} {proto}/{port}");
            }
        }
        return result;
    }

    private static string Selector(Random r) => r.Next(4) switch
    {
        0 => "{}",
        1 => $"{{matchLabels: {{pod: {PodNames[r.Next(3)]}}}}}",
        2 => $"{{matchExpressions: [{{key: pod, operator: NotIn, values: [{PodNames[r.Next(3)]}]}}]}}",
        _ => $"{{matchLabels: {{k8s:io.kubernetes.pod.namespace: {Ns[r.Next(3)]}, pod: {PodNames[r.Next(3)]}}}}}",
    };

    private static string CiliumPeerRule(Random r, Direction d, bool deny)
    {
        var (eps, cidr, ents) = d == Direction.Ingress ? ("fromEndpoints", "fromCIDRSet", "fromEntities") : ("toEndpoints", "toCIDRSet", "toEntities");
        var peer = r.Next(5) switch
        {
            0 => "",
            1 => $"{eps}: [{Selector(r)}]",
            2 => $"{cidr}: [{{cidr: 10.0.0.0/8{(r.Next(2) == 0 ? ", except: [10.1.0.0/16]" : "")}}}]",
            3 => $"{ents}: [{new[] { "world", "cluster", "host", "all" }[r.Next(4)]}]",
            _ => $"{eps}: [{Selector(r)}, {Selector(r)}]",
        };
        var ports = r.Next(5) switch
        {
            0 when peer.Length > 0 => "",
            1 => "icmps: [{fields: [{type: 8}]}]",
            2 => $"toPorts: [{{ports: [{{port: \"80\", endPort: {80 + r.Next(2)}, protocol: {new[] { "TCP", "UDP", "ANY" }[r.Next(3)]}}}]}}]",
            3 => $"toPorts: [{{ports: [{{port: {(r.Next(2) == 0 ? "serve-80-tcp" : "serve-81-udp")}}}]}}]",
            _ => "toPorts: [{ports: [{port: \"81\"}]}]",
        };
        var parts = new[] { peer, ports }.Where(p => p.Length > 0).ToArray();
        return parts.Length == 0 ? "{}" : "{" + string.Join(", ", parts) + "}";
    }

    private static string RandomCilium(Random r, int n, bool allowDeny = true)
    {
        var ns = Ns[r.Next(3)];
        var clusterwide = r.Next(2) == 0;
        var lines = new List<string>
        {
            "apiVersion: cilium.io/v2",
            $"kind: {(clusterwide ? "CiliumClusterwideNetworkPolicy" : "CiliumNetworkPolicy")}",
            $"metadata: {{name: c{n}{(clusterwide ? "" : ", namespace: " + ns)}}}",
            "spec:",
            $"  endpointSelector: {Selector(r)}",
        };
        foreach (var (field, dir, deny) in new[] { ("ingress", Direction.Ingress, false), ("egress", Direction.Egress, false), ("ingressDeny", Direction.Ingress, true), ("egressDeny", Direction.Egress, true) })
        {
            if ((deny && !allowDeny) || r.Next(3) == 0)
                continue;
            lines.Add($"  {field}: [{string.Join(", ", Enumerable.Range(0, 1 + r.Next(2)).Select(_ => CiliumPeerRule(r, dir, deny)))}]");
        }
        return string.Join("\n", lines) + "\n";
    }

    private static string RandomKubernetes(Random r, int n)
    {
        string Peer() => r.Next(4) switch
        {
            0 => $"{{podSelector: {Selector(r).Replace("k8s:io.kubernetes.pod.namespace", "team")}}}",
            1 => $"{{namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {Ns[r.Next(3)]}}}}}}}",
            2 => $"{{namespaceSelector: {{}}, podSelector: {{matchLabels: {{pod: {PodNames[r.Next(3)]}}}}}}}",
            _ => "{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}",
        };
        string Rule(string peers) => r.Next(3) switch
        {
            0 => "{}",
            1 => $"{{{peers}: [{Peer()}, {Peer()}]}}",
            _ => $"{{{peers}: [{Peer()}], ports: [{{port: {(r.Next(2) == 0 ? "80" : "serve-80-tcp")}}}, {{protocol: UDP}}]}}",
        };
        var types = new[] { "[Ingress]", "[Egress]", "[Ingress, Egress]" }[r.Next(3)];
        return $"""
            apiVersion: networking.k8s.io/v1
            kind: NetworkPolicy
            metadata: {"{"}name: k{n}, namespace: {Ns[r.Next(3)]}{"}"}
            spec:
              podSelector: {Selector(r).Replace("k8s:io.kubernetes.pod.namespace", "team")}
              policyTypes: {types}
              ingress: [{Rule("from")}]
              egress: [{Rule("to")}]

            """;
    }

    private static List<CompiledPolicySource> RandomPolicies(Random r)
    {
        var result = new List<CompiledPolicySource>();
        var count = 1 + r.Next(4);
        for (var i = 0; i < count; i++)
        {
            var yaml = r.Next(2) == 0 ? RandomCilium(r, i) : RandomKubernetes(r, i);
            result.Add(new CompiledPolicySource((uint)(i + 1), Parse(yaml)));
        }
        return result;
    }

    private static PolicyResource Parse(string yaml) => (PolicyResource)Assert.Single(ManifestParser.Parse(yaml, "random.yaml"));

    [Fact]
    public void Adding_an_allow_rule_never_removes_an_allowed_pair()
    {
        for (var seed = 0; seed < Runs; seed++)
        {
            var r = new Random(seed);
            var policies = RandomPolicies(r);
            var before = Allowed(policies);

            // A default-allow policy (enableDefaultDeny false) only adds allows, like a rule appended to a policy
            // whose endpoints are already isolated.
            var extra = RandomCilium(r, 99, allowDeny: false).Replace("spec:\n", "spec:\n  enableDefaultDeny: {ingress: false, egress: false}\n");
            var after = Allowed([.. policies, new CompiledPolicySource(99, Parse(extra))]);

            Assert.True(before.IsSubsetOf(after), $"seed {seed}: lost {string.Join("; ", before.Except(after).Take(5))}\n{extra}");
        }
    }

    [Fact]
    public void Adding_a_deny_rule_never_adds_an_allowed_pair()
    {
        for (var seed = 0; seed < Runs; seed++)
        {
            var r = new Random(1000 + seed);
            var policies = RandomPolicies(r);
            var before = Allowed(policies);

            var deny = RandomCilium(r, 98);
            var denyOnly = string.Join("\n", deny.Split('\n').Where(l => !l.StartsWith("  ingress:") && !l.StartsWith("  egress:")));
            var after = Allowed([.. policies, new CompiledPolicySource(98, Parse(denyOnly))]);

            Assert.True(after.IsSubsetOf(before), $"seed {seed}: gained {string.Join("; ", after.Except(before).Take(5))}\n{denyOnly}");
        }
    }

    [Fact]
    public void Compile_does_not_depend_on_policy_order()
    {
        for (var seed = 0; seed < Runs; seed++)
        {
            var r = new Random(2000 + seed);
            var policies = RandomPolicies(r);
            var shuffled = policies.OrderBy(_ => r.Next()).ToList();
            foreach (var (identity, ports) in Pods)
            {
                var a = PolicyCompiler.Compile(identity, ports, Inputs, policies);
                var b = PolicyCompiler.Compile(identity, ports, Inputs, shuffled);
                Assert.Equal((a.IngressEnforced, a.EgressEnforced), (b.IngressEnforced, b.EgressEnforced));
                Assert.Equal(a.Entries.ToArray(), b.Entries.ToArray());
            }
        }
    }
}
