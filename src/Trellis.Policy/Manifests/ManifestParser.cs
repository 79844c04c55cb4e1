using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace Trellis.Policy;

/// <summary>
/// Parses multi-document Kubernetes-shaped YAML into resources. All or nothing: the first problem in any document
/// throws a <see cref="ManifestException"/>, so a caller never applies half a file.
/// </summary>
public static class ManifestParser
{
    public const string DefaultNamespace = "default";

    private static readonly string[] MetadataFields = ["name", "namespace", "labels", "annotations"];
    private static readonly string[] NamespaceFields = ["apiVersion", "kind", "metadata"];
    private static readonly string[] PodFields = ["apiVersion", "kind", "metadata", "spec"];
    private static readonly string[] PodSpecFields = ["containers", "restartPolicy"];
    private static readonly string[] ContainerFields = ["name", "image", "command", "args", "ports"];
    private static readonly string[] ContainerPortFields = ["name", "containerPort", "protocol"];
    private static readonly string[] PolicyFields = ["apiVersion", "kind", "metadata", "spec", "specs"];

    private static readonly string[] RuleFields = ["endpointSelector", "description", "ingress", "egress"];
    private static readonly string[] RuleUnsupported = ["ingressDeny", "egressDeny", "nodeSelector", "labels", "enableDefaultDeny", "log"];
    private static readonly string[] IngressFields = ["fromEndpoints", "toPorts"];
    private static readonly string[] IngressUnsupported =
        ["fromCIDR", "fromCIDRSet", "fromEntities", "fromRequires", "fromNodes", "fromGroups", "icmps", "authentication"];
    private static readonly string[] EgressFields = ["toEndpoints", "toPorts"];
    private static readonly string[] EgressUnsupported =
        ["toCIDR", "toCIDRSet", "toEntities", "toServices", "toFQDNs", "toRequires", "toNodes", "toGroups", "icmps", "authentication"];
    private static readonly string[] PortRuleFields = ["ports"];
    private static readonly string[] PortRuleUnsupported = ["rules", "originatingTLS", "terminatingTLS", "serverNames", "listener"];
    private static readonly string[] PortProtocolFields = ["port", "protocol"];
    private static readonly string[] PortProtocolUnsupported = ["endPort"];
    private static readonly string[] SelectorFields = ["matchLabels", "matchExpressions"];
    private static readonly string[] RequirementFields = ["key", "operator", "values"];

    public static IReadOnlyList<Resource> Parse(string text, string fileName)
    {
        ArgumentNullException.ThrowIfNull(text);
        ArgumentNullException.ThrowIfNull(fileName);
        var ctx = new ParseContext(fileName);

        var stream = new YamlStream();
        try
        {
            stream.Load(new StringReader(text));
        }
        catch (YamlException e)
        {
            var (line, column) = ((int)e.Start.Line, (int)e.Start.Column);
            // YamlDotNet reports a tab in indentation at the start of the enclosing mapping; point at the tab itself.
            if (e.Message.Contains("tab", StringComparison.Ordinal) && FirstIndentTab(text) is { } tab)
                (line, column) = tab;
            throw new ManifestException(fileName, line, column, "", $"invalid YAML: {YamlProblem(e)}", e);
        }

        var resources = new List<Resource>();
        var seen = new Dictionary<(string Kind, string? Namespace, string Name), Resource>();
        foreach (var document in stream.Documents)
        {
            if (ParseContext.IsNull(document.RootNode))
                continue; // an empty document (only "---" or comments)

            var resource = ParseDocument(ctx, document.RootNode);
            if (seen.TryGetValue((resource.Kind, resource.Namespace, resource.Name), out var first))
            {
                var where = resource.Namespace is null ? resource.Name : $"{resource.Namespace}/{resource.Name}";
                throw new ManifestException(fileName, resource.Location.Line, resource.Location.Column, "metadata.name",
                    $"{resource.Kind} {where} is defined twice (first at {first.Location})");
            }
            seen.Add((resource.Kind, resource.Namespace, resource.Name), resource);
            resources.Add(resource);
        }
        return resources;
    }

