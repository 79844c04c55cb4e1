namespace Trellis.Policy.Tests;

public class L7RulesParserTests
{
    private const string File = "l7.yaml";
    private static readonly ManifestParserOptions L7 = new() { AllowL7Rules = true };

    // Line 6 is the first line of the appended rules.
    private const string Head = """
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: p, namespace: shop}
        spec:
          endpointSelector: {matchLabels: {app: web}}

        """;

    private static PolicyResource Parse(string rules, out IReadOnlyList<ManifestWarning> warnings) =>
        (PolicyResource)Assert.Single(ManifestParser.Parse(Head + rules, File, L7, out warnings));

    private static PolicyResource Parse(string rules) => Parse(rules, out _);

    private static ManifestException Fails(string rules, ManifestParserOptions? options = null) =>
        Assert.Throws<ManifestException>(() => ManifestParser.Parse(Head + rules, File, options ?? L7, out _));

    private static void AssertError(ManifestException e, int line, int column, string field, string containing)
    {
        Assert.Equal((File, line, column, field), (e.File, e.Line, e.Column, e.Field));
        Assert.Contains(containing, e.Problem);
        Assert.StartsWith($"{File}:{line}:{column}: {field}: ", e.Message);
    }

    private static string Ingress(string http, string port = "{port: \"80\", protocol: TCP}") => $"""
          ingress:
          - toPorts:
            - ports: [{port}]
              rules:
                http:
        {"  " + http}
        """;

    [Fact]
    public void L7_rules_are_accepted_by_default_and_refused_without_a_proxy()
    {
        const string rules = """
              ingress:
              - toPorts:
                - ports: [{port: "80", protocol: TCP}]
                  rules: {http: [{method: GET}]}
            """;
        Assert.Single(ManifestParser.Parse(Head + rules, File));
        AssertError(Fails(rules, new ManifestParserOptions { AllowL7Rules = false }), 9, 7, "spec.ingress[0].toPorts[0].rules", "needs the node's L7 proxy");
    }

    [Fact]
    public void Every_http_field_is_parsed_in_ingress_and_egress()
    {
        var p = Parse("""
              ingress:
              - fromEndpoints: [{matchLabels: {app: front}}]
                toPorts:
                - ports: [{port: "80", protocol: TCP}, {port: http, protocol: TCP}]
                  rules:
                    http:
                    - method: GET|HEAD
                      path: /public/.*
                      host: "shop\\.example\\.com(:80)?"
                      headers: ["X-Trace", "X-Env: prod"]
                      headerMatches:
                      - {name: X-Token, value: abc}
                      - {name: x-present}
                    - {}
              egress:
              - toPorts:
                - ports: [{port: "8080", protocol: TCP}]
                  rules: {http: [{path: /api}]}
            """);
        var rule = Assert.Single(p.Rules);
        var ingressPort = Assert.Single(Assert.Single(rule.Ingress).ToPorts);
        Assert.Equal(2, ingressPort.Ports.Count);
        var http = ingressPort.Rules!.Http;
        Assert.Equal(2, http.Count);
        Assert.Equal(new HttpRule("GET|HEAD", "/public/.*", "shop\\.example\\.com(:80)?",
            [new("X-Trace", null), new("X-Env", "prod"), new("X-Token", "abc"), new("x-present", null)]), http[0]);
        Assert.True(http[1].IsAllowAll);
        Assert.Equal(new HttpRule(null, "/api", null, []), Assert.Single(Assert.Single(Assert.Single(rule.Egress).ToPorts).Rules!.Http));
    }

    [Fact]
    public void Clusterwide_policies_take_http_rules_too()
    {
        var yaml = """
            apiVersion: cilium.io/v2
            kind: CiliumClusterwideNetworkPolicy
            metadata: {name: c}
            spec:
              endpointSelector: {}
              egress:
              - toPorts:
                - ports: [{port: "80", protocol: TCP}]
                  rules: {http: [{method: POST}]}
            """;
        var p = (PolicyResource)Assert.Single(ManifestParser.Parse(yaml, File, L7, out _));
        Assert.Equal("POST", Assert.Single(Assert.Single(Assert.Single(Assert.Single(p.Rules).Egress).ToPorts).Rules!.Http).Method);
    }

