namespace Trellis.Policy.Tests;

public class ManifestParserTests
{
    private const string File = "lab.yaml";

    private static IReadOnlyList<Resource> Parse(string yaml) => ManifestParser.Parse(yaml, File);

    private static ManifestException Fails(string yaml) => Assert.Throws<ManifestException>(() => Parse(yaml));

    private static void AssertError(ManifestException e, int line, int column, string field, string containing)
    {
        Assert.Equal(File, e.File);
        Assert.Equal((line, column, field), (e.Line, e.Column, e.Field));
        Assert.Contains(containing, e.Problem);
        Assert.StartsWith(field.Length == 0 ? $"{File}:{line}:{column}: " : $"{File}:{line}:{column}: {field}: ", e.Message);
    }

    private const string Lab = """
        apiVersion: v1
        kind: Namespace
        metadata:
          name: shop
          labels:
            team: blue
        ---
        # an empty document is skipped
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: web
          namespace: shop
          labels:
            app: web
          annotations:
            note: ignored
        spec:
          restartPolicy: Never
          containers:
          - name: server
            image: ignored:latest
            command: ["python3", "-m", "http.server"]
            args: ["8080"]
            ports:
            - containerPort: 8080
            - name: dns
              containerPort: 53
              protocol: UDP
        ---
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata:
          name: allow-frontend
          namespace: shop
        spec:
          description: frontend may call web
          endpointSelector:
            matchLabels:
              app: web
          ingress:
          - fromEndpoints:
            - matchLabels:
                k8s:role: frontend
              matchExpressions:
              - key: any:env
                operator: In
                values: [prod, staging]
            toPorts:
            - ports:
              - port: "8080"
                protocol: TCP
              - port: 53
          egress:
          - toEndpoints:
            - {}
        ---
        apiVersion: cilium.io/v2
        kind: CiliumClusterwideNetworkPolicy
        metadata:
          name: lock-down
        specs:
        - endpointSelector: {}
          ingress:
          - {}
        - endpointSelector:
            matchExpressions:
            - key: app
              operator: Exists
          egress: []
        """;

    [Fact]
    public void Multi_document_lab_parses_every_kind_and_skips_empty_documents()
    {
        var resources = Parse(Lab);

        Assert.Collection(resources,
            r => Assert.IsType<NamespaceResource>(r),
            r => Assert.IsType<PodResource>(r),
            r => Assert.IsType<PolicyResource>(r),
            r => Assert.IsType<PolicyResource>(r));
    }

    [Fact]
    public void Namespace_has_name_and_labels()
    {
        var ns = (NamespaceResource)Parse(Lab)[0];
        Assert.Equal(("Namespace", "shop", (string?)null), (ns.Kind, ns.Name, ns.Namespace));
        Assert.Equal("team=blue", ns.Labels.ToString());
        Assert.Equal(new SourceLocation(File, 1, 1), ns.Location);
    }

    [Fact]
    public void Pod_joins_command_and_args_and_defaults_port_protocol_to_tcp()
    {
        var pod = (PodResource)Parse(Lab)[1];
        Assert.Equal(("web", "shop"), (pod.Name, pod.Namespace));
        Assert.Equal("app=web", pod.Labels.ToString());
        var c = Assert.Single(pod.Containers);
        Assert.Equal("server", c.Name);
        Assert.Equal(["python3", "-m", "http.server", "8080"], c.Command);
        Assert.Equal([new ContainerPort(null, 8080, L4Proto.Tcp), new ContainerPort("dns", 53, L4Proto.Udp)], c.Ports);
        Assert.Equal(10, pod.Location.Line);
    }

    [Fact]
    public void Pod_namespace_defaults_to_default()
    {
        var pod = (PodResource)Assert.Single(Parse("""
            apiVersion: v1
            kind: Pod
            metadata: {name: p}
            spec:
              containers: [{name: c, command: [sleep, "1"]}]
            """));
        Assert.Equal("default", pod.Namespace);
    }

