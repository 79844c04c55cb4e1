namespace Trellis.Policy.Tests;

public class L7CompilerTests
{
    private static readonly IdentityInfo Web = Pod(300, ("app", "web"));
    private static readonly IdentityInfo Front = Pod(301, ("app", "front"));
    private static readonly IdentityInfo Admin = Pod(302, ("app", "admin"));
    private static readonly IdentityInfo[] All = [Web, Front, Admin];
    private static readonly ManifestParserOptions L7 = new() { AllowL7Rules = true };

    private static IdentityInfo Pod(uint id, params (string, string)[] labels) =>
        new(id, IdentityLabels.For("shop", Labels.From(labels), Labels.Empty));

    private static CompiledPolicySource Policy(uint id, string spec) =>
        new(id, (PolicyResource)Assert.Single(ManifestParser.Parse(
            $"apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: p{id}, namespace: shop}}\nspec:\n  endpointSelector: {{matchLabels: {{app: web}}}}\n{spec}",
            "p.yaml", L7, out _)));

    private static EndpointPolicy Compile(params CompiledPolicySource[] policies) =>
        PolicyCompiler.Compile(Web, [], PolicyInputs.FromIdentities(All), policies);

    private static PolicyKey In(uint id, ushort port) => new(id, Direction.Ingress, L4Proto.Tcp, port, port);

    private static readonly HttpRule GetPublic = new("GET", "/public/.*", null, []);

    private const string FrontGetPublic = """
          ingress:
          - fromEndpoints: [{matchLabels: {app: front}}]
            toPorts:
            - ports: [{port: "80", protocol: TCP}]
              rules: {http: [{method: GET, path: "/public/.*"}]}
        """;

    [Fact]
    public void L7_rules_keep_the_L4_entries_and_mark_the_key_for_the_proxy()
    {
        var p = Compile(Policy(1, FrontGetPublic));
        Assert.True(p.IngressEnforced);
        Assert.Equal([In(Front.Id, 80)], p.Entries.Keys);
        Assert.False(p.Entries[In(Front.Id, 80)].Deny);
        var (key, rules) = Assert.Single(p.HttpRules);
        Assert.Equal(In(Front.Id, 80), key);
        Assert.Equal([GetPublic], rules);
        Assert.True(p.Redirects(key));

        Assert.Equal([GetPublic], p.HttpRulesFor(Direction.Ingress, Front.Id, L4Proto.Tcp, 80));
        Assert.Null(p.HttpRulesFor(Direction.Ingress, Admin.Id, L4Proto.Tcp, 80)); // not allowed at L4 at all
        Assert.Null(p.HttpRulesFor(Direction.Egress, Front.Id, L4Proto.Tcp, 80));
        Assert.True(PolicyEvaluator.Evaluate(p, Direction.Ingress, Front.Id, L4Proto.Tcp, 80).Allowed);
    }

    [Fact]
    public void Policies_without_L7_rules_produce_no_http_rules()
    {
        var p = Compile(Policy(1, """
              ingress:
              - fromEndpoints: [{matchLabels: {app: front}}]
                toPorts: [{ports: [{port: "80", protocol: TCP}]}]
            """));
        Assert.Empty(p.HttpRules);
        Assert.Null(p.HttpRulesFor(Direction.Ingress, Front.Id, L4Proto.Tcp, 80));
    }

    [Fact]
    public void Rules_of_several_policies_for_the_same_key_add_up()
    {
        var p = Compile(Policy(1, FrontGetPublic), Policy(2, """
              ingress:
              - fromEndpoints: [{matchLabels: {app: front}}]
                toPorts:
                - ports: [{port: "80", protocol: TCP}]
                  rules: {http: [{method: POST, path: /submit}, {method: GET, path: "/public/.*"}]}
            """));
        Assert.Equal([GetPublic, new HttpRule("POST", "/submit", null, [])], p.HttpRules[In(Front.Id, 80)]);
        Assert.Equal(1u, p.Entries[In(Front.Id, 80)].PolicyId);
    }

