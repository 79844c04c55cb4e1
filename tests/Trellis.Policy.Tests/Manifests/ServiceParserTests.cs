namespace Trellis.Policy.Tests;

public class ServiceParserTests
{
    private const string File = "svc.yaml";

    // Line 1 is apiVersion; spec: is line 6 and its fields start at line 7, column 3.
    private const string Head = """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
          namespace: shop
        spec:

        """;

    private const string OnePort = "  ports:\n  - port: 80\n";

    private static ServiceResource Parse(string yaml) => Assert.IsType<ServiceResource>(Assert.Single(ManifestParser.Parse(yaml, File)));

    private static ManifestException Fails(string yaml) => Assert.Throws<ManifestException>(() => ManifestParser.Parse(yaml, File));

    private static void AssertError(ManifestException e, int line, int column, string field, string containing)
    {
        Assert.Equal(File, e.File);
        Assert.Equal((line, column, field), (e.Line, e.Column, e.Field));
        Assert.Contains(containing, e.Problem);
        Assert.StartsWith($"{File}:{line}:{column}: {field}: ", e.Message);
    }

    [Fact]
    public void Multi_port_service_parses_with_defaults_and_named_target()
    {
        var svc = Parse("""
            apiVersion: v1
            kind: Service
            metadata:
              name: web
              namespace: shop
              labels: {app: web}
              annotations: {note: ignored}
            spec:
              type: ClusterIP
              selector:
                app: web
                tier: front
              clusterIP: 10.96.0.10
              clusterIPs: [10.96.0.10]
              sessionAffinity: None
              internalTrafficPolicy: Cluster
              externalTrafficPolicy: Cluster
              ipFamilies: [IPv4]
              ipFamilyPolicy: SingleStack
              ports:
              - name: http
                port: 80
                targetPort: 8080
                appProtocol: http
              - name: dns
                port: 53
                targetPort: dns
                protocol: UDP
              - name: https
                port: 443
            """);
        Assert.Equal(("Service", "web", "shop"), (svc.Kind, svc.Name, svc.Namespace));
        Assert.Equal(new SourceLocation(File, 1, 1), svc.Location);
        Assert.Equal("10.96.0.10", svc.ClusterIP);
        Assert.NotNull(svc.Selector);
        Assert.Equal(new Dictionary<string, string> { ["app"] = "web", ["tier"] = "front" }, svc.Selector!.ToDictionary());
        Assert.Equal(
            [
                new ServicePort("http", 80, 8080, null, L4Proto.Tcp),
                new ServicePort("dns", 53, 0, "dns", L4Proto.Udp),
                new ServicePort("https", 443, 443, null, L4Proto.Tcp),
            ],
            svc.Ports);
    }

    [Fact]
    public void Minimal_service_defaults_namespace_and_has_no_selector_or_cluster_ip()
    {
        var svc = Parse("apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec:\n  ports:\n  - port: 5432\n");
        Assert.Equal(("default", null, null), (svc.Namespace, svc.Selector, svc.ClusterIP));
        Assert.Equal([new ServicePort(null, 5432, 5432, null, L4Proto.Tcp)], svc.Ports);
    }

    [Theory]
    [InlineData("  selector: {}\n")]
    [InlineData("  selector:\n")]
    [InlineData("  clusterIP: \"\"\n")]
    public void Empty_selector_or_cluster_ip_means_none(string extra)
    {
        var svc = Parse(Head + extra + OnePort);
        Assert.Null(svc.Selector);
        Assert.Null(svc.ClusterIP);
    }

    [Fact]
    public void Same_port_number_with_different_protocols_is_fine()
    {
        var svc = Parse(Head + "  ports:\n  - {name: a, port: 53}\n  - {name: b, port: 53, protocol: UDP}\n");
        Assert.Equal([L4Proto.Tcp, L4Proto.Udp], svc.Ports.Select(p => p.Protocol));
    }

