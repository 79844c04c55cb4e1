using System.Net;
using System.Net.Sockets;
using YamlDotNet.RepresentationModel;

namespace Trellis.Policy;

// Kubernetes v1 Service, types ClusterIP and NodePort. Everything that would change how traffic is routed and is not
// implemented (LoadBalancer, ExternalName, headless, external IPs, dual-stack) is refused as "not supported yet"
// rather than ignored, so a manifest never means something other than what the lab does.
public static partial class ManifestParser
{
    private static readonly string[] ServiceFields = ["apiVersion", "kind", "metadata", "spec"];

    private static readonly string[] ServiceSpecFields =
    [
        "selector", "type", "clusterIP", "clusterIPs", "ports", "sessionAffinity", "sessionAffinityConfig",
        "internalTrafficPolicy", "externalTrafficPolicy", "ipFamilies", "ipFamilyPolicy",
    ];

    private static readonly string[] ServiceSpecUnsupported =
    [
        "externalIPs", "externalName", "loadBalancerIP", "loadBalancerSourceRanges", "loadBalancerClass",
        "allocateLoadBalancerNodePorts", "healthCheckNodePort", "publishNotReadyAddresses",
        "trafficDistribution",
    ];

    private static readonly string[] ServicePortFields = ["name", "port", "targetPort", "protocol", "appProtocol", "nodePort"];

    /// <summary>Cilium's per-service annotation choosing the backend selection of the per-packet path.</summary>
    public const string LbAlgorithmAnnotation = "service.cilium.io/lb-algorithm";

    private static ServiceResource ParseService(ParseContext ctx, MapReader doc)
    {
        var meta = ParseMetadata(ctx, doc, ResourceKinds.Service, namespaced: true);
        var specNode = doc.Get("spec") ?? throw ctx.Error(doc.Node, "spec", "spec is required (with ports)");
        var spec = new MapReader(ctx, specNode, "spec", ServiceSpecFields, ServiceSpecUnsupported);

        var type = ServiceType.ClusterIP;
        if (spec.String("type") is { } typeText)
        {
            type = typeText switch
            {
                "ClusterIP" => ServiceType.ClusterIP,
                "NodePort" => ServiceType.NodePort,
                "LoadBalancer" or "ExternalName" => throw ctx.Error(spec.Get("type")!, spec.Field("type"),
                    $"service type {typeText} is not supported yet; use ClusterIP or NodePort"),
                _ => throw ctx.Error(spec.Get("type")!, spec.Field("type"), $"invalid service type \"{typeText}\": use ClusterIP or NodePort (case-sensitive)"),
            };
        }

        var clusterIP = ParseClusterIP(ctx, spec);
        var affinity = ParseAffinity(ctx, spec);
        var internalLocal = TrafficPolicy(ctx, spec, "internalTrafficPolicy");
        var externalLocal = TrafficPolicy(ctx, spec, "externalTrafficPolicy");
        // Kubernetes clears the field on ClusterIP services; Local there would promise something that cannot happen.
        if (externalLocal && type == ServiceType.ClusterIP)
            throw ctx.Error(spec.Get("externalTrafficPolicy")!, spec.Field("externalTrafficPolicy"), "externalTrafficPolicy Local needs type NodePort (a ClusterIP service has no external traffic)");
        CheckEnum(ctx, spec, "ipFamilyPolicy", "SingleStack", ["PreferDualStack", "RequireDualStack"]);
        foreach (var (node, path) in spec.List("ipFamilies") ?? [])
        {
            var family = ScalarString(ctx, node, path);
            if (path != spec.Field("ipFamilies") + "[0]")
                throw ctx.Error(node, path, "dual-stack services are not supported yet; list IPv4 once");
            if (family != "IPv4")
                throw ctx.Error(node, path, family == "IPv6"
                    ? "IPv6 is not supported yet; use IPv4"
                    : $"invalid IP family \"{family}\": use IPv4 (case-sensitive)");
        }

        var selector = ParseLabels(ctx, spec, "selector");
        LbAlgorithm? algorithm = null;
        foreach (var (key, value, valueNode) in meta.Annotations.Where(a => a.Key.Value == LbAlgorithmAnnotation))
        {
            algorithm = value switch
            {
                "random" => LbAlgorithm.Random,
                "maglev" => LbAlgorithm.Maglev,
                _ => throw ctx.Error(valueNode, $"metadata.annotations.{key.Value}", $"invalid load-balancing algorithm \"{value}\": use random or maglev"),
            };
        }
        var ports = ParseServicePorts(ctx, spec, type);
        return new ServiceResource(meta.Name, meta.Namespace!,
            selector.Count == 0 ? null : selector, // Labels: an ordinal, value-equal dictionary
            clusterIP, ports, ctx.Location(doc.Node), affinity, type, externalLocal, internalLocal, algorithm);
    }

