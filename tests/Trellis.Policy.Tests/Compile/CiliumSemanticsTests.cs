namespace Trellis.Policy.Tests;

public class CiliumSemanticsTests
{
    private static readonly IdentityInfo Web = Pod(300, "shop", ("app", "web"));
    private static readonly IdentityInfo Db = Pod(301, "shop", ("app", "db"));
    private static readonly IdentityInfo[] Pods = [Web, Db];

    // CIDR identities the agent allocated for the prefixes the policies reference, plus an unrelated one.
    private static readonly CidrIdentity Net10 = new(ReservedIdentity.CidrMinimum, "10.0.0.0/8");
    private static readonly CidrIdentity Net10_1 = new(ReservedIdentity.CidrMinimum + 1, "10.1.0.0/16");
    private static readonly CidrIdentity Host10_1_2_3 = new(ReservedIdentity.CidrMinimum + 2, "10.1.2.3/32");
    private static readonly CidrIdentity Net192 = new(ReservedIdentity.CidrMinimum + 3, "192.168.0.0/16");
    private static readonly CidrIdentity[] Cidrs = [Net10, Net10_1, Host10_1_2_3, Net192];

    private static readonly NamedPort[] DbPorts = [new("sql", 5432, L4Proto.Tcp), new("metrics", 9100, L4Proto.Tcp)];
    private static readonly PolicyInputs Inputs = new(Pods, Cidrs, id => id == Db.Id ? DbPorts : []);

    private static IdentityInfo Pod(uint id, string ns, params (string, string)[] labels) =>
        new(id, IdentityLabels.For(ns, Labels.From(labels), Labels.Empty));

    private static CompiledPolicySource Cnp(uint id, string spec) =>
        new(id, (PolicyResource)Assert.Single(ManifestParser.Parse(
            $"apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: p{id}, namespace: shop}}\nspec:\n  endpointSelector: {{matchLabels: {{app: web}}}}\n{spec}", "p.yaml")));

    private static EndpointPolicy Compile(params CompiledPolicySource[] policies) =>
        PolicyCompiler.Compile(Web, [new NamedPort("http", 8080, L4Proto.Tcp)], Inputs, policies);

    private static uint[] Peers(EndpointPolicy p, Direction d) =>
        p.Entries.Keys.Where(k => k.Direction == d).Select(k => k.Identity).Distinct().Order().ToArray();

    private const uint Any = ReservedIdentity.Unknown;

    public static TheoryData<string, uint[]> EntityCases => new()
    {
        { "all", [Any] },
        { "world", [ReservedIdentity.World, Net10.Id, Net10_1.Id, Host10_1_2_3.Id, Net192.Id] },
        { "cluster", [ReservedIdentity.Host, ReservedIdentity.Health, ReservedIdentity.RemoteNode, Web.Id, Db.Id] },
        { "host", [ReservedIdentity.Host] },
        { "remote-node", [ReservedIdentity.RemoteNode] },
        { "health", [ReservedIdentity.Health] },
        { "none", [] },
    };

    [Theory]
    [MemberData(nameof(EntityCases))]
    public void Entities_map_onto_identities(string entity, uint[] expected)
    {
        var result = Compile(Cnp(1, $"  egress:\n  - toEntities: [{entity}]\n"));
        Assert.True(result.EgressEnforced);
        Assert.Equal(expected.Order(), Peers(result, Direction.Egress));
    }

    public static TheoryData<string, uint[]> CidrCases => new()
    {
        { "toCIDR: [10.0.0.0/8]", [Net10.Id, Net10_1.Id, Host10_1_2_3.Id] },
        { "toCIDR: [10.1.2.3]", [Host10_1_2_3.Id] },
        { "toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]", [Net10.Id] },
        { "toCIDRSet: [{cidr: 0.0.0.0/0, except: [10.0.0.0/8]}]", [ReservedIdentity.World, Net192.Id] },
        { "toCIDR: [0.0.0.0/0]", [ReservedIdentity.World, Net10.Id, Net10_1.Id, Host10_1_2_3.Id, Net192.Id] },
        { "toCIDR: [172.16.0.0/12]", [] },
    };