    [Fact]
    public void Service_and_pod_may_share_a_name_but_two_services_may_not()
    {
        const string pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop}\nspec:\n  containers:\n  - {name: c, command: [true]}\n---\n";
        Assert.Equal(2, ManifestParser.Parse(pod + Head + OnePort, File).Count);
        var e = Fails(Head + OnePort + "---\n" + Head + OnePort);
        AssertError(e, 10, 1, "metadata.name", "Service shop/web is defined twice (first at svc.yaml:1:1)");
    }

    // Each case: extra spec lines after "spec:" (line 7 onwards), then the expected error.
    public static TheoryData<string, int, int, string, string> SpecErrors => new()
    {
        { "  type: Nodeport\n" + OnePort, 7, 9, "spec.type", "invalid service type \"Nodeport\": use ClusterIP or NodePort" },
        { "  type: LoadBalancer\n" + OnePort, 7, 9, "spec.type", "service type LoadBalancer is not supported yet" },
        { "  type: ExternalName\n" + OnePort, 7, 9, "spec.type", "service type ExternalName is not supported yet" },
        { "  type: clusterip\n" + OnePort, 7, 9, "spec.type", "invalid service type \"clusterip\"" },
        { "  clusterIP: None\n" + OnePort, 7, 14, "spec.clusterIP", "headless services are not supported yet" },
        { "  clusterIP: 10.96.1\n" + OnePort, 7, 14, "spec.clusterIP", "\"10.96.1\" is not a valid IPv4 address" },
        { "  clusterIP: 10.96.0.300\n" + OnePort, 7, 14, "spec.clusterIP", "\"10.96.0.300\" is not a valid IPv4 address" },
        { "  clusterIP: 10.96.0.0/12\n" + OnePort, 7, 14, "spec.clusterIP", "is not a valid IPv4 address" },
        { "  clusterIP: fd00::1\n" + OnePort, 7, 14, "spec.clusterIP", "IPv6 is not supported yet" },
        { "  clusterIP: 10.96.0.10\n  clusterIPs: [10.96.0.11]\n" + OnePort, 8, 16, "spec.clusterIPs[0]", "must equal spec.clusterIP \"10.96.0.10\"" },
        { "  clusterIP: 10.96.0.10\n  clusterIPs: [10.96.0.10, 10.96.0.11]\n" + OnePort, 8, 28, "spec.clusterIPs[1]", "dual-stack) is not supported yet" },
        { "  clusterIPs: [10.96.0.10]\n" + OnePort, 7, 16, "spec.clusterIPs[0]", "spec.clusterIP is not set" },
        { "  clusterIPs: [None]\n" + OnePort, 7, 16, "spec.clusterIPs[0]", "headless services are not supported yet" },
        { "  sessionAffinityConfig: {clientIP: {timeoutSeconds: 5}}\n" + OnePort, 7, 26, "spec.sessionAffinityConfig", "needs sessionAffinity: ClientIP" },
        { "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}\n" + OnePort, 8, 54, "spec.sessionAffinityConfig.clientIP.timeoutSeconds", "from 1 to 86400" },
        { "  sessionAffinity: Sticky\n" + OnePort, 7, 20, "spec.sessionAffinity", "invalid sessionAffinity \"Sticky\": use None or ClientIP" },
        { "  internalTrafficPolicy: local\n" + OnePort, 7, 26, "spec.internalTrafficPolicy", "invalid internalTrafficPolicy \"local\": use Cluster or Local" },
        { "  externalTrafficPolicy: Local\n" + OnePort, 7, 26, "spec.externalTrafficPolicy", "externalTrafficPolicy Local needs type NodePort" },
        { "  ipFamilies: [IPv6]\n" + OnePort, 7, 16, "spec.ipFamilies[0]", "IPv6 is not supported yet" },
        { "  ipFamilies: [IPv4, IPv6]\n" + OnePort, 7, 22, "spec.ipFamilies[1]", "dual-stack services are not supported yet" },
        { "  ipFamilyPolicy: RequireDualStack\n" + OnePort, 7, 19, "spec.ipFamilyPolicy", "ipFamilyPolicy RequireDualStack is not supported yet" },
        { "  externalIPs: [1.2.3.4]\n" + OnePort, 7, 3, "spec.externalIPs", "externalIPs is not supported yet" },
        { "  selectr: {app: web}\n" + OnePort, 7, 3, "spec.selectr", "unknown field \"selectr\"; did you mean \"selector\"?" },
        { "  selector: {app: -bad}\n" + OnePort, 7, 19, "spec.selector.app", "label value \"-bad\" is invalid" },
        { "  selector: [app]\n" + OnePort, 7, 13, "spec.selector", "expected a mapping, found a list" },
        { "  type: ClusterIP\n", 7, 3, "spec.ports", "at least one port is required" },
        { "  ports: []\n", 7, 10, "spec.ports", "at least one port is required" },
        { "  ports:\n  - name: http\n", 8, 5, "spec.ports[0].port", "port is required" },
        { "  ports:\n  - port: 0\n", 8, 11, "spec.ports[0].port", "port must be a number from 1 to 65535, found \"0\"" },
        { "  ports:\n  - port: 65536\n", 8, 11, "spec.ports[0].port", "port must be a number from 1 to 65535, found \"65536\"" },
        { "  ports:\n  - port: http\n", 8, 11, "spec.ports[0].port", "port must be a number from 1 to 65535, found \"http\"" },
        { "  ports:\n  - port: 80\n    targetPort: 70000\n", 9, 17, "spec.ports[0].targetPort", "targetPort must be a number from 1 to 65535, found \"70000\"" },
        { "  ports:\n  - port: 80\n    targetPort: 0\n", 9, 17, "spec.ports[0].targetPort", "targetPort must be a number from 1 to 65535, found \"0\"" },
        { "  ports:\n  - port: 80\n    targetPort: Web_Port\n", 9, 17, "spec.ports[0].targetPort", "\"Web_Port\" is not a valid port name" },
        { "  ports:\n  - port: 80\n    targetPort: a-very-long-port-name\n", 9, 17, "spec.ports[0].targetPort", "is not a valid port name" },
        { "  ports:\n  - port: 80\n    protocol: SCTP\n", 9, 15, "spec.ports[0].protocol", "SCTP services are not supported yet" },
        { "  ports:\n  - port: 80\n    protocol: tcp\n", 9, 15, "spec.ports[0].protocol", "invalid protocol \"tcp\": use TCP or UDP (case-sensitive)" },
        { "  ports:\n  - port: 80\n    nodePort: 30080\n", 9, 15, "spec.ports[0].nodePort", "nodePort may only be set when type is NodePort" },
        { "  type: NodePort\n  ports:\n  - port: 80\n    nodePort: 0\n", 10, 15, "spec.ports[0].nodePort", "nodePort must be a number from 1 to 65535" },
        { "  type: NodePort\n  ports:\n  - {name: a, port: 80, nodePort: 30001}\n  - {name: b, port: 81, nodePort: 30001}\n", 10, 35, "spec.ports[1].nodePort", "nodePort 30001/TCP is used twice" },
        { "  ports:\n  - port: 80\n    hostPort: 80\n", 9, 5, "spec.ports[0].hostPort", "unknown field \"hostPort\"" },
        { "  ports:\n  - {name: a, port: 80}\n  - port: 81\n", 9, 5, "spec.ports[1].name", "name is required when a service has more than one port" },
        { "  ports:\n  - {name: a, port: 80}\n  - {name: a, port: 81}\n", 9, 12, "spec.ports[1].name", "port name \"a\" is used twice (first at spec.ports[0])" },
        { "  ports:\n  - {name: HTTP, port: 80}\n", 8, 12, "spec.ports[0].name", "\"HTTP\" is not a valid name" },
        { "  ports:\n  - {name: a, port: 80}\n  - {name: b, port: 80, targetPort: 81}\n", 9, 21, "spec.ports[1].port", "port 80/TCP is used twice (first at spec.ports[0])" },
        { "  ports:\n  - {name: a, port: 53, protocol: UDP}\n  - {name: b, port: 53, protocol: UDP}\n", 9, 21, "spec.ports[1].port", "port 53/UDP is used twice" },
        { "  ports:\n  - port: 80\n    appProtocol: [http]\n", 9, 18, "spec.ports[0].appProtocol", "expected a string, found a list" },
    };

    [Theory]
    [MemberData(nameof(SpecErrors))]
    public void Spec_errors_point_at_the_field(string spec, int line, int column, string field, string containing) =>
        AssertError(Fails(Head + spec), line, column, field, containing);

    [Fact]
    public void Metadata_errors_point_at_the_field()
    {
        AssertError(Fails("apiVersion: v1\nkind: Service\nmetadata: {name: Web}\nspec:\n" + OnePort),
            3, 18, "metadata.name", "\"Web\" is not a valid name");
        AssertError(Fails("apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: a.b}\nspec:\n" + OnePort),
            3, 34, "metadata.namespace", "\"a.b\" is not a valid name");
        AssertError(Fails("apiVersion: v1\nkind: Service\nmetadata: {name: web}\n"), 1, 1, "spec", "spec is required");
        AssertError(Fails("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n" + OnePort + "status: {}\n"),
            7, 1, "status", "unknown field \"status\"");
    }

    [Fact]
    public void ClientIP_affinity_defaults_to_three_hours_and_takes_the_configured_timeout()
    {
        Assert.Null(Parse(Head + OnePort).AffinityTimeoutSeconds);
        Assert.Equal(10800, Parse(Head + "  sessionAffinity: ClientIP\n" + OnePort).AffinityTimeoutSeconds);
        Assert.Equal(60, Parse(Head + "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n" + OnePort).AffinityTimeoutSeconds);
    }

    [Fact]
    public void NodePort_service_with_traffic_policies_and_algorithm_annotation()
    {
        var svc = Parse("""
            apiVersion: v1
            kind: Service
            metadata:
              name: web
              namespace: shop
              annotations: {service.cilium.io/lb-algorithm: maglev, other: ignored}
            spec:
              type: NodePort
              externalTrafficPolicy: Local
              internalTrafficPolicy: Local
              selector: {app: web}
              ports:
              - {name: http, port: 80, nodePort: 30080}
              - {name: dns, port: 53, protocol: UDP}
            """);
        Assert.Equal(ServiceType.NodePort, svc.Type);
        Assert.True(svc.ExternalTrafficLocal);
        Assert.True(svc.InternalTrafficLocal);
        Assert.Equal(LbAlgorithm.Maglev, svc.Algorithm);
        Assert.Equal([(ushort?)30080, null], svc.Ports.Select(p => p.NodePort));
        Assert.Null(Parse(Head + OnePort).Algorithm);
    }

    [Fact]
    public void Unknown_lb_algorithm_is_an_error_at_the_annotation()
    {
        var e = Fails("apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  annotations: {service.cilium.io/lb-algorithm: hash}\nspec:\n" + OnePort);
        AssertError(e, 5, 49, "metadata.annotations.service.cilium.io/lb-algorithm", "invalid load-balancing algorithm \"hash\": use random or maglev");
    }

    private const string Slice = """
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: legacy-1
          namespace: shop
          labels: {kubernetes.io/service-name: legacy}
        addressType: IPv4
        ports: [{name: http, port: 8080}, {name: dns, port: 53, protocol: UDP}]
        endpoints:
        - addresses: [192.0.2.20]
          nodeName: node-a
        - addresses: [192.0.2.21]
          conditions: {ready: false, serving: true, terminating: true}
        - addresses: [192.0.2.22]
          conditions: {ready: false}

        """;

    [Fact]
    public void EndpointSlice_parses_with_Kubernetes_condition_defaults()
    {
        var s = Assert.IsType<EndpointSliceResource>(Assert.Single(ManifestParser.Parse(Slice, File)));
        Assert.Equal(("legacy-1", "shop", "legacy"), (s.Name, s.Namespace, s.ServiceName));
        Assert.Equal([new EndpointSlicePort("http", 8080, L4Proto.Tcp), new EndpointSlicePort("dns", 53, L4Proto.Udp)], s.Ports);
        Assert.Equal(new SliceEndpoint("192.0.2.20", true, true, false, "node-a"), s.Endpoints[0]);
        Assert.Equal(new SliceEndpoint("192.0.2.21", false, true, true, null), s.Endpoints[1]);
        Assert.Equal(new SliceEndpoint("192.0.2.22", false, false, false, null), s.Endpoints[2]);
    }

    public static TheoryData<string, string, int, int, string, string> SliceErrors => new()
    {
        { "  labels: {kubernetes.io/service-name: legacy}", "  labels: {app: x}", 4, 3, "metadata.labels", "needs the label kubernetes.io/service-name" },
        { "addressType: IPv4", "addressType: FQDN", 7, 14, "addressType", "addressType FQDN is not supported yet" },
        { "- addresses: [192.0.2.20]", "- addresses: [192.0.2.20, 192.0.2.23]", 10, 14, "endpoints[0].addresses", "exactly one address, found 2" },
        { "- addresses: [192.0.2.20]", "- addresses: [127.0.0.1]", 10, 15, "endpoints[0].addresses[0]", "cannot be an endpoint" },
        { "- addresses: [192.0.2.20]", "- addresses: [192.0.2.300]", 10, 15, "endpoints[0].addresses[0]", "not a valid IPv4 address" },
        { "  conditions: {ready: false}", "  conditions: {ready: maybe}", 15, 23, "endpoints[2].conditions.ready", "expected true or false" },
        { "  conditions: {ready: false}", "  hints: {forZones: [{name: a}]}", 15, 3, "endpoints[2].hints", "hints is not supported yet" },
        { "{name: dns, port: 53, protocol: UDP}", "{name: dns, protocol: UDP}", 8, 35, "ports[1].port", "port is required" },
    };

    [Theory]
    [MemberData(nameof(SliceErrors))]
    public void EndpointSlice_errors_point_at_the_field(string from, string to, int line, int column, string field, string containing) =>
        AssertError(Fails(Slice.Replace(from, to)), line, column, field, containing);
}