    private static (int Line, int Column)? FirstIndentTab(string text)
    {
        var lines = text.Split('\n');
        for (var i = 0; i < lines.Length; i++)
        {
            var indent = lines[i].Length - lines[i].TrimStart(' ', '\t').Length;
            var tab = lines[i].IndexOf('\t', 0, indent);
            if (tab >= 0)
                return (i + 1, tab + 1);
        }
        return null;
    }

    private static string YamlProblem(YamlException e)
    {
        // YamlDotNet prefixes its own "(Line: .., Col: ..)" which we already report in front.
        var message = e.Message;
        var close = message.IndexOf("): ", StringComparison.Ordinal);
        message = message.StartsWith("(Line:", StringComparison.Ordinal) && close > 0 ? message[(close + 3)..] : message;
        return message.StartsWith("Duplicate key ", StringComparison.Ordinal)
            ? $"key \"{message["Duplicate key ".Length..]}\" appears twice in the same mapping"
            : message;
    }

    private static Resource ParseDocument(ParseContext ctx, YamlNode root)
    {
        if (root is not YamlMappingNode map)
            throw ctx.Error(root, "", $"a manifest document must be a mapping with apiVersion and kind, found {ParseContext.Describe(root)}");

        var apiVersion = PeekString(ctx, map, "apiVersion") ?? throw ctx.Error(map, "apiVersion", "apiVersion is required");
        var kind = PeekString(ctx, map, "kind") ?? throw ctx.Error(map, "kind", "kind is required");

        return (apiVersion, kind) switch
        {
            ("v1", ResourceKinds.Namespace) => ParseNamespace(ctx, new MapReader(ctx, map, "", NamespaceFields)),
            ("v1", ResourceKinds.Pod) => ParsePod(ctx, new MapReader(ctx, map, "", PodFields)),
            ("cilium.io/v2", ResourceKinds.CiliumNetworkPolicy) => ParsePolicy(ctx, new MapReader(ctx, map, "", PolicyFields), clusterwide: false),
            ("cilium.io/v2", ResourceKinds.CiliumClusterwideNetworkPolicy) => ParsePolicy(ctx, new MapReader(ctx, map, "", PolicyFields), clusterwide: true),
            _ => throw ctx.Error(FindValue(map, "kind")!, "kind",
                $"kind {kind} (apiVersion {apiVersion}) is not supported yet; supported: v1 Namespace, v1 Pod, cilium.io/v2 CiliumNetworkPolicy, cilium.io/v2 CiliumClusterwideNetworkPolicy"),
        };
    }

    private static YamlNode? FindValue(YamlMappingNode map, string key) =>
        map.Children.FirstOrDefault(p => p.Key is YamlScalarNode { Value: var k } && k == key).Value;

    private static string? PeekString(ParseContext ctx, YamlMappingNode map, string key)
    {
        var node = FindValue(map, key);
        if (node is null || ParseContext.IsNull(node))
            return null;
        return node is YamlScalarNode { Value: { } value }
            ? value
            : throw ctx.Error(node, key, $"expected a string, found {ParseContext.Describe(node)}");
    }

    private sealed record Metadata(string Name, string? Namespace, Labels Labels);

    private static Metadata ParseMetadata(ParseContext ctx, MapReader doc, string kind, bool namespaced)
    {
        var node = doc.Get("metadata") ?? throw ctx.Error(doc.Node, "metadata.name", "metadata.name is required");
        var meta = new MapReader(ctx, node, "metadata", MetadataFields);

        var name = meta.RequiredString("name");
        CheckName(ctx, meta, "name", name);

        string? ns = null;
        if (namespaced)
        {
            ns = meta.String("namespace") ?? DefaultNamespace;
            CheckName(ctx, meta, "namespace", ns);
        }
        else if (meta.Get("namespace") is { } nsNode)
        {
            throw ctx.Error(nsNode, meta.Field("namespace"), $"{kind} is cluster-scoped; remove metadata.namespace");
        }

        meta.StringMap("annotations"); // accepted and ignored, but must still be well-formed
        return new Metadata(name, ns, ParseLabels(ctx, meta, "labels"));
    }