    [Fact]
    public void CiliumNetworkPolicy_rule_has_selectors_ports_and_stripped_source_prefixes()
    {
        var policy = (PolicyResource)Parse(Lab)[2];
        Assert.Equal(("CiliumNetworkPolicy", "allow-frontend", "shop"), (policy.Kind, policy.Name, policy.Namespace));
        var rule = Assert.Single(policy.Rules);
        Assert.Equal("frontend may call web", rule.Description);
        Assert.Equal("app=web", rule.EndpointSelector.ToString());
        Assert.Equal(new SourceLocation(File, 38, 3), rule.Location);

        var ingress = Assert.Single(rule.Ingress);
        var from = Assert.Single(ingress.FromEndpoints!);
        Assert.Equal("role=frontend", from.MatchLabels.ToString());
        var expr = Assert.Single(from.MatchExpressions);
        Assert.Equal(("env", SelectorOperator.In), (expr.Key, expr.Operator));
        Assert.Equal(["prod", "staging"], expr.Values);
        Assert.Equal([new PortProtocol(8080, L4Proto.Tcp), new PortProtocol(53, L4Proto.Any)], Assert.Single(ingress.ToPorts).Ports);

        var egress = Assert.Single(rule.Egress);
        Assert.True(Assert.Single(egress.ToEndpoints!).IsEmpty);
        Assert.Empty(egress.ToPorts);
    }

    [Fact]
    public void Clusterwide_policy_has_no_namespace_and_accepts_specs()
    {
        var policy = (PolicyResource)Parse(Lab)[3];
        Assert.True(policy.IsClusterwide);
        Assert.Equal("CiliumClusterwideNetworkPolicy", policy.Kind);
        Assert.Equal(2, policy.Rules.Count);
        var deny = Assert.Single(policy.Rules[0].Ingress);
        Assert.Null(deny.FromEndpoints);
        Assert.Empty(deny.ToPorts);
        Assert.Empty(policy.Rules[1].Egress);
    }

    [Fact]
    public void Empty_text_gives_no_resources()
    {
        Assert.Empty(Parse(""));
        Assert.Empty(Parse("---\n# nothing\n---\n"));
    }

    private const string PolicyHead = """
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata:
          name: p
        spec:
          endpointSelector: {}

        """;

    [Fact]
    public void Unknown_field_is_an_error_naming_the_field()
    {
        var e = Fails(PolicyHead + """
              ingress:
              - fromEndpoints: [{}]
                toPort: []
            """);
        AssertError(e, 9, 5, "spec.ingress[0].toPort", "unknown field \"toPort\"");
        Assert.Contains("did you mean \"toPorts\"", e.Problem);
    }

    [Fact]
    public void FromRequires_is_refused_as_not_supported_yet()
    {
        var e = Fails(PolicyHead + """
              ingress:
              - fromRequires: [{}]
            """);
        AssertError(e, 8, 5, "spec.ingress[0].fromRequires", "fromRequires is not supported yet");
    }

    [Theory]
    [InlineData("toFQDNs: [{matchName: example.com}]", "spec.egress[0].toFQDNs")]
    [InlineData("toGroups: []", "spec.egress[0].toGroups")]
    [InlineData("toServices: []", "spec.egress[0].toServices")]
    public void Unsupported_egress_peers_are_refused(string field, string path)
    {
        var e = Fails(PolicyHead + "  egress:\n  - " + field + "\n");
        AssertError(e, 8, 5, path, "is not supported yet");
    }

    [Fact]
    public void L7_rules_are_refused_without_a_proxy_and_endPort_below_port_is_an_error()
    {
        var l7 = Assert.Throws<ManifestException>(() => ManifestParser.Parse(PolicyHead + """
              ingress:
              - toPorts:
                - ports: [{port: "80"}]
                  rules: {http: [{method: GET}]}
            """, File, new ManifestParserOptions { AllowL7Rules = false }));
        AssertError(l7, 10, 7, "spec.ingress[0].toPorts[0].rules", "rules needs the node's L7 proxy");

        var endPort = Fails(PolicyHead + """
              ingress:
              - toPorts:
                - ports: [{port: "80", endPort: 70}]
            """);
        AssertError(endPort, 9, 37, "spec.ingress[0].toPorts[0].ports[0].endPort", "endPort 70 is below port 80");
    }

