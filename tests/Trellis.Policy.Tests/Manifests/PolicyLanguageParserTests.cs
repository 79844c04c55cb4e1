namespace Trellis.Policy.Tests;

public class PolicyLanguageParserTests
{
    private const string File = "p.yaml";

    private const string CnpHead = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p}\nspec:\n  endpointSelector: {}\n";

    private const string NpHead = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np, namespace: x}\nspec:\n";

    private static ManifestException Fails(string yaml) => Assert.Throws<ManifestException>(() => ManifestParser.Parse(yaml, File));

    private static IReadOnlyList<ManifestWarning> Warnings(string yaml)
    {
        ManifestParser.Parse(yaml, File, out var warnings);
        return warnings;
    }

    public static TheoryData<string, int, int, string, string> CiliumErrors => new()
    {
        { "  egress:\n  - toCIDR: [\"fd00::/8\"]\n", 7, 14, "spec.egress[0].toCIDR[0]", "IPv6 is not supported" },
        { "  egress:\n  - toCIDRSet: [{cidr: 10.0.0.0/8, except: [11.0.0.0/16]}]\n", 7, 45, "spec.egress[0].toCIDRSet[0].except[0]", "is not inside cidr 10.0.0.0/8" },
        { "  egress:\n  - toCIDRSet: [{cidr: 10.0.0.1}]\n", 7, 24, "spec.egress[0].toCIDRSet[0].cidr", "has no prefix length" },
        { "  egress:\n  - toEntities: [kube-apiserver]\n", 7, 18, "spec.egress[0].toEntities[0]", "entity \"kube-apiserver\" is not supported yet" },
        { "  egress:\n  - toEntities: [moon]\n", 7, 18, "spec.egress[0].toEntities[0]", "unknown entity \"moon\"" },
        { "  ingress:\n  - fromEndpoints: [{}]\n    fromCIDR: [10.0.0.0/8]\n", 8, 5, "spec.ingress[0].fromCIDR", "combining fromEndpoints and fromCIDR" },
        { "  ingress:\n  - icmps: [{fields: [{type: 8}]}]\n    toPorts: [{ports: [{port: \"80\"}]}]\n", 7, 5, "spec.ingress[0].icmps", "icmps cannot be combined with toPorts" },
        { "  ingress:\n  - icmps: [{fields: [{type: EchoRequest, family: IPv6}]}]\n", 7, 51, "spec.ingress[0].icmps[0].fields[0].family", "IPv6 is not supported" },
        { "  ingress:\n  - icmps: [{fields: [{type: 256}]}]\n", 7, 30, "spec.ingress[0].icmps[0].fields[0].type", "out of range" },
        { "  ingress:\n  - toPorts: [{ports: [{port: http, endPort: 90}]}]\n", 7, 46, "spec.ingress[0].toPorts[0].ports[0].endPort", "named port" },
        { "  ingress:\n  - toPorts: [{ports: [{port: \"80\", endPort: 70000}]}]\n", 7, 46, "spec.ingress[0].toPorts[0].ports[0].endPort", "out of range" },
        { "  ingressDeny:\n  - toPorts: [{ports: [{port: \"80\"}], rules: {http: [{}]}}]\n", 7, 39, "spec.ingressDeny[0].toPorts[0].rules", "unknown field \"rules\"" },
        { "  enableDefaultDeny: {ingress: maybe}\n", 6, 32, "spec.enableDefaultDeny.ingress", "expected true or false" },
        { "  ingress:\n  - toPorts: [{ports: [{port: \"80\", protocol: ICMP}]}]\n", 7, 47, "spec.ingress[0].toPorts[0].ports[0].protocol", "allow ICMP with icmps" },
    };

    [Theory]
    [MemberData(nameof(CiliumErrors))]
    public void Cilium_rules_that_cannot_be_enforced_are_errors_at_the_field(string rule, int line, int column, string field, string problem)
    {
        var e = Fails(CnpHead + rule);
        Assert.Equal((line, column, field), (e.Line, e.Column, e.Field));
        Assert.Contains(problem, e.Problem);
    }

    public static TheoryData<string, string, string> CiliumWarnings => new()
    {
        { "  egress:\n  - toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.0.0.0/8]}]\n", "spec.egress[0].toCIDRSet[0].except[0]", "removes the whole cidr" },
        { "  egress:\n  - toCIDR: [10.0.0.1/8]\n", "spec.egress[0].toCIDR[0]", "host bits set; it is used as 10.0.0.0/8" },
        { "  ingress:\n  - fromEndpoints: [{matchLabels: {app: a}}]\n  ingressDeny:\n  - fromEntities: [all]\n", "spec.ingress[0]", "spec.ingressDeny[0] of the same rule denies all" },
        { "  egress:\n  - toPorts: [{ports: [{port: \"53\", protocol: UDP}]}]\n  egressDeny:\n  - toPorts: [{ports: [{port: \"53\", protocol: UDP}]}]\n", "spec.egress[0]", "never takes effect" },
        { "  egress:\n  - toEntities: [world]\n    toPorts: [{ports: [{port: https}]}]\n", "spec.egress[0].toPorts", "named ports resolve only against pods" },
        { "  ingress:\n  - toPorts: [{ports: [{port: \"80\", endPort: 80}]}]\n", "spec.ingress[0].toPorts[0].ports[0].endPort", "single port 80" },
    };

    [Theory]
    [MemberData(nameof(CiliumWarnings))]
    public void Suspicious_cilium_rules_are_accepted_with_a_warning(string rule, string field, string problem)
    {
        var warning = Assert.Single(Warnings(CnpHead + rule));
        Assert.Equal((File, field), (warning.File, warning.Field));
        Assert.Contains(problem, warning.Problem);
        Assert.StartsWith($"{File}:{warning.Line}:{warning.Column}: {field}: warning: ", warning.ToString());
    }

    [Fact]
    public void Deny_with_other_peers_or_ports_does_not_warn()
    {
        Assert.Empty(Warnings(CnpHead + """
              ingress:
              - fromEndpoints: [{matchLabels: {app: a}}]
              ingressDeny:
              - fromEndpoints: [{matchLabels: {app: b}}]
              - fromEndpoints: [{matchLabels: {app: a}}]
                toPorts: [{ports: [{port: "22"}]}]
            """));
    }

    [Fact]
    public void Cilium_rule_parses_deny_lists_entities_cidrs_icmps_and_default_deny()
    {
        var policy = (PolicyResource)Assert.Single(ManifestParser.Parse(CnpHead + """
              description: d
              enableDefaultDeny: {ingress: false}
              ingress:
              - fromCIDRSet: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]
              - icmps: [{fields: [{type: TimeExceeded}]}]
              egressDeny:
              - toEntities: [world, host]
                toPorts: [{ports: [{port: "8000", endPort: 8080, protocol: TCP}, {port: http}]}]
            """, File));
        var rule = Assert.Single(policy.Rules);
        Assert.Equal((false, (bool?)null, false, true), (rule.EnableDefaultDenyIngress, rule.EnableDefaultDenyEgress, rule.DefaultDenyIngress, rule.DefaultDenyEgress));
        var cidr = Assert.Single(rule.Ingress[0].Cidrs!);
        Assert.Equal("10.0.0.0/8", cidr.Cidr);
        Assert.Equal(["10.1.0.0/16"], cidr.Except);
        Assert.Equal([(byte)11], rule.Ingress[1].IcmpTypes);
        var deny = Assert.Single(rule.EgressDeny);
        Assert.Equal([PolicyEntity.World, PolicyEntity.Host], deny.Entities);
        Assert.Equal([new PortProtocol(8000, L4Proto.Tcp, 8080), new PortProtocol(0, L4Proto.Any, 0, "http")], deny.ToPorts[0].Ports);
    }

    [Fact]
    public void NetworkPolicy_translates_peers_ports_and_policy_types()
    {
        var policy = (PolicyResource)Assert.Single(ManifestParser.Parse(NpHead + """
              podSelector: {matchLabels: {app: web}}
              ingress:
              - from:
                - podSelector: {matchLabels: {role: fe}}
                - namespaceSelector: {matchLabels: {team: a}}
                  podSelector: {matchExpressions: [{key: tier, operator: Exists}]}
                - ipBlock: {cidr: 192.168.0.0/16, except: [192.168.1.0/24]}
                ports: [{port: 80}, {port: http, protocol: UDP}, {port: 8000, endPort: 8100}]
              - {}
            """, File));
        Assert.Equal((PolicyKind.NetworkPolicy, "NetworkPolicy", "x"), (policy.PolicyKind, policy.Kind, policy.Namespace));
        var rule = Assert.Single(policy.Rules);
        Assert.Equal((true, false), (rule.DefaultDenyIngress, rule.DefaultDenyEgress));

        var first = rule.Ingress[0];
        Assert.Equal(["io.kubernetes.pod.namespace=x,role=fe", "io.cilium.k8s.namespace.labels.team=a,tier,io.kubernetes.pod.namespace"],
            first.FromEndpoints!.Select(s => s.ToString()));
        Assert.Equal("192.168.0.0/16", Assert.Single(first.Cidrs!).Cidr);
        Assert.Null(first.Entities);
        Assert.Equal([new PortProtocol(80, L4Proto.Tcp), new PortProtocol(0, L4Proto.Udp, 0, "http"), new PortProtocol(8000, L4Proto.Tcp, 8100)],
            Assert.Single(first.ToPorts).Ports);

        var allowAll = rule.Ingress[1];
        Assert.Equal([PolicyEntity.All], allowAll.Entities);
        Assert.Empty(allowAll.ToPorts);
    }

    public static TheoryData<string, string, string> NetworkPolicyErrors => new()
    {
        { "  podSelector: {}\n  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]\n", "spec.ingress[0].from[0].ipBlock", "cannot be combined" },
        { "  podSelector: {}\n  ingress:\n  - from: [{}]\n", "spec.ingress[0].from[0]", "a peer needs podSelector" },
        { "  podSelector: {}\n  policyTypes: [ingress]\n", "spec.policyTypes[0]", "invalid policy type \"ingress\"" },
        { "  podSelector: {}\n  ingress:\n  - ports: [{port: 0}]\n", "spec.ingress[0].ports[0].port", "out of range" },
        { "  podSelector: {}\n  ingress:\n  - ports: [{port: Http}]\n", "spec.ingress[0].ports[0].port", "not a valid port name" },
        { "  podSelector: {}\n  ingress:\n  - ports: [{port: 90, endPort: 80}]\n", "spec.ingress[0].ports[0].endPort", "below port 90" },
        { "  podSelector: {}\n  ingress:\n  - ports: [{endPort: 80}]\n", "spec.ingress[0].ports[0].endPort", "needs a non-zero port" },
        { "  podSelector: {}\n  ingress:\n  - ports: [{port: 80, protocol: ICMP}]\n", "spec.ingress[0].ports[0].protocol", "use TCP, UDP or SCTP" },
        { "  podSelector: {}\n  ingress:\n  - fromEndpoints: [{}]\n", "spec.ingress[0].fromEndpoints", "unknown field" },
        { "  podSelector: {matchLabels: {\"k8s:app\": web}}\n", "spec.podSelector.matchLabels.k8s:app", "label key" },
        { "  podSelector: {}\n  egress:\n  - to: [{ipBlock: {cidr: \"::/0\"}}]\n", "spec.egress[0].to[0].ipBlock.cidr", "IPv6 is not supported" },
    };

    [Theory]
    [MemberData(nameof(NetworkPolicyErrors))]
    public void NetworkPolicy_fields_kubernetes_would_reject_are_errors(string spec, string field, string problem)
    {
        var e = Fails(NpHead + spec);
        Assert.Equal(field, e.Field);
        Assert.Contains(problem, e.Problem);
        Assert.StartsWith($"{File}:{e.Line}:{e.Column}: {field}: ", e.Message);
    }

    [Fact]
    public void NetworkPolicy_rules_outside_policyTypes_are_ignored_with_a_warning()
    {
        ManifestParser.Parse(NpHead + "  podSelector: {}\n  policyTypes: [Egress]\n  ingress: [{}]\n", File, out var warnings);
        var policy = (PolicyResource)ManifestParser.Parse(NpHead + "  podSelector: {}\n  policyTypes: [Egress]\n  ingress: [{}]\n", File)[0];

        Assert.Equal(("spec.ingress", 7), (Assert.Single(warnings).Field, warnings[0].Line));
        Assert.Empty(policy.Rules[0].Ingress);
        Assert.Equal((false, true), (policy.Rules[0].DefaultDenyIngress, policy.Rules[0].DefaultDenyEgress));
    }

    [Theory]
    [InlineData("  podSelector: {}\n", true, false)]
    [InlineData("  podSelector: {}\n  egress: []\n", true, false)]
    [InlineData("  podSelector: {}\n  egress: [{}]\n", true, true)]
    [InlineData("  podSelector: {}\n  policyTypes: [Egress]\n", false, true)]
    [InlineData("  podSelector: {}\n  ingress: []\n  policyTypes: [Ingress, Egress]\n", true, true)]
    public void NetworkPolicy_policyTypes_default_to_ingress_plus_egress_when_egress_rules_exist(string spec, bool ingress, bool egress)
    {
        var rule = ((PolicyResource)ManifestParser.Parse(NpHead + spec, File)[0]).Rules[0];
        Assert.Equal((ingress, egress), (rule.DefaultDenyIngress, rule.DefaultDenyEgress));
    }
}