    /// <summary>Cluster (default) or Local.</summary>
    private static bool TrafficPolicy(ParseContext ctx, MapReader spec, string field) => spec.String(field) switch
    {
        null or "Cluster" => false,
        "Local" => true,
        var other => throw ctx.Error(spec.Get(field)!, spec.Field(field), $"invalid {field} \"{other}\": use Cluster or Local (case-sensitive)"),
    };

    /// <summary>sessionAffinity None (default) or ClientIP with sessionAffinityConfig.clientIP.timeoutSeconds
    /// (1..86400, default 10800), as the Kubernetes API validates it. Returns the timeout, or null for None.</summary>
    private static int? ParseAffinity(ParseContext ctx, MapReader spec)
    {
        var mode = spec.String("sessionAffinity") ?? "None";
        if (mode is not ("None" or "ClientIP"))
            throw ctx.Error(spec.Get("sessionAffinity")!, spec.Field("sessionAffinity"), $"invalid sessionAffinity \"{mode}\": use None or ClientIP (case-sensitive)");
        var configNode = spec.Get("sessionAffinityConfig");
        if (mode == "None")
        {
            if (configNode is not null && !ParseContext.IsNull(configNode))
                throw ctx.Error(configNode, spec.Field("sessionAffinityConfig"), "sessionAffinityConfig needs sessionAffinity: ClientIP");
            return null;
        }
        int timeout = 10800;
        if (configNode is not null && !ParseContext.IsNull(configNode))
        {
            var config = new MapReader(ctx, configNode, spec.Field("sessionAffinityConfig"), ["clientIP"]);
            if (config.Get("clientIP") is { } clientNode && !ParseContext.IsNull(clientNode))
            {
                var client = new MapReader(ctx, clientNode, config.Field("clientIP"), ["timeoutSeconds"]);
                if (client.Get("timeoutSeconds") is { } tNode)
                {
                    var text = client.String("timeoutSeconds");
                    if (!int.TryParse(text, out timeout) || timeout is < 1 or > 86400)
                        throw ctx.Error(tNode, client.Field("timeoutSeconds"), $"'{text}' is not a number of seconds from 1 to 86400");
                }
            }
        }
        return timeout;
    }

    /// <summary>A field with one accepted value, some known-but-unsupported ones, and nothing else.</summary>
    private static void CheckEnum(ParseContext ctx, MapReader spec, string field, string accepted, string[] unsupported)
    {
        if (spec.String(field) is not { } value || value == accepted)
            return;
        throw ctx.Error(spec.Get(field)!, spec.Field(field), unsupported.Contains(value)
            ? $"{field} {value} is not supported yet; only {accepted} is"
            : $"invalid {field} \"{value}\": use {string.Join(" or ", unsupported.Prepend(accepted))} (case-sensitive)");
    }

    private static string? ParseClusterIP(ParseContext ctx, MapReader spec)
    {
        string? clusterIP = null;
        if (spec.String("clusterIP") is { Length: > 0 } text) // "" asks for an allocated address, like no clusterIP
        {
            clusterIP = CheckClusterIP(ctx, spec.Get("clusterIP")!, spec.Field("clusterIP"), text);
        }

        foreach (var (node, path) in spec.List("clusterIPs") ?? [])
        {
            var ip = ScalarString(ctx, node, path);
            if (path != spec.Field("clusterIPs") + "[0]")
                throw ctx.Error(node, path, "more than one cluster IP (dual-stack) is not supported yet; list at most one");
            CheckClusterIP(ctx, node, path, ip);
            if (ip != clusterIP)
                throw ctx.Error(node, path, clusterIP is null
                    ? $"clusterIPs lists \"{ip}\" but spec.clusterIP is not set; set spec.clusterIP: {ip} too, or leave clusterIPs out"
                    : $"clusterIPs[0] \"{ip}\" must equal spec.clusterIP \"{clusterIP}\"");
        }
        return clusterIP;
    }

    private static string CheckClusterIP(ParseContext ctx, YamlNode node, string path, string text)
    {
        if (text == "None")
            throw ctx.Error(node, path, "headless services are not supported yet; leave clusterIP out or give an IPv4 address");
        // IPAddress.TryParse accepts "10" or "10.1"; a cluster IP must spell out four octets.
        var fourOctets = text.Split('.') is { Length: 4 } parts && parts.All(p => p.Length is > 0 and <= 3 && p.All(char.IsAsciiDigit));
        if (IPAddress.TryParse(text, out var ip) && ip.AddressFamily == AddressFamily.InterNetworkV6)
            throw ctx.Error(node, path, $"\"{text}\" is an IPv6 address; IPv6 is not supported yet");
        if (!fourOctets || ip is null)
            throw ctx.Error(node, path, $"\"{text}\" is not a valid IPv4 address (use a.b.c.d, or leave clusterIP out)");
        return ip.ToString();
    }