    private static void CheckName(ParseContext ctx, MapReader reader, string field, string value)
    {
        if (LabelValidation.Dns1123LabelError(value) is { } error)
            throw ctx.Error(reader.Get(field) ?? reader.Node, reader.Field(field), error);
    }

    private static Labels ParseLabels(ParseContext ctx, MapReader reader, string field)
    {
        var entries = reader.StringMap(field);
        if (entries is null)
            return Labels.Empty;
        foreach (var (key, value, valueNode) in entries)
        {
            var path = ParseContext.Join(reader.Field(field), key.Value!);
            if (LabelValidation.LabelKeyError(key.Value!) is { } keyError)
                throw ctx.Error(key, path, keyError);
            if (LabelValidation.LabelValueError(value) is { } valueError)
                throw ctx.Error(valueNode, path, valueError);
        }
        return new Labels(entries.Select(e => KeyValuePair.Create(e.Key.Value!, e.Value)));
    }

    private static NamespaceResource ParseNamespace(ParseContext ctx, MapReader doc)
    {
        var meta = ParseMetadata(ctx, doc, ResourceKinds.Namespace, namespaced: false);
        return new NamespaceResource(meta.Name, meta.Labels, ctx.Location(doc.Node));
    }

    private static PodResource ParsePod(ParseContext ctx, MapReader doc)
    {
        var meta = ParseMetadata(ctx, doc, ResourceKinds.Pod, namespaced: true);
        var specNode = doc.Get("spec") ?? throw ctx.Error(doc.Node, "spec", "spec is required (with containers and their command)");
        var spec = new MapReader(ctx, specNode, "spec", PodSpecFields);
        spec.String("restartPolicy"); // accepted and ignored: the lab restarts nothing

        var items = spec.List("containers");
        if (items is null || items.Count == 0)
            throw ctx.Error(spec.Get("containers") ?? spec.Node, spec.Field("containers"), "at least one container is required");

        var containers = new List<Container>();
        foreach (var (node, path) in items)
        {
            var c = new MapReader(ctx, node, path, ContainerFields);
            var name = c.RequiredString("name");
            CheckName(ctx, c, "name", name);
            if (containers.Any(x => x.Name == name))
                throw ctx.Error(c.Get("name")!, c.Field("name"), $"container name \"{name}\" is used twice");
            c.String("image"); // accepted and ignored: the lab runs host programs
            var command = (c.StringList("command") ?? []).Concat(c.StringList("args") ?? []).ToArray();
            containers.Add(new Container(name, command, ParseContainerPorts(ctx, c)));
        }

        if (!containers.Any(c => c.Command.Count > 0))
            throw ctx.Error(spec.Get("containers")!, spec.Field("containers"),
                "no container has a command: the lab runs each pod's command as a host program, so set command (and args) on at least one container");

        return new PodResource(meta.Name, meta.Namespace!, meta.Labels, containers, ctx.Location(doc.Node));
    }

    private static ContainerPort[] ParseContainerPorts(ParseContext ctx, MapReader container)
    {
        var result = new List<ContainerPort>();
        foreach (var (node, path) in container.List("ports") ?? [])
        {
            var p = new MapReader(ctx, node, path, ContainerPortFields);
            var portNode = p.Get("containerPort") ?? throw ctx.Error(p.Node, p.Field("containerPort"), "containerPort is required");
            if (portNode is not YamlScalarNode { Value: { } text } || !int.TryParse(text, out var port) || port is < 1 or > 65535)
                throw ctx.Error(portNode, p.Field("containerPort"), $"containerPort must be a number from 1 to 65535, found {ParseContext.Describe(portNode)}");

            var protocol = L4Proto.Tcp;
            if (p.String("protocol") is { } proto)
            {
                protocol = proto switch
                {
                    "TCP" => L4Proto.Tcp,
                    "UDP" => L4Proto.Udp,
                    "SCTP" => L4Proto.Sctp,
                    _ => throw ctx.Error(p.Get("protocol")!, p.Field("protocol"), $"invalid protocol \"{proto}\": use TCP, UDP or SCTP (case-sensitive)"),
                };
            }
            result.Add(new ContainerPort(p.String("name"), (ushort)port, protocol));
        }
        return result.ToArray();
    }

