using System.Net;
using System.Text.Json;
using System.Text.Json.Serialization;
using Trellis.Policy;

namespace Trellis.Proxy.Node;

/// <summary>
/// The file the agent hands the node's proxy its rules in: every local endpoint whose policy has HTTP rules, with
/// the policy entries the L7 table needs (TCP keys of the directions that have HTTP rules). The agent writes it
/// atomically (temp file + rename) after each policy or endpoint change; the proxy reloads it. A file, not a
/// connection, so the proxy keeps enforcing the last rules while the agent restarts.
/// </summary>
public static class ProxyPolicyFile
{
    public const int Version = 1;

    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.CamelCase) },
    };

    /// <summary>The name of the file the proxy writes the generation it has loaded to (next to the policy file).</summary>
    public const string LoadedFileName = "loaded";

    /// <param name="generation">Increases with every change; the proxy acknowledges it in <see cref="LoadedFileName"/>.</param>
    public static string Serialize(IEnumerable<L7Endpoint> endpoints, long generation = 0)
    {
        var list = new List<EndpointDto>();
        foreach (var e in endpoints)
        {
            var directions = e.Policy.HttpRules.Keys.Select(k => k.Direction).ToHashSet();
            list.Add(new EndpointDto(
                e.Address.ToString(),
                e.Identity,
                e.Policy.IngressEnforced,
                e.Policy.EgressEnforced,
                e.Policy.Entries.Where(kv => kv.Key.Proto == L4Proto.Tcp && directions.Contains(kv.Key.Direction))
                    .OrderBy(kv => kv.Key).Select(kv => new EntryDto(Key(kv.Key), kv.Value.PolicyId, kv.Value.Deny)).ToList(),
                e.Policy.HttpRules.OrderBy(kv => kv.Key).Select(kv => new HttpKeyDto(Key(kv.Key),
                    kv.Value.Select(r => new RuleDto(r.Method, r.Path, r.Host,
                        r.Headers.Select(h => new HeaderDto(h.Name, h.Value)).ToList())).ToList())).ToList(),
                e.Policy.VisibilityOnly.Count == 0 ? null : e.Policy.VisibilityOnly.Order().Select(Key).ToList()));
        }
        return JsonSerializer.Serialize(new FileDto(Version, generation, list.OrderBy(e => e.Address, StringComparer.Ordinal).ToList()), Json);
    }

    /// <summary>Reads a file written by <see cref="Serialize"/>; throws <see cref="FormatException"/> naming what is wrong.</summary>
    public static List<L7Endpoint> Parse(string json, string source) => Parse(json, source, out _);

    public static List<L7Endpoint> Parse(string json, string source, out long generation)
    {
        FileDto? file;
        try
        {
            file = JsonSerializer.Deserialize<FileDto>(json, Json);
        }
        catch (JsonException e)
        {
            throw new FormatException($"{source}: not a proxy policy file: {e.Message}", e);
        }
        if (file is null || file.Version != Version || file.Endpoints is null)
            throw new FormatException($"{source}: version must be {Version} with an endpoints list (written by a different agent version?)");
        generation = file.Generation;
        var result = new List<L7Endpoint>(file.Endpoints.Count);
        foreach (var e in file.Endpoints)
        {
            if (!IPAddress.TryParse(e.Address, out var address))
                throw new FormatException($"{source}: endpoint address '{e.Address}' is not an IP address");
            var entries = (e.Entries ?? []).ToDictionary(x => Key(x.Key), x => new PolicyEntry(x.PolicyId, x.Deny));
            var http = (e.Http ?? []).ToDictionary(x => Key(x.Key), x => (IReadOnlyList<HttpRule>)(x.Rules ?? [])
                .Select(r => new HttpRule(r.Method, r.Path, r.Host, (r.Headers ?? []).Select(h => new HeaderMatch(h.Name, h.Value)).ToArray()))
                .ToArray());
            result.Add(new L7Endpoint(address, e.Identity, new EndpointPolicy(e.IngressEnforced, e.EgressEnforced, entries)
            {
                HttpRules = http,
                VisibilityOnly = (e.Visibility ?? []).Select(Key).ToHashSet(),
            }));
        }
        return result;
    }

    private static KeyDto Key(PolicyKey k) => new(k.Identity, k.Direction, (byte)k.Proto, k.Port, k.EndPort);

    private static PolicyKey Key(KeyDto k) => new(k.Identity, k.Direction, (L4Proto)k.Proto, k.Port, k.EndPort);

    private sealed record FileDto(int Version, long Generation, List<EndpointDto>? Endpoints);

    private sealed record EndpointDto(string Address, uint Identity, bool IngressEnforced, bool EgressEnforced, List<EntryDto>? Entries,
        List<HttpKeyDto>? Http, List<KeyDto>? Visibility);

    private sealed record KeyDto(uint Identity, Direction Direction, byte Proto, ushort Port, ushort EndPort);

    private sealed record EntryDto(KeyDto Key, uint PolicyId, bool Deny);

    private sealed record HttpKeyDto(KeyDto Key, List<RuleDto>? Rules);

    private sealed record RuleDto(string? Method, string? Path, string? Host, List<HeaderDto>? Headers);

    private sealed record HeaderDto(string Name, string? Value);
}