    [Fact]
    public void Empty_rules_leave_the_port_L4_only_with_a_warning()
    {
        var p = Parse("""
              ingress:
              - toPorts:
                - ports: [{port: "80", protocol: TCP}]
                  rules: {http: []}
            """, out var warnings);
        Assert.Null(Assert.Single(Assert.Single(Assert.Single(p.Rules).Ingress).ToPorts).Rules);
        Assert.Contains(warnings, w => w.Field == "spec.ingress[0].toPorts[0].rules.http");
    }

    [Theory]
    [InlineData("      - {method: GET, mismatch: LOG}", 11, 25, "spec.ingress[0].toPorts[0].rules.http[0].mismatch", "unknown field")]
    [InlineData("      - headerMatches: [{name: X, mismatch: ADD}]", 11, 37, "spec.ingress[0].toPorts[0].rules.http[0].headerMatches[0].mismatch", "mismatch is not supported yet")]
    [InlineData("      - headerMatches: [{name: X, secret: {name: s, namespace: n}}]", 11, 37, "spec.ingress[0].toPorts[0].rules.http[0].headerMatches[0].secret", "secret is not supported yet")]
    [InlineData("      - headerMatches: [{value: v}]", 11, 27, "spec.ingress[0].toPorts[0].rules.http[0].headerMatches[0].name", "is required")]
    [InlineData("      - {method: \"GET(\"}", 11, 20, "spec.ingress[0].toPorts[0].rules.http[0].method", "invalid regular expression \"GET(\"")]
    [InlineData("      - {path: \"/a[\"}", 11, 18, "spec.ingress[0].toPorts[0].rules.http[0].path", "invalid regular expression")]
    [InlineData("      - {host: \"(a)\\\\1\"}", 11, 18, "spec.ingress[0].toPorts[0].rules.http[0].host", "invalid regular expression")]
    [InlineData("      - {headers: [\"X Y: z\"]}", 11, 22, "spec.ingress[0].toPorts[0].rules.http[0].headers[0]", "not a valid HTTP header name")]
    [InlineData("      - {headers: [\"X-Env:\"]}", 11, 22, "spec.ingress[0].toPorts[0].rules.http[0].headers[0]", "has no value after ':'")]
    [InlineData("      - {methd: GET}", 11, 12, "spec.ingress[0].toPorts[0].rules.http[0].methd", "did you mean \"method\"")]
    public void Http_rule_errors_name_the_field(string http, int line, int column, string field, string problem) =>
        AssertError(Fails(Ingress(http)), line, column, field, problem);

    [Theory]
    [InlineData("kafka")]
    [InlineData("dns")]
    [InlineData("l7proto")]
    [InlineData("l7")]
    public void Other_L7_kinds_are_not_supported(string kind)
    {
        var e = Fails($$"""
              ingress:
              - toPorts:
                - ports: [{port: "80", protocol: TCP}]
                  rules: {{{kind}}: []}
            """);
        AssertError(e, 9, 15, $"spec.ingress[0].toPorts[0].rules.{kind}", $"{kind} is not supported yet");
    }

    [Theory]
    [InlineData("{port: \"80\"}", "set protocol: TCP")]
    [InlineData("{port: \"80\", protocol: ANY}", "set protocol: TCP")]
    [InlineData("{port: \"53\", protocol: UDP}", "only apply to TCP (not UDP)")]
    [InlineData("{port: \"0\", protocol: TCP}", "port is 0")]
    public void L7_rules_need_an_explicit_tcp_port(string port, string problem) =>
        AssertError(Fails(Ingress("      - {method: GET}", port)), 8, 15, "spec.ingress[0].toPorts[0].ports[0]", problem);

    [Fact]
    public void Deny_rules_have_no_L7_part()
    {
        var e = Fails("""
              ingressDeny:
              - toPorts:
                - ports: [{port: "80", protocol: TCP}]
                  rules: {http: [{}]}
            """);
        AssertError(e, 9, 7, "spec.ingressDeny[0].toPorts[0].rules", "unknown field \"rules\"");
    }
}