    [Theory]
    [MemberData(nameof(CidrCases))]
    public void Cidr_peers_select_the_cidr_identities_inside_and_outside_every_except(string peer, uint[] expected)
    {
        var result = Compile(Cnp(1, $"  egress:\n  - {peer}\n"));
        Assert.Equal(expected.Order(), Peers(result, Direction.Egress));
    }

    public static TheoryData<string, string[]> PortCases => new()
    {
        { "[{port: \"80\", endPort: 90, protocol: TCP}]", ["egress any TCP/80-90"] },
        { "[{port: \"53\", protocol: ANY}]", ["egress any TCP/53", "egress any UDP/53", "egress any SCTP/53"] },
        { "[{protocol: UDP}]", ["egress any UDP"] },
        { "[{port: \"0\", protocol: SCTP}]", ["egress any SCTP"] },
    };

    [Theory]
    [MemberData(nameof(PortCases))]
    public void Ports_become_inclusive_ranges(string ports, string[] expected)
    {
        var result = Compile(Cnp(1, $"  egress:\n  - toPorts: [{{ports: {ports}}}]\n"));
        Assert.Equal(expected.Order(), result.Entries.Keys.Select(k => k.ToString()).Order());
    }

    [Fact]
    public void Icmp_types_by_number_and_name_become_type_ranges()
    {
        var result = Compile(Cnp(1, """
              ingress:
              - icmps: [{fields: [{type: 8}, {type: EchoReply, family: IPv4}]}]
            """));
        Assert.Equal([new PolicyKey(Any, Direction.Ingress, L4Proto.Icmp, 0, 0), new PolicyKey(Any, Direction.Ingress, L4Proto.Icmp, 8, 8)],
            result.Entries.Keys);
    }

    [Fact]
    public void Named_ports_resolve_against_the_subject_on_ingress_and_the_peer_on_egress()
    {
        var result = Compile(Cnp(1, """
              ingress:
              - toPorts: [{ports: [{port: HTTP}, {port: nope}]}]
              egress:
              - toEndpoints: [{matchLabels: {app: db}}]
                toPorts: [{ports: [{port: sql, protocol: TCP}, {port: metrics, protocol: UDP}]}]
              - toPorts: [{ports: [{port: metrics}]}]
            """));
        Assert.Equal(
            [new PolicyKey(Any, Direction.Ingress, L4Proto.Tcp, 8080, 8080),
             new PolicyKey(Any, Direction.Egress, L4Proto.Tcp, 9100, 9100),
             new PolicyKey(Db.Id, Direction.Egress, L4Proto.Tcp, 5432, 5432)],
            result.Entries.Keys);
    }

    [Fact]
    public void Deny_wins_over_allow_for_the_same_key_whatever_the_order()
    {
        var allow = Cnp(1, "  ingress:\n  - fromEndpoints: [{matchLabels: {app: db}}]\n");
        var deny = Cnp(2, "  ingressDeny:\n  - fromEndpoints: [{matchLabels: {app: db}}]\n");
        var key = new PolicyKey(Db.Id, Direction.Ingress, L4Proto.Any, 0, PolicyKey.MaxPort);

        Assert.Equal(new PolicyEntry(2, Deny: true), Compile(allow, deny).Entries[key]);
        Assert.Equal(new PolicyEntry(2, Deny: true), Compile(deny, allow).Entries[key]);
        Assert.False(PolicyEvaluator.Evaluate(Compile(allow, deny), Direction.Ingress, Db.Id, L4Proto.Tcp, 80).Allowed);
    }

    [Fact]
    public void Deny_only_policy_enforces_default_deny_unless_enableDefaultDeny_is_false()
    {
        var denyOnly = Compile(Cnp(1, "  ingressDeny:\n  - fromEntities: [world]\n"));
        Assert.True(denyOnly.IngressEnforced);

        var optedOut = Compile(Cnp(1, "  enableDefaultDeny: {ingress: false}\n  ingressDeny:\n  - fromEntities: [world]\n"));
        Assert.False(optedOut.IngressEnforced);
        Assert.All(optedOut.Entries.Values, e => Assert.True(e.Deny));
        Assert.True(PolicyEvaluator.Evaluate(optedOut, Direction.Ingress, Db.Id, L4Proto.Tcp, 80).Allowed);
        Assert.False(PolicyEvaluator.Evaluate(optedOut, Direction.Ingress, ReservedIdentity.World, L4Proto.Tcp, 80).Allowed);
    }