    private static PolicyResource ParsePolicy(ParseContext ctx, MapReader doc, bool clusterwide)
    {
        var kind = clusterwide ? ResourceKinds.CiliumClusterwideNetworkPolicy : ResourceKinds.CiliumNetworkPolicy;
        var meta = ParseMetadata(ctx, doc, kind, namespaced: !clusterwide);

        var spec = doc.Get("spec");
        var specs = doc.List("specs");
        if (spec is not null && specs is not null)
            throw ctx.Error(doc.KeyNode("specs")!, "specs", "use either spec (one rule) or specs (a list of rules), not both");

        var rules = new List<PolicyRule>();
        if (spec is not null)
        {
            rules.Add(ParseRule(ctx, spec, "spec"));
        }
        else if (specs is not null)
        {
            foreach (var (node, path) in specs)
                rules.Add(ParseRule(ctx, node, path));
        }
        if (rules.Count == 0)
            throw ctx.Error(doc.Get("specs") ?? doc.Node, specs is null ? "spec" : "specs", "the policy has no rule: give spec (one rule) or specs (a non-empty list)");

        return new PolicyResource(meta.Name, meta.Namespace, rules, ctx.Location(doc.Node));
    }

    private static PolicyRule ParseRule(ParseContext ctx, YamlNode node, string path)
    {
        var r = new MapReader(ctx, node, path, RuleFields, RuleUnsupported);
        var selectorNode = r.Get("endpointSelector")
            ?? throw ctx.Error(r.Node, r.Field("endpointSelector"), "endpointSelector is required (use {} to select every endpoint the policy can see)");
        var selector = ParseSelector(ctx, selectorNode, r.Field("endpointSelector"));

        var ingress = (r.List("ingress") ?? []).Select(item =>
        {
            var i = new MapReader(ctx, item.Node, item.Path, IngressFields, IngressUnsupported);
            return new IngressRule(ParseSelectors(ctx, i, "fromEndpoints"), ParseToPorts(ctx, i), ctx.Location(item.Node));
        }).ToArray();

        var egress = (r.List("egress") ?? []).Select(item =>
        {
            var e = new MapReader(ctx, item.Node, item.Path, EgressFields, EgressUnsupported);
            return new EgressRule(ParseSelectors(ctx, e, "toEndpoints"), ParseToPorts(ctx, e), ctx.Location(item.Node));
        }).ToArray();

        return new PolicyRule(selector, r.String("description"), ingress, egress, ctx.Location(node));
    }

    private static EndpointSelector[]? ParseSelectors(ParseContext ctx, MapReader reader, string field) =>
        reader.List(field)?.Select(item => ParseSelector(ctx, item.Node, item.Path)).ToArray();

    private static EndpointSelector ParseSelector(ParseContext ctx, YamlNode node, string path)
    {
        var s = new MapReader(ctx, node, path, SelectorFields);

        var matchLabels = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (keyNode, value, valueNode) in s.StringMap("matchLabels") ?? [])
        {
            var field = ParseContext.Join(s.Field("matchLabels"), keyNode.Value!);
            var key = SelectorKey(ctx, keyNode, keyNode.Value!, field);
            if (LabelValidation.LabelValueError(value) is { } valueError)
                throw ctx.Error(valueNode, field, valueError);
            if (!matchLabels.TryAdd(key, value))
                throw ctx.Error(keyNode, field, $"label \"{key}\" is matched twice (with and without a source prefix)");
        }