    [Fact]
    public void An_L4_only_allow_for_the_same_peer_and_port_wins()
    {
        var l4 = Policy(2, """
              ingress:
              - fromEndpoints: [{matchLabels: {app: front}}]
                toPorts: [{ports: [{port: "80", protocol: TCP}]}]
            """);
        foreach (var p in new[] { Compile(Policy(1, FrontGetPublic), l4), Compile(l4, Policy(1, FrontGetPublic)) })
        {
            Assert.Empty(p.HttpRules);
            Assert.Null(p.HttpRulesFor(Direction.Ingress, Front.Id, L4Proto.Tcp, 80));
        }
    }

    [Fact]
    public void An_L4_only_allow_for_any_peer_lifts_the_restriction_but_keeps_the_redirect()
    {
        // Cilium's wildcardL3L4Rules: the L3-specific L7 key gets the allow-all rule.
        var p = Compile(Policy(1, FrontGetPublic), Policy(2, """
              ingress:
              - toPorts: [{ports: [{port: "80", protocol: TCP}]}]
            """));
        Assert.Equal([HttpRule.AllowAll], p.HttpRules[In(Front.Id, 80)]);
        Assert.False(p.Redirects(In(0, 80)));
        Assert.Null(p.HttpRulesFor(Direction.Ingress, Front.Id, L4Proto.Tcp, 80));
        Assert.Null(p.HttpRulesFor(Direction.Ingress, Admin.Id, L4Proto.Tcp, 80));
    }

    [Fact]
    public void An_L4_only_allow_for_one_peer_exempts_only_that_peer_from_an_any_peer_L7_rule()
    {
        var p = Compile(Policy(1, """
              ingress:
              - toPorts:
                - ports: [{port: "80", protocol: TCP}]
                  rules: {http: [{method: GET}]}
            """), Policy(2, """
              ingress:
              - fromEndpoints: [{matchLabels: {app: admin}}]
                toPorts: [{ports: [{port: "80", protocol: TCP}]}]
            """));
        Assert.Equal([In(0, 80)], p.HttpRules.Keys);
        Assert.Null(p.HttpRulesFor(Direction.Ingress, Admin.Id, L4Proto.Tcp, 80));
        Assert.Equal([new HttpRule("GET", null, null, [])], p.HttpRulesFor(Direction.Ingress, Front.Id, L4Proto.Tcp, 80));
    }

    [Fact]
    public void An_L3_only_allow_does_not_lift_the_L7_rules_of_a_port()
    {
        var p = Compile(Policy(1, FrontGetPublic), Policy(2, """
              ingress:
              - fromEndpoints: [{matchLabels: {app: front}}]
            """));
        Assert.Equal([GetPublic], p.HttpRules[In(Front.Id, 80)]);
        Assert.Equal([GetPublic], p.HttpRulesFor(Direction.Ingress, Front.Id, L4Proto.Tcp, 80));
        Assert.Null(p.HttpRulesFor(Direction.Ingress, Front.Id, L4Proto.Tcp, 81));
    }

    [Fact]
    public void A_deny_removes_the_redirect()
    {
        var p = Compile(Policy(1, FrontGetPublic), Policy(2, """
              ingressDeny:
              - fromEndpoints: [{matchLabels: {app: front}}]
                toPorts: [{ports: [{port: "80", protocol: TCP}]}]
            """));
        Assert.True(p.Entries[In(Front.Id, 80)].Deny);
        Assert.Empty(p.HttpRules);
        Assert.Null(p.HttpRulesFor(Direction.Ingress, Front.Id, L4Proto.Tcp, 80));
    }

    [Fact]
    public void Egress_and_visibility_only_rules_redirect_with_allow_all()
    {
        var p = Compile(Policy(1, """
              egress:
              - toEndpoints: [{matchLabels: {app: admin}}]
                toPorts:
                - ports: [{port: "8080", protocol: TCP}]
                  rules: {http: [{}]}
            """));
        var key = new PolicyKey(Admin.Id, Direction.Egress, L4Proto.Tcp, 8080, 8080);
        Assert.Equal([HttpRule.AllowAll], p.HttpRules[key]);
        Assert.Equal([HttpRule.AllowAll], p.HttpRulesFor(Direction.Egress, Admin.Id, L4Proto.Tcp, 8080));
    }
}
