namespace Trellis.Policy.Tests;

public class PolicyCompilerTests
{
    // Identities of a small cluster: two namespaces plus the reserved world identity.
    private static readonly IdentityInfo ShopWeb = Pod(300, "shop", ("app", "web"));
    private static readonly IdentityInfo ShopFront = Pod(301, "shop", ("app", "front"));
    private static readonly IdentityInfo OpsFront = Pod(302, "ops", ("app", "front"));
    private static readonly IdentityInfo OpsMonitor = Pod(303, "ops", ("app", "monitor"));
    private static readonly IdentityInfo World = new(ReservedIdentity.World, Labels.From(("reserved:world", "")));
    private static readonly IdentityInfo[] All = [World, OpsMonitor, ShopFront, ShopWeb, OpsFront];

    private static IdentityInfo Pod(uint id, string ns, params (string, string)[] labels) =>
        new(id, IdentityLabels.For(ns, Labels.From(labels), ns == "ops" ? Labels.From(("team", "sre")) : Labels.Empty));

    private static CompiledPolicySource Policy(uint id, string yaml) =>
        new(id, (PolicyResource)Assert.Single(ManifestParser.Parse(yaml, "p.yaml")));

    private static string Cnp(string ns, string spec) =>
        $"apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: p, namespace: {ns}}}\nspec:\n{spec}";

    private static string Ccnp(string spec) =>
        $"apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {{name: c}}\nspec:\n{spec}";

    private static EndpointPolicy Compile(IdentityInfo subject, params CompiledPolicySource[] policies) =>
        PolicyCompiler.Compile(subject, [], PolicyInputs.FromIdentities(All), policies);

    // Port 0 = every port of the protocol; Proto Any (an L3-only rule) always spans every port.
    private static PolicyKey In(uint id, ushort port = 0, L4Proto proto = L4Proto.Any) =>
        new(id, Direction.Ingress, proto, port, port == 0 ? PolicyKey.MaxPort : port);

    private static PolicyKey Out(uint id, ushort port = 0, L4Proto proto = L4Proto.Any) =>
        new(id, Direction.Egress, proto, port, port == 0 ? PolicyKey.MaxPort : port);

    [Fact]
    public void Empty_fromEndpoints_selector_selects_only_the_policy_namespace()
    {
        var p = Policy(1, Cnp("shop", """
              endpointSelector: {matchLabels: {app: web}}
              ingress:
              - fromEndpoints: [{}]
            """));

        var result = Compile(ShopWeb, p);

        Assert.True(result.IngressEnforced);
        Assert.False(result.EgressEnforced);
        Assert.Equal([In(ShopWeb.Id), In(ShopFront.Id)], result.Entries.Keys);
        Assert.All(result.Entries.Values, e => Assert.Equal(new PolicyEntry(1, false), e));
    }

    [Fact]
    public void Peer_selector_naming_the_namespace_reaches_other_namespaces()
    {
        var p = Policy(1, Cnp("shop", """
              endpointSelector: {}
              ingress:
              - fromEndpoints:
                - matchLabels: {"k8s:io.kubernetes.pod.namespace": ops, app: front}
                - matchExpressions: [{key: io.kubernetes.pod.namespace, operator: In, values: [ops]}, {key: app, operator: NotIn, values: [front]}]
            """));

        Assert.Equal([In(OpsFront.Id), In(OpsMonitor.Id)], Compile(ShopWeb, p).Entries.Keys);
    }

    [Fact]
    public void Peer_selector_on_namespace_labels_is_not_confined_to_the_policy_namespace()
    {
        var p = Policy(1, Cnp("shop", """
              endpointSelector: {}
              ingress:
              - fromEndpoints: [{matchLabels: {io.cilium.k8s.namespace.labels.team: sre}}]
            """));

        Assert.Equal([In(OpsFront.Id), In(OpsMonitor.Id)], Compile(ShopWeb, p).Entries.Keys);
    }

    [Fact]
    public void Namespaced_policy_does_not_select_endpoints_of_other_namespaces()
    {
        var p = Policy(1, Cnp("shop", """
              endpointSelector: {matchLabels: {app: front}}
              ingress: [{}]
            """));

        Assert.True(Compile(ShopFront, p).IngressEnforced);
        var other = Compile(OpsFront, p);
        Assert.False(other.IngressEnforced);
        Assert.Empty(other.Entries);
    }

    [Fact]
    public void Namespace_match_in_endpointSelector_cannot_escape_the_policy_namespace()
    {
        var p = Policy(1, Cnp("shop", """
              endpointSelector: {matchLabels: {"k8s:io.kubernetes.pod.namespace": ops}}
              ingress: [{}]
            """));

        Assert.False(Compile(OpsFront, p).IngressEnforced);
        Assert.True(Compile(ShopFront, p).IngressEnforced);
    }

    [Fact]
    public void Clusterwide_policy_selects_and_allows_across_namespaces_but_only_pods()
    {
        var p = Policy(7, Ccnp("""
              endpointSelector: {matchLabels: {app: front}}
              egress:
              - toEndpoints: [{}]
            """));

        var shop = Compile(ShopFront, p);
        var ops = Compile(OpsFront, p);

        Assert.True(shop.EgressEnforced);
        Assert.True(ops.EgressEnforced);
        // Every pod identity, in both namespaces; never the reserved world identity.
        Assert.Equal([Out(ShopWeb.Id), Out(ShopFront.Id), Out(OpsFront.Id), Out(OpsMonitor.Id)],
            shop.Entries.Keys.OrderBy(k => k.Identity));
        Assert.Equal(shop.Entries.Keys, ops.Entries.Keys);
    }