        var requirements = new List<LabelSelectorRequirement>();
        foreach (var (itemNode, itemPath) in s.List("matchExpressions") ?? [])
        {
            var e = new MapReader(ctx, itemNode, itemPath, RequirementFields);
            var rawKey = e.RequiredString("key");
            var key = SelectorKey(ctx, e.Get("key")!, rawKey, e.Field("key"));
            var opText = e.RequiredString("operator");
            SelectorOperator? parsed = opText switch
            {
                "In" => SelectorOperator.In,
                "NotIn" => SelectorOperator.NotIn,
                "Exists" => SelectorOperator.Exists,
                "DoesNotExist" => SelectorOperator.DoesNotExist,
                _ => null,
            };
            if (parsed is not { } op)
                throw ctx.Error(e.Get("operator")!, e.Field("operator"), $"invalid operator \"{opText}\": use In, NotIn, Exists or DoesNotExist");
            var values = e.StringList("values") ?? [];
            var needsValues = op is SelectorOperator.In or SelectorOperator.NotIn;
            if (needsValues && values.Count == 0)
                throw ctx.Error(e.Get("values") ?? e.Node, e.Field("values"), $"operator {op} needs a non-empty values list");
            if (!needsValues && values.Count > 0)
                throw ctx.Error(e.Get("values")!, e.Field("values"), $"operator {op} takes no values; remove values");
            requirements.Add(new LabelSelectorRequirement(key, op, values));
        }

        return new EndpointSelector(new Labels(matchLabels), requirements);
    }

    private static string SelectorKey(ParseContext ctx, YamlNode node, string rawKey, string field)
    {
        var key = LabelSource.NormalizeSelectorKey(rawKey, out var error);
        if (error is not null)
            throw ctx.Error(node, field, error);
        if (LabelValidation.LabelKeyError(key) is { } keyError)
            throw ctx.Error(node, field, keyError);
        return key;
    }

    private static PortRule[] ParseToPorts(ParseContext ctx, MapReader reader) =>
        (reader.List("toPorts") ?? []).Select(item =>
        {
            var pr = new MapReader(ctx, item.Node, item.Path, PortRuleFields, PortRuleUnsupported);
            var ports = pr.List("ports");
            if (ports is null || ports.Count == 0)
                throw ctx.Error(pr.Get("ports") ?? pr.Node, pr.Field("ports"), "ports must list at least one port");
            return new PortRule(ports.Select(p => ParsePortProtocol(ctx, p.Node, p.Path)).ToArray(), ctx.Location(item.Node));
        }).ToArray();

    private static PortProtocol ParsePortProtocol(ParseContext ctx, YamlNode node, string path)
    {
        var pp = new MapReader(ctx, node, path, PortProtocolFields, PortProtocolUnsupported);

        ushort port = 0;
        if (pp.String("port") is { } portText)
        {
            var portNode = pp.Get("port")!;
            if (portText.Length > 0 && portText.All(char.IsAsciiDigit))
            {
                if (!int.TryParse(portText, out var value) || value > 65535)
                    throw ctx.Error(portNode, pp.Field("port"), $"port {portText} is out of range: use 1-65535, or 0 for any port");
                port = (ushort)value;
            }
            else if (portText.Any(char.IsAsciiLetter) && portText.All(c => char.IsAsciiLetterOrDigit(c) || c == '-'))
            {
                throw ctx.Error(portNode, pp.Field("port"), $"named ports are not supported yet; use the port number instead of \"{portText}\"");
            }
            else
            {
                throw ctx.Error(portNode, pp.Field("port"), $"invalid port \"{portText}\": use 1-65535, or 0 for any port");
            }
        }

        var protocol = L4Proto.Any;
        if (pp.String("protocol") is { } protoText)
        {
            protocol = protoText switch
            {
                "TCP" => L4Proto.Tcp,
                "UDP" => L4Proto.Udp,
                "SCTP" => L4Proto.Sctp,
                "ANY" => L4Proto.Any,
                "ICMP" or "ICMPv6" or "VRRP" or "IGMP" =>
                    throw ctx.Error(pp.Get("protocol")!, pp.Field("protocol"), $"protocol {protoText} is not supported yet"),
                _ => throw ctx.Error(pp.Get("protocol")!, pp.Field("protocol"),
                    $"invalid protocol \"{protoText}\": use TCP, UDP, SCTP or ANY (case-sensitive, as in Cilium)"),
            };
        }
        return new PortProtocol(port, protocol);
    }
}