    [Fact]
    public void Lowercase_protocol_is_an_error_at_the_protocol_value()
    {
        var e = Fails(PolicyHead + """
              ingress:
              - toPorts:
                - ports:
                  - port: "80"
                    protocol: TCP
                  - port: "81"
                    protocol: tcp
            """);
        AssertError(e, 13, 19, "spec.ingress[0].toPorts[0].ports[1].protocol", "invalid protocol \"tcp\"");
    }

    [Theory]
    [InlineData("\"70000\"", "out of range")]
    [InlineData("\"-1\"", "invalid port")]
    [InlineData("http_x", "invalid port")]
    [InlineData("a-very-long-port-name", "invalid port")]
    public void Bad_port_is_an_error_at_the_port_value(string port, string problem)
    {
        var e = Fails(PolicyHead + $"""
              ingress:
              - toPorts:
                - ports:
                  - port: {port}
            """);
        AssertError(e, 10, 15, "spec.ingress[0].toPorts[0].ports[0].port", problem);
    }

    [Fact]
    public void Port_zero_and_missing_port_mean_any_port()
    {
        var policy = (PolicyResource)Assert.Single(Parse(PolicyHead + """
              ingress:
              - toPorts:
                - ports: [{port: "0", protocol: TCP}, {protocol: UDP}]
            """));
        Assert.Equal([new PortProtocol(0, L4Proto.Tcp), new PortProtocol(0, L4Proto.Udp)],
            policy.Rules[0].Ingress[0].ToPorts[0].Ports);
    }

    [Fact]
    public void Missing_endpointSelector_is_an_error_at_the_rule()
    {
        var e = Fails("""
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata:
              name: p
            specs:
            - endpointSelector: {}
            - ingress: [{}]
            """);
        AssertError(e, 7, 3, "specs[1].endpointSelector", "endpointSelector is required");
    }

    [Fact]
    public void Spec_and_specs_together_are_an_error()
    {
        var e = Fails(PolicyHead + "specs: []\n");
        AssertError(e, 7, 1, "specs", "not both");
    }

    [Fact]
    public void Policy_without_rules_is_an_error()
    {
        var e = Fails("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p}\n");
        AssertError(e, 1, 1, "spec", "no rule");
    }

    [Fact]
    public void Yaml_syntax_error_reports_its_line()
    {
        var e = Fails("""
            apiVersion: v1
            kind: Namespace
            metadata:
              name: [unclosed
            """);
        Assert.Equal(File, e.File);
        Assert.Equal("", e.Field);
        Assert.True(e.Line >= 4, $"line {e.Line}");
        Assert.Contains("invalid YAML", e.Message);
    }

    [Fact]
    public void Duplicate_yaml_key_is_an_error()
    {
        var e = Fails("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  name: b\n");
        AssertError(e, 5, 3, "", "key \"name\" appears twice");
    }

    [Fact]
    public void Tab_indentation_is_reported_at_the_tab()
    {
        var e = Fails("apiVersion: v1\nkind: Namespace\nmetadata:\n\tname: a\n");
        AssertError(e, 4, 1, "", "tab");
    }

    [Theory]
    [InlineData("Web")]
    [InlineData("web_1")]
    [InlineData("-web")]
    public void Names_must_be_dns_labels(string name)
    {
        var e = Fails($"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n");
        AssertError(e, 4, 9, "metadata.name", "not a valid name");
    }

    [Fact]
    public void Name_longer_than_63_characters_is_refused()
    {
        var e = Fails($"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {new string('a', 64)}\n");
        AssertError(e, 4, 9, "metadata.name", "longer than 63");
    }