    [Fact]
    public void ToPorts_without_fromEndpoints_allows_any_peer()
    {
        var p = Policy(1, Cnp("shop", """
              endpointSelector: {}
              ingress:
              - toPorts: [{ports: [{port: "80", protocol: TCP}]}]
            """));

        Assert.Equal([In(0, 80, L4Proto.Tcp)], Compile(ShopWeb, p).Entries.Keys);
    }

    [Fact]
    public void Protocol_ANY_expands_to_tcp_udp_and_sctp()
    {
        var p = Policy(1, Cnp("shop", """
              endpointSelector: {}
              ingress:
              - fromEndpoints: [{matchLabels: {app: front}}]
                toPorts: [{ports: [{port: "53"}, {port: "0", protocol: TCP}]}]
            """));

        Assert.Equal(
            [In(ShopFront.Id, 0, L4Proto.Tcp), In(ShopFront.Id, 53, L4Proto.Tcp), In(ShopFront.Id, 53, L4Proto.Udp), In(ShopFront.Id, 53, L4Proto.Sctp)],
            Compile(ShopWeb, p).Entries.Keys);
    }

    [Fact]
    public void FromEndpoints_without_toPorts_allows_every_port()
    {
        var p = Policy(1, Cnp("shop", """
              endpointSelector: {}
              egress:
              - toEndpoints: [{matchLabels: {app: web}}]
            """));

        var result = Compile(ShopFront, p);
        Assert.True(result.EgressEnforced);
        Assert.False(result.IngressEnforced);
        Assert.Equal([Out(ShopWeb.Id, 0, L4Proto.Any)], result.Entries.Keys);
    }

    [Fact]
    public void Empty_ingress_rule_enforces_default_deny_and_allows_nothing()
    {
        var p = Policy(1, Cnp("shop", """
              endpointSelector: {}
              ingress: [{}]
            """));

        var result = Compile(ShopWeb, p);
        Assert.True(result.IngressEnforced);
        Assert.Empty(result.Entries);
    }

    [Fact]
    public void Empty_ingress_list_does_not_enforce_ingress_as_in_cilium()
    {
        var p = Policy(1, Cnp("shop", """
              endpointSelector: {}
              ingress: []
              egress: [{}]
            """));

        var result = Compile(ShopWeb, p);
        Assert.False(result.IngressEnforced);
        Assert.True(result.EgressEnforced);
    }

    [Fact]
    public void Empty_fromEndpoints_list_selects_no_peer()
    {
        var p = Policy(1, Cnp("shop", """
              endpointSelector: {}
              ingress:
              - fromEndpoints: []
                toPorts: [{ports: [{port: "80"}]}]
            """));

        var result = Compile(ShopWeb, p);
        Assert.True(result.IngressEnforced);
        Assert.Empty(result.Entries);
    }

    [Fact]
    public void Endpoint_not_selected_by_any_rule_is_unenforced()
    {
        var p = Policy(1, Cnp("shop", """
              endpointSelector: {matchLabels: {app: web}}
              ingress: [{fromEndpoints: [{}]}]
              egress: [{toEndpoints: [{}]}]
            """));

        var result = Compile(ShopFront, p);
        Assert.False(result.IngressEnforced);
        Assert.False(result.EgressEnforced);
        Assert.Empty(result.Entries);
    }

    [Fact]
    public void Multiple_policies_add_up_and_the_lowest_policy_id_owns_shared_entries()
    {
        var a = Policy(10, Cnp("shop", """
              endpointSelector: {}
              ingress: [{fromEndpoints: [{matchLabels: {app: front}}]}]
            """));
        var b = Policy(20, Ccnp("""
              endpointSelector: {matchLabels: {app: web}}
              ingress:
              - fromEndpoints: [{matchLabels: {app: front}}]
              - fromEndpoints: [{matchLabels: {app: monitor}}]
              egress: [{toPorts: [{ports: [{port: "443", protocol: TCP}]}]}]
            """));

        var ab = Compile(ShopWeb, a, b);
        Assert.True(ab.IngressEnforced);
        Assert.True(ab.EgressEnforced);
        Assert.Equal(new PolicyEntry(10, false), ab.Entries[In(ShopFront.Id)]);
        Assert.Equal(new PolicyEntry(20, false), ab.Entries[In(OpsFront.Id)]);
        Assert.Equal(new PolicyEntry(20, false), ab.Entries[In(OpsMonitor.Id)]);
        Assert.Equal(new PolicyEntry(20, false), ab.Entries[Out(0, 443, L4Proto.Tcp)]);
        Assert.Equal(4, ab.Entries.Count);

        var ba = Compile(ShopWeb, b, a);
        Assert.Equal(ab.Entries.ToArray(), ba.Entries.ToArray());
    }

    [Fact]
    public void Result_does_not_depend_on_the_order_of_identities()
    {
        var p = Policy(1, Ccnp("""
              endpointSelector: {}
              ingress: [{fromEndpoints: [{}], toPorts: [{ports: [{port: "80"}]}]}]
            """));

        var forward = PolicyCompiler.Compile(ShopWeb, [], PolicyInputs.FromIdentities(All), [p]);
        var backward = PolicyCompiler.Compile(ShopWeb, [], PolicyInputs.FromIdentities(All.Reverse().ToArray()), [p]);

        Assert.Equal(forward.Entries.ToArray(), backward.Entries.ToArray());
        Assert.Equal(forward.Entries.Keys.Order(), forward.Entries.Keys);
    }
}