    [Fact]
    public void EnableDefaultDeny_false_on_one_policy_does_not_lift_another_policys_default_deny()
    {
        var allowAll = Cnp(1, "  enableDefaultDeny: {egress: false}\n  egress:\n  - toEntities: [world]\n");
        var strict = Cnp(2, "  egress:\n  - toEndpoints: [{matchLabels: {app: db}}]\n");
        Assert.False(Compile(allowAll).EgressEnforced);
        Assert.True(Compile(allowAll, strict).EgressEnforced);
    }

    [Fact]
    public void ReferencedCidrs_lists_every_cidr_and_except_canonically()
    {
        var p = Cnp(1, """
              egress:
              - toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]
              ingressDeny:
              - fromCIDR: [192.168.1.7, 10.0.0.0/8]
            """);
        Assert.Equal(["10.0.0.0/8", "10.1.0.0/16", "192.168.1.7/32"], PolicyCompiler.ReferencedCidrs([p]));
    }

    [Fact]
    public void SelectingRules_names_policy_rule_and_directions()
    {
        var cnp = Cnp(4, "  egress:\n  - toEntities: [world]\n");
        var np = new CompiledPolicySource(9, (PolicyResource)Assert.Single(ManifestParser.Parse("""
            apiVersion: networking.k8s.io/v1
            kind: NetworkPolicy
            metadata: {name: deny, namespace: shop}
            spec:
              podSelector: {}
            """, "np.yaml")));
        var other = new CompiledPolicySource(5, (PolicyResource)Assert.Single(ManifestParser.Parse("""
            apiVersion: networking.k8s.io/v1
            kind: NetworkPolicy
            metadata: {name: elsewhere, namespace: ops}
            spec: {podSelector: {}}
            """, "np.yaml")));

        var rules = PolicyCompiler.SelectingRules(Web, [cnp, other, np]);

        Assert.Collection(rules,
            r => Assert.Equal((4u, PolicyKind.CiliumNetworkPolicy, "p4", 0, false, true, false, true),
                (r.PolicyId, r.Kind, r.Name, r.RuleIndex, r.Ingress, r.Egress, r.IngressDefaultDeny, r.EgressDefaultDeny)),
            r => Assert.Equal((9u, PolicyKind.NetworkPolicy, "deny", 0, true, false, true, false),
                (r.PolicyId, r.Kind, r.Name, r.RuleIndex, r.Ingress, r.Egress, r.IngressDefaultDeny, r.EgressDefaultDeny)));
    }

    [Fact]
    public void Evaluator_prefers_deny_matches_ranges_and_wildcard_peers()
    {
        var entries = new Dictionary<PolicyKey, PolicyEntry>
        {
            [new(Any, Direction.Ingress, L4Proto.Tcp, 8000, 8099)] = new(1, false),
            [new(Db.Id, Direction.Ingress, L4Proto.Tcp, 8080, 8080)] = new(2, true),
            [new(Web.Id, Direction.Ingress, L4Proto.Any, 0, PolicyKey.MaxPort)] = new(3, false),
        };
        var policy = new EndpointPolicy(true, false, entries);

        Assert.True(PolicyEvaluator.Evaluate(policy, Direction.Ingress, 999, L4Proto.Tcp, 8099).Allowed);
        Assert.False(PolicyEvaluator.Evaluate(policy, Direction.Ingress, 999, L4Proto.Tcp, 8100).Allowed);
        Assert.False(PolicyEvaluator.Evaluate(policy, Direction.Ingress, 999, L4Proto.Udp, 8080).Allowed);
        var denied = PolicyEvaluator.Evaluate(policy, Direction.Ingress, Db.Id, L4Proto.Tcp, 8080);
        Assert.Equal((false, 2u), (denied.Allowed, denied.Entry!.Value.PolicyId));
        Assert.True(PolicyEvaluator.Evaluate(policy, Direction.Ingress, Web.Id, L4Proto.Icmp, 8).Allowed);
        Assert.True(PolicyEvaluator.Evaluate(policy, Direction.Egress, Db.Id, L4Proto.Tcp, 1).Allowed);
    }
}