    private static ServicePort[] ParseServicePorts(ParseContext ctx, MapReader spec, ServiceType type)
    {
        var items = spec.List("ports");
        if (items is null || items.Count == 0)
            throw ctx.Error(spec.Get("ports") ?? spec.Node, spec.Field("ports"), "at least one port is required");

        var result = new List<(ServicePort Port, string Path)>();
        foreach (var (node, path) in items)
        {
            var p = new MapReader(ctx, node, path, ServicePortFields);

            var name = p.String("name");
            if (name is not null)
            {
                CheckName(ctx, p, "name", name);
                if (result.FirstOrDefault(r => r.Port.Name == name) is { Path: { } firstPath })
                    throw ctx.Error(p.Get("name")!, p.Field("name"), $"port name \"{name}\" is used twice (first at {firstPath})");
            }
            else if (items.Count > 1)
            {
                throw ctx.Error(p.Node, p.Field("name"), "name is required when a service has more than one port");
            }

            var portNode = p.Get("port") ?? throw ctx.Error(p.Node, p.Field("port"), "port is required");
            var port = ServicePortNumber(ctx, portNode, p.Field("port"), "port");

            ushort targetPort = port;
            string? targetPortName = null;
            if (p.Get("targetPort") is { } targetNode)
            {
                var text = ScalarString(ctx, targetNode, p.Field("targetPort"));
                if (text.Length > 0 && text.All(char.IsAsciiDigit))
                    targetPort = ServicePortNumber(ctx, targetNode, p.Field("targetPort"), "targetPort");
                else if (PortNameError(text, lowercaseOnly: true) is { } nameError)
                    throw ctx.Error(targetNode, p.Field("targetPort"), $"{nameError}; or use a number from 1 to 65535");
                else
                    (targetPort, targetPortName) = ((ushort)0, text);
            }

            var protocol = L4Proto.Tcp; // Kubernetes default
            if (p.String("protocol") is { } proto)
            {
                protocol = proto switch
                {
                    "TCP" => L4Proto.Tcp,
                    "UDP" => L4Proto.Udp,
                    "SCTP" => throw ctx.Error(p.Get("protocol")!, p.Field("protocol"), "SCTP services are not supported yet; use TCP or UDP"),
                    _ => throw ctx.Error(p.Get("protocol")!, p.Field("protocol"), $"invalid protocol \"{proto}\": use TCP or UDP (case-sensitive)"),
                };
            }

            p.String("appProtocol"); // accepted and ignored, but must be a string

            ushort? nodePort = null;
            if (p.Get("nodePort") is { } npNode)
            {
                if (type != ServiceType.NodePort)
                    throw ctx.Error(npNode, p.Field("nodePort"), "nodePort may only be set when type is NodePort");
                nodePort = ServicePortNumber(ctx, npNode, p.Field("nodePort"), "nodePort");
            }

            if (result.FirstOrDefault(r => r.Port.Port == port && r.Port.Protocol == protocol) is { Path: { } dupPath })
                throw ctx.Error(portNode, p.Field("port"), $"port {port}/{ProtocolName(protocol)} is used twice (first at {dupPath})");

            if (nodePort is { } np && result.FirstOrDefault(r => r.Port.NodePort == np && r.Port.Protocol == protocol) is { Path: { } npPath })
                throw ctx.Error(p.Get("nodePort")!, p.Field("nodePort"), $"nodePort {np}/{ProtocolName(protocol)} is used twice (first at {npPath})");
            result.Add((new ServicePort(name, port, targetPort, targetPortName, protocol, nodePort), path));
        }
        return result.Select(r => r.Port).ToArray();
    }

    private static ushort ServicePortNumber(ParseContext ctx, YamlNode node, string path, string what)
    {
        if (node is not YamlScalarNode { Value: { } text } || text.Length == 0 || !text.All(char.IsAsciiDigit) ||
            !int.TryParse(text, out var value) || value is < 1 or > 65535)
            throw ctx.Error(node, path, $"{what} must be a number from 1 to 65535, found {ParseContext.Describe(node)}");
        return (ushort)value;
    }

    private static string ProtocolName(L4Proto protocol) => protocol switch
    {
        L4Proto.Udp => "UDP",
        L4Proto.Sctp => "SCTP",
        _ => "TCP",
    };
}
