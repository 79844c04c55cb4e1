using System.Net;
using System.Net.Sockets;
using YamlDotNet.RepresentationModel;

namespace Trellis.Policy;

// discovery.k8s.io/v1 EndpointSlice: the backends of a service without a selector, given by hand. Validated as the
// Kubernetes API validates it, IPv4 only.
public static partial class ManifestParser
{
    /// <summary>The label that ties a slice to its service.</summary>
    public const string ServiceNameLabel = "kubernetes.io/service-name";

    private static readonly string[] EndpointSliceFields = ["apiVersion", "kind", "metadata", "addressType", "endpoints", "ports"];
    private static readonly string[] SliceEndpointFields = ["addresses", "conditions", "nodeName", "hostname", "targetRef", "zone", "deprecatedTopology"];
    private static readonly string[] SliceEndpointUnsupported = ["hints"];
    private static readonly string[] SliceConditionFields = ["ready", "serving", "terminating"];
    private static readonly string[] SlicePortFields = ["name", "port", "protocol", "appProtocol"];

    private static EndpointSliceResource ParseEndpointSlice(ParseContext ctx, MapReader doc)
    {
        var meta = ParseMetadata(ctx, doc, ResourceKinds.EndpointSlice, namespaced: true);
        var service = meta.Labels.TryGetValue(ServiceNameLabel, out var svc) ? svc : null;
        if (string.IsNullOrEmpty(service))
            throw ctx.Error(doc.Get("metadata")!, "metadata.labels", $"an EndpointSlice needs the label {ServiceNameLabel}: <service name> to say which service it serves");

        var addressType = doc.RequiredString("addressType", " (IPv4)");
        if (addressType != "IPv4")
            throw ctx.Error(doc.Get("addressType")!, "addressType", addressType is "IPv6" or "FQDN"
                ? $"addressType {addressType} is not supported yet; use IPv4"
                : $"invalid addressType \"{addressType}\": use IPv4 (case-sensitive)");

        var ports = new List<(EndpointSlicePort Port, string Path)>();
        foreach (var (node, path) in doc.List("ports") ?? [])
        {
            var p = new MapReader(ctx, node, path, SlicePortFields);
            var name = p.String("name") ?? "";
            if (name.Length > 0) CheckName(ctx, p, "name", name);
            var portNode = p.Get("port") ?? throw ctx.Error(p.Node, p.Field("port"),
                "port is required (a slice port without a number, meaning every port, is not supported)");
            var port = ServicePortNumber(ctx, portNode, p.Field("port"), "port");
            var protocol = p.String("protocol") switch
            {
                null or "TCP" => L4Proto.Tcp,
                "UDP" => L4Proto.Udp,
                "SCTP" => throw ctx.Error(p.Get("protocol")!, p.Field("protocol"), "SCTP is not supported yet; use TCP or UDP"),
                var other => throw ctx.Error(p.Get("protocol")!, p.Field("protocol"), $"invalid protocol \"{other}\": use TCP or UDP (case-sensitive)"),
            };
            p.String("appProtocol");
            if (ports.FirstOrDefault(x => x.Port.Name == name && x.Port.Protocol == protocol) is { Path: { } first })
                throw ctx.Error(p.Node, p.Field("name"), $"port name \"{name}\" is used twice for {ProtocolName(protocol)} (first at {first})");
            ports.Add((new EndpointSlicePort(name, port, protocol), path));
        }

        var endpoints = new List<SliceEndpoint>();
        var items = doc.List("endpoints") ?? throw ctx.Error(doc.Node, "endpoints", "endpoints is required (it may be an empty list)");
        foreach (var (node, path) in items)
        {
            var e = new MapReader(ctx, node, path, SliceEndpointFields, SliceEndpointUnsupported);
            var addresses = e.List("addresses") ?? throw ctx.Error(e.Node, e.Field("addresses"), "addresses is required");
            if (addresses.Count != 1)
                throw ctx.Error(e.Get("addresses") ?? e.Node, e.Field("addresses"), $"an IPv4 endpoint has exactly one address, found {addresses.Count}");
            var (addrNode, addrPath) = addresses[0];
            var address = SliceAddress(ctx, addrNode, addrPath);
            if (endpoints.Any(x => x.Address == address))
                throw ctx.Error(addrNode, addrPath, $"address {address} is listed twice in this slice");

            bool? ready = null, serving = null, terminating = null;
            if (e.Get("conditions") is { } condNode)
            {
                var c = new MapReader(ctx, condNode, e.Field("conditions"), SliceConditionFields);
                ready = c.Bool("ready");
                serving = c.Bool("serving");
                terminating = c.Bool("terminating");
            }
            // Kubernetes: an unknown ready (or serving) condition is to be read as ready; serving defaults to ready.
            var isReady = ready ?? true;
            var nodeName = e.String("nodeName");
            if (nodeName is not null && (nodeName.Length is 0 or > 253 || nodeName.Split('.').Any(l => LabelValidation.Dns1123LabelError(l) is not null)))
                throw ctx.Error(e.Get("nodeName")!, e.Field("nodeName"), $"nodeName \"{nodeName}\" is not a valid node name (a lowercase DNS name of at most 253 characters)");
            e.String("hostname");
            e.String("zone");
            endpoints.Add(new SliceEndpoint(address, isReady, serving ?? isReady, terminating ?? false, nodeName));
        }
        return new EndpointSliceResource(meta.Name, meta.Namespace!, service, ports.Select(p => p.Port).ToArray(), endpoints, ctx.Location(doc.Node));
    }

    private static string SliceAddress(ParseContext ctx, YamlNode node, string path)
    {
        var text = ScalarString(ctx, node, path);
        var fourOctets = text.Split('.') is { Length: 4 } parts && parts.All(p => p.Length is > 0 and <= 3 && p.All(char.IsAsciiDigit));
        if (!fourOctets || !IPAddress.TryParse(text, out var ip) || ip.AddressFamily != AddressFamily.InterNetwork)
            throw ctx.Error(node, path, $"\"{text}\" is not a valid IPv4 address");
        var b = ip.GetAddressBytes();
        if (b[0] is 0 or 127 || b[0] >= 224 || (b[0] == 169 && b[1] == 254))
            throw ctx.Error(node, path, $"{text} cannot be an endpoint (loopback, link-local, multicast and unspecified addresses are refused, as Kubernetes does)");
        return ip.ToString();
    }
}
