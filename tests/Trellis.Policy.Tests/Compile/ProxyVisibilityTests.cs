namespace Trellis.Policy.Tests;

/// <summary>Cilium's policy.cilium.io/proxy-visibility annotation: parsing, and what it adds to a compiled policy.</summary>
public class ProxyVisibilityTests
{
    private static PolicyKey Key(uint id, Direction d, L4Proto proto, ushort port, ushort end) => new(id, d, proto, port, end);

    [Fact]
    public void Parses_Cilium_annotation_values()
    {
        Assert.Equal(
            [new VisibilityPort(Direction.Ingress, 80), new VisibilityPort(Direction.Egress, 8080)],
            ProxyVisibility.Parse("<Ingress/80/TCP/HTTP>, <Egress/8080/TCP/HTTP>,<Ingress/80/TCP/HTTP>"));
        Assert.Empty(ProxyVisibility.Parse(""));
    }

    [Theory]
    [InlineData("Ingress/80/TCP/HTTP", "is not of the form")]
    [InlineData("<Ingress/80/TCP>", "has 3 fields")]
    [InlineData("<ingress/80/TCP/HTTP>", "direction \"ingress\" must be Ingress or Egress")]
    [InlineData("<Ingress/0/TCP/HTTP>", "port \"0\" must be a number from 1 to 65535")]
    [InlineData("<Ingress/http/TCP/HTTP>", "port \"http\"")]
    [InlineData("<Egress/53/UDP/DNS>", "protocol \"UDP\" is not supported")]
    [InlineData("<Egress/9092/TCP/Kafka>", "L7 protocol \"Kafka\" is not supported yet")]
    public void Bad_values_name_the_item_and_the_problem(string value, string message)
    {
        var e = Assert.Throws<FormatException>(() => ProxyVisibility.Parse(value));
        Assert.Contains(message, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void An_unenforced_direction_gets_an_any_peer_key_that_allows_every_request()
    {
        var policy = new EndpointPolicy(false, false, new Dictionary<PolicyKey, PolicyEntry>());
        var v = ProxyVisibility.Apply(policy, [new VisibilityPort(Direction.Ingress, 8080)]);
        var key = Key(0, Direction.Ingress, L4Proto.Tcp, 8080, 8080);
        Assert.Equal([key], v.Entries.Keys);
        Assert.Equal([HttpRule.AllowAll], v.HttpRules[key]);
        Assert.Contains(key, v.VisibilityOnly);
        Assert.False(v.IngressEnforced); // visibility never enforces
        Assert.Equal([HttpRule.AllowAll], v.HttpRulesFor(Direction.Ingress, 1234, L4Proto.Tcp, 8080));
        Assert.Null(v.HttpRulesFor(Direction.Ingress, 1234, L4Proto.Tcp, 8081));
    }

    [Fact]
    public void An_enforced_direction_gets_a_port_key_per_allowed_peer_and_denies_stay()
    {
        var entries = new Dictionary<PolicyKey, PolicyEntry>
        {
            [Key(300, Direction.Ingress, L4Proto.Any, 0, 65535)] = new(1, false),     // L3 allow: covers 8080
            [Key(301, Direction.Ingress, L4Proto.Tcp, 8000, 8999)] = new(2, false),   // a range covering 8080
            [Key(302, Direction.Ingress, L4Proto.Tcp, 9000, 9000)] = new(3, false),   // does not cover 8080
            [Key(303, Direction.Ingress, L4Proto.Tcp, 8080, 8080)] = new(4, true),    // deny: untouched
        };
        var v = ProxyVisibility.Apply(new EndpointPolicy(true, false, entries), [new VisibilityPort(Direction.Ingress, 8080)]);

        Assert.Equal(
            [Key(300, Direction.Ingress, L4Proto.Tcp, 8080, 8080), Key(301, Direction.Ingress, L4Proto.Tcp, 8080, 8080)],
            v.VisibilityOnly.Order().ToArray());
        Assert.Equal(1u, v.Entries[Key(300, Direction.Ingress, L4Proto.Tcp, 8080, 8080)].PolicyId); // keeps the allowing policy
        Assert.True(v.Entries[Key(303, Direction.Ingress, L4Proto.Tcp, 8080, 8080)].Deny);
        Assert.False(v.HttpRules.ContainsKey(Key(303, Direction.Ingress, L4Proto.Tcp, 8080, 8080)));
        Assert.DoesNotContain(Key(0, Direction.Ingress, L4Proto.Tcp, 8080, 8080), v.Entries.Keys); // no new peer allowed
        // Every allowed peer is seen (allow-all), even though a broader L4-only key covers it too.
        Assert.Equal([HttpRule.AllowAll], v.HttpRulesFor(Direction.Ingress, 300, L4Proto.Tcp, 8080));
        Assert.Equal([HttpRule.AllowAll], v.HttpRulesFor(Direction.Ingress, 301, L4Proto.Tcp, 8080));
        Assert.Null(v.HttpRulesFor(Direction.Ingress, 303, L4Proto.Tcp, 8080));
    }

    [Fact]
    public void A_port_with_http_rules_keeps_them_rather_than_being_opened_by_visibility()
    {
        var key = Key(300, Direction.Ingress, L4Proto.Tcp, 80, 80);
        var rule = new HttpRule("GET", null, null, []);
        var policy = new EndpointPolicy(true, false, new Dictionary<PolicyKey, PolicyEntry> { [key] = new(1, false) })
        {
            HttpRules = new Dictionary<PolicyKey, IReadOnlyList<HttpRule>> { [key] = [rule] },
        };
        var v = ProxyVisibility.Apply(policy, [new VisibilityPort(Direction.Ingress, 80)]);
        Assert.Empty(v.VisibilityOnly);
        Assert.Equal([rule], v.HttpRulesFor(Direction.Ingress, 300, L4Proto.Tcp, 80));
    }

    [Fact]
    public void A_pod_annotation_is_validated_with_file_line_and_field()
    {
        const string pod = """
            apiVersion: v1
            kind: Pod
            metadata:
              name: web
              annotations:
                policy.cilium.io/proxy-visibility: "<Ingress/80/UDP/HTTP>"
            spec:
              containers: [{name: c, command: [sleep, "1"]}]
            """;
        var e = Assert.Throws<ManifestException>(() => ManifestParser.Parse(pod, "lab.yaml"));
        Assert.Equal((6, 40), (e.Line, e.Column));
        Assert.Equal("metadata.annotations.policy.cilium.io/proxy-visibility", e.Field);
        Assert.Contains("protocol \"UDP\" is not supported", e.Message, StringComparison.Ordinal);

        var ok = (PodResource)Assert.Single(ManifestParser.Parse(pod.Replace("UDP", "TCP", StringComparison.Ordinal), "lab.yaml"));
        Assert.Equal("<Ingress/80/TCP/HTTP>", ok.ProxyVisibility);
    }
}