    [Fact]
    public void Unsupported_kind_is_an_error_naming_kind_and_apiVersion()
    {
        var e = Fails("""
            apiVersion: v1
            kind: Namespace
            metadata: {name: ok}
            ---
            apiVersion: networking.k8s.io/v1beta1
            kind: NetworkPolicy
            metadata: {name: np}
            """);
        AssertError(e, 6, 7, "kind", "kind NetworkPolicy (apiVersion networking.k8s.io/v1beta1) is not supported yet");
    }

    [Fact]
    public void ConfigMap_kind_is_not_supported_yet()
    {
        var e = Fails("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: s}\n");
        AssertError(e, 2, 7, "kind", "kind ConfigMap (apiVersion v1) is not supported yet");
    }

    [Fact]
    public void Missing_apiVersion_kind_or_name_is_an_error()
    {
        AssertError(Fails("kind: Namespace\nmetadata: {name: a}\n"), 1, 1, "apiVersion", "apiVersion is required");
        AssertError(Fails("apiVersion: v1\nmetadata: {name: a}\n"), 1, 1, "kind", "kind is required");
        AssertError(Fails("apiVersion: v1\nkind: Namespace\nmetadata:\n  labels: {a: b}\n"), 4, 3, "metadata.name", "metadata.name is required");
        AssertError(Fails("apiVersion: v1\nkind: Namespace\n"), 1, 1, "metadata.name", "metadata.name is required");
    }

    [Fact]
    public void Reserved_label_in_selector_is_refused()
    {
        var e = Fails(PolicyHead + """
              ingress:
              - fromEndpoints:
                - matchLabels:
                    reserved:host: ""
            """);
        AssertError(e, 10, 9, "spec.ingress[0].fromEndpoints[0].matchLabels.reserved:host",
            "reserved labels are not supported yet; use fromEntities (issue 3)");
    }

    [Fact]
    public void Selector_operators_are_validated()
    {
        var noValues = Fails(PolicyHead.Replace("endpointSelector: {}", """
            endpointSelector:
                matchExpressions:
                - {key: app, operator: In}
            """));
        AssertError(noValues, 8, 7, "spec.endpointSelector.matchExpressions[0].values", "needs a non-empty values list");

        var extraValues = Fails(PolicyHead.Replace("endpointSelector: {}", """
            endpointSelector:
                matchExpressions:
                - {key: app, operator: Exists, values: [x]}
            """));
        AssertError(extraValues, 8, 44, "spec.endpointSelector.matchExpressions[0].values", "takes no values");

        var badOp = Fails(PolicyHead.Replace("endpointSelector: {}", """
            endpointSelector:
                matchExpressions:
                - {key: app, operator: in, values: [x]}
            """));
        AssertError(badOp, 8, 28, "spec.endpointSelector.matchExpressions[0].operator", "invalid operator \"in\"");
    }

    [Fact]
    public void Pod_needs_a_container_with_a_command()
    {
        var e = Fails("""
            apiVersion: v1
            kind: Pod
            metadata: {name: p}
            spec:
              containers:
              - name: c
                image: nginx
            """);
        AssertError(e, 6, 3, "spec.containers", "no container has a command");
    }

    [Fact]
    public void Unknown_pod_spec_field_is_an_error()
    {
        var e = Fails("""
            apiVersion: v1
            kind: Pod
            metadata: {name: p}
            spec:
              hostNetwork: true
              containers: [{name: c, command: [sleep]}]
            """);
        AssertError(e, 5, 3, "spec.hostNetwork", "unknown field \"hostNetwork\"");
    }

    [Fact]
    public void One_bad_document_rejects_the_whole_text()
    {
        var e = Fails("""
            apiVersion: v1
            kind: Namespace
            metadata: {name: good}
            ---
            apiVersion: v1
            kind: Namespace
            metadata: {name: Bad}
            """);
        Assert.Equal(7, e.Line);
    }

    [Fact]
    public void Same_resource_twice_is_an_error()
    {
        var e = Fails("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n");
        AssertError(e, 5, 1, "metadata.name", "defined twice (first at lab.yaml:1:1)");
    }
}
