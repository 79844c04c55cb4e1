using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace Trellis.Policy;

/// <summary>
/// Parses multi-document Kubernetes-shaped YAML into resources. All or nothing: the first problem in any document
/// throws a <see cref="ManifestException"/>, so a caller never applies half a file.
/// </summary>
public static partial class ManifestParser
{
    public const string DefaultNamespace = "default";

    private static readonly string[] MetadataFields = ["name", "namespace", "labels", "annotations"];
    private static readonly string[] NamespaceFields = ["apiVersion", "kind", "metadata"];
    private static readonly string[] PodFields = ["apiVersion", "kind", "metadata", "spec"];
    private static readonly string[] PodSpecFields = ["containers", "restartPolicy"];
    private static readonly string[] ContainerFields = ["name", "image", "command", "args", "ports"];
    private static readonly string[] ContainerPortFields = ["name", "containerPort", "protocol"];
    private static readonly string[] PolicyFields = ["apiVersion", "kind", "metadata", "spec", "specs"];

    public static IReadOnlyList<Resource> Parse(string text, string fileName) => Parse(text, fileName, out _);

    /// <summary>
    /// Like <see cref="Parse(string, string)"/>, and also returns what is accepted but looks wrong (rules that can
    /// never match, allows made useless by a deny of the same policy...), in file order.
    /// </summary>
    public static IReadOnlyList<Resource> Parse(string text, string fileName, out IReadOnlyList<ManifestWarning> warnings) =>
        Parse(text, fileName, ManifestParserOptions.Default, out warnings);

    /// <summary>Like <see cref="Parse(string, string)"/> with non-default options.</summary>
    public static IReadOnlyList<Resource> Parse(string text, string fileName, ManifestParserOptions options) => Parse(text, fileName, options, out _);

    /// <summary>Like <see cref="Parse(string, string, out IReadOnlyList{ManifestWarning})"/> with non-default options.</summary>
    public static IReadOnlyList<Resource> Parse(string text, string fileName, ManifestParserOptions options, out IReadOnlyList<ManifestWarning> warnings)
    {
        ArgumentNullException.ThrowIfNull(text);
        ArgumentNullException.ThrowIfNull(fileName);
        ArgumentNullException.ThrowIfNull(options);
        var ctx = new ParseContext(fileName, options);
        warnings = ctx.Warnings;

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
            ("v1", ResourceKinds.Service) => ParseService(ctx, new MapReader(ctx, map, "", ServiceFields)),
            ("cilium.io/v2", ResourceKinds.CiliumNetworkPolicy) => ParsePolicy(ctx, new MapReader(ctx, map, "", PolicyFields), clusterwide: false),
            ("cilium.io/v2", ResourceKinds.CiliumClusterwideNetworkPolicy) => ParsePolicy(ctx, new MapReader(ctx, map, "", PolicyFields), clusterwide: true),
            ("networking.k8s.io/v1", ResourceKinds.NetworkPolicy) => ParseNetworkPolicy(ctx, new MapReader(ctx, map, "", NetworkPolicyFields)),
            ("discovery.k8s.io/v1", ResourceKinds.EndpointSlice) => ParseEndpointSlice(ctx, new MapReader(ctx, map, "", EndpointSliceFields)),
            _ => throw ctx.Error(FindValue(map, "kind")!, "kind",
                $"kind {kind} (apiVersion {apiVersion}) is not supported yet; supported: v1 Namespace, v1 Pod, v1 Service, discovery.k8s.io/v1 EndpointSlice, cilium.io/v2 CiliumNetworkPolicy, cilium.io/v2 CiliumClusterwideNetworkPolicy, networking.k8s.io/v1 NetworkPolicy"),
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

    private sealed record Metadata(string Name, string? Namespace, Labels Labels,
        IReadOnlyList<(YamlScalarNode Key, string Value, YamlNode ValueNode)> Annotations);

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

        var annotations = meta.StringMap("annotations") ?? []; // well-formed; each kind reads the ones it knows
        return new Metadata(name, ns, ParseLabels(ctx, meta, "labels"), annotations);
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

        string? visibility = null;
        foreach (var (key, value, valueNode) in meta.Annotations.Where(a => a.Key.Value == ProxyVisibility.Annotation))
        {
            try
            {
                ProxyVisibility.Parse(value);
            }
            catch (FormatException e)
            {
                throw ctx.Error(valueNode, $"metadata.annotations.{key.Value}", e.Message);
            }
            visibility = value;
        }
        return new PodResource(meta.Name, meta.Namespace!, meta.Labels, containers, ctx.Location(doc.Node)) { ProxyVisibility = visibility };
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

            var protocol = KubernetesProtocol(ctx, p);
            result.Add(new ContainerPort(p.String("name"), (ushort)port, protocol));
        }
        return result.ToArray();
    }

    /// <summary>A Kubernetes `protocol` field (container ports, NetworkPolicy ports): TCP (the default), UDP or SCTP.</summary>
    private static L4Proto KubernetesProtocol(ParseContext ctx, MapReader r)
    {
        if (r.String("protocol") is not { } text) return L4Proto.Tcp;
        return text switch
        {
            "TCP" => L4Proto.Tcp,
            "UDP" => L4Proto.Udp,
            "SCTP" => L4Proto.Sctp,
            _ => throw ctx.Error(r.Get("protocol")!, r.Field("protocol"), $"invalid protocol \"{text}\": use TCP, UDP or SCTP (case-sensitive)"),
        };
    }
}
