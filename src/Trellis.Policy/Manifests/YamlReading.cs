using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace Trellis.Policy;

/// <summary>Error construction for one file: every node knows where it was written.</summary>
internal sealed class ParseContext(string file, ManifestParserOptions? options = null)
{
    public string File { get; } = file;

    public ManifestParserOptions Options { get; } = options ?? ManifestParserOptions.Default;

    public List<ManifestWarning> Warnings { get; } = new();

    public void Warn(YamlNode node, string field, string problem) =>
        Warnings.Add(new ManifestWarning(File, (int)node.Start.Line, (int)node.Start.Column, field, problem));

    public ManifestException Error(YamlNode node, string field, string problem) =>
        new(File, (int)node.Start.Line, (int)node.Start.Column, field, problem);

    public SourceLocation Location(YamlNode node) => new(File, (int)node.Start.Line, (int)node.Start.Column);

    public static bool IsNull(YamlNode node) =>
        node is YamlScalarNode { Style: ScalarStyle.Plain or ScalarStyle.Any, Value: null or "" or "~" or "null" or "Null" or "NULL" };

    public static string Describe(YamlNode node) => node switch
    {
        YamlMappingNode => "a mapping",
        YamlSequenceNode => "a list",
        _ when IsNull(node) => "nothing",
        YamlScalarNode s => $"\"{s.Value}\"",
        _ => "an alias",
    };

    public static string Join(string path, string name) => path.Length == 0 ? name : $"{path}.{name}";
}

/// <summary>
/// Reads one YAML mapping strictly: every key must be known. Keys Cilium has but we do not implement are
/// reported as "not supported yet" rather than ignored, because an ignored security rule silently widens access.
/// </summary>
internal sealed class MapReader
{
    private readonly ParseContext _ctx;
    private readonly Dictionary<string, (YamlScalarNode Key, YamlNode Value)> _entries = new(StringComparer.Ordinal);

    /// <param name="known">Accepted keys; null accepts every key (maps whose keys are data, like labels).</param>
    public MapReader(ParseContext ctx, YamlNode node, string path, IReadOnlyCollection<string>? known, IReadOnlyCollection<string>? unsupported = null)
    {
        _ctx = ctx;
        Path = path;
        if (node is not YamlMappingNode map)
            throw ctx.Error(node, path, $"expected a mapping, found {ParseContext.Describe(node)}");
        Node = map;
        foreach (var (k, v) in map.Children)
        {
            if (k is not YamlScalarNode { Value: { } name } key)
                throw ctx.Error(k, path, "mapping keys must be strings");
            var field = Field(name);
            if (unsupported?.Contains(name) == true)
                throw ctx.Error(key, field, $"{name} is not supported yet");
            if (known is not null && !known.Contains(name))
            {
                var close = known.FirstOrDefault(n => EditDistance(n.ToLowerInvariant(), name.ToLowerInvariant()) <= 2);
                throw ctx.Error(key, field, close is null
                    ? $"unknown field \"{name}\" (known here: {string.Join(", ", known)})"
                    : $"unknown field \"{name}\"; did you mean \"{close}\"?");
            }
            _entries[name] = (key, v);
        }
    }

    public YamlMappingNode Node { get; }

    public string Path { get; }

    public string Field(string name) => ParseContext.Join(Path, name);

    /// <summary>The value, or null when the key is absent or its value is null.</summary>
    public YamlNode? Get(string name) =>
        _entries.TryGetValue(name, out var e) && !ParseContext.IsNull(e.Value) ? e.Value : null;

    public YamlScalarNode? KeyNode(string name) => _entries.TryGetValue(name, out var e) ? e.Key : null;

    public string? String(string name)
    {
        var node = Get(name);
        if (node is null)
            return null;
        if (node is not YamlScalarNode { Value: { } value })
            throw _ctx.Error(node, Field(name), $"expected a string, found {ParseContext.Describe(node)}");
        return value;
    }

    /// <summary>A YAML boolean (true/false in any of the usual spellings), or null when absent.</summary>
    public bool? Bool(string name)
    {
        var node = Get(name);
        if (node is null)
            return null;
        return node is YamlScalarNode { Value: { } v } && bool.TryParse(v, out var b)
            ? b
            : throw _ctx.Error(node, Field(name), $"expected true or false, found {ParseContext.Describe(node)}");
    }

    public string RequiredString(string name, string? hint = null) =>
        String(name) ?? throw _ctx.Error(Node, Field(name), $"{Field(name)} is required{hint}");

    /// <summary>The items of a list with their paths, or null when absent.</summary>
    public IReadOnlyList<(YamlNode Node, string Path)>? List(string name)
    {
        var node = Get(name);
        if (node is null)
            return null;
        if (node is not YamlSequenceNode seq)
            throw _ctx.Error(node, Field(name), $"expected a list, found {ParseContext.Describe(node)}");
        return seq.Children.Select((child, i) => (child, $"{Field(name)}[{i}]")).ToArray();
    }

    public IReadOnlyList<string>? StringList(string name) =>
        List(name)?.Select(item => item.Node is YamlScalarNode { Value: { } v } && !ParseContext.IsNull(item.Node)
                ? v
                : throw _ctx.Error(item.Node, item.Path, $"expected a string, found {ParseContext.Describe(item.Node)}"))
            .ToArray();

    /// <summary>A string→string mapping (labels, annotations); reports problems at the offending key or value.</summary>
    public IReadOnlyList<(YamlScalarNode Key, string Value, YamlNode ValueNode)>? StringMap(string name)
    {
        var node = Get(name);
        if (node is null)
            return null;
        var reader = new MapReader(_ctx, node, Field(name), known: null);
        var result = new List<(YamlScalarNode, string, YamlNode)>();
        foreach (var (k, v) in reader.Node.Children)
        {
            var key = (YamlScalarNode)k;
            string value;
            if (ParseContext.IsNull(v))
                value = "";
            else if (v is YamlScalarNode { Value: { } s })
                value = s;
            else
                throw _ctx.Error(v, reader.Field(key.Value!), $"expected a string, found {ParseContext.Describe(v)}");
            result.Add((key, value, v));
        }
        return result;
    }

    // Levenshtein distance, for "did you mean" on misspelt field names.
    private static int EditDistance(string a, string b)
    {
        var row = Enumerable.Range(0, b.Length + 1).ToArray();
        for (var i = 1; i <= a.Length; i++)
        {
            var diagonal = row[0];
            row[0] = i;
            for (var j = 1; j <= b.Length; j++)
            {
                var above = row[j];
                row[j] = Math.Min(Math.Min(row[j] + 1, row[j - 1] + 1), diagonal + (a[i - 1] == b[j - 1] ? 0 : 1));
                diagonal = above;
            }
        }
        return row[b.Length];
    }
}
