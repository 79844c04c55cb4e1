using System.Text.Json;
using Trellis.Agent.State;
using Trellis.Policy;

namespace Trellis.Agent.Policy;

public sealed record StoredPolicy(uint Id, string Kind, string Name, string? Namespace, string FileName, string Yaml, DateTimeOffset AppliedAt);

public sealed record ActivePolicy(StoredPolicy Stored, PolicyResource Resource);

/// <summary>The applied policies, each persisted as its own YAML document (not the whole file it came in: a file of n
/// policies would be stored n times) and re-parsed at start.</summary>
public sealed class PolicyRepository
{
    private readonly IStateStore _store;
    private readonly Dictionary<string, ActivePolicy> _byKey = new();

    public PolicyRepository(IStateStore store)
    {
        _store = store;
        foreach (var (key, json) in store.List("policies"))
        {
            var s = JsonSerializer.Deserialize<StoredPolicy>(json)!;
            var res = ManifestParser.Parse(s.Yaml, s.FileName).OfType<PolicyResource>()
                .FirstOrDefault(p => p.Kind == s.Kind && p.Name == s.Name && p.Namespace == s.Namespace)
                ?? throw new InvalidOperationException($"stored policy {key} no longer parses to the same resource");
            // Stored by an earlier version with the whole file: keep only its document from now on.
            _byKey[Key(s.Kind, s.Namespace, s.Name)] = new ActivePolicy(s with { Yaml = ManifestText.DocumentAt(s.Yaml, res.Location.Line) }, res);
        }
    }

    private static string Key(string kind, string? ns, string name) => $"{kind}/{ns ?? "-"}/{name}";

    public IReadOnlyList<ActivePolicy> All => _byKey.Values.OrderBy(p => p.Stored.Id).ToList();

    /// <summary>Adds or replaces the policies of one file. Parsing already succeeded for all of them.</summary>
    public IReadOnlyList<ActivePolicy> Apply(IReadOnlyList<PolicyResource> policies, string fileName, string yaml, DateTimeOffset now)
    {
        var applied = new List<ActivePolicy>();
        uint next = _byKey.Count == 0 ? 1 : _byKey.Values.Max(p => p.Stored.Id) + 1;
        var documents = ManifestText.DocumentsAt(yaml, policies.Select(p => p.Location.Line).ToList());
        for (int i = 0; i < policies.Count; i++)
        {
            var p = policies[i];
            var key = Key(p.Kind, p.Namespace, p.Name);
            var id = _byKey.TryGetValue(key, out var old) ? old.Stored.Id : next++;
            var stored = new StoredPolicy(id, p.Kind, p.Name, p.Namespace, fileName, documents[i], now);
            _store.Put($"policies/{key}", JsonSerializer.Serialize(stored));
            var active = new ActivePolicy(stored, p);
            _byKey[key] = active;
            applied.Add(active);
        }
        return applied;
    }

    /// <summary>Deletes by name in a namespace (CiliumNetworkPolicy) or cluster-wide (namespace null).</summary>
    public ActivePolicy? Delete(string? ns, string name)
    {
        var hit = _byKey.Values.FirstOrDefault(p => p.Stored.Name == name && p.Stored.Namespace == ns);
        if (hit is null) return null;
        var key = Key(hit.Stored.Kind, hit.Stored.Namespace, hit.Stored.Name);
        _byKey.Remove(key);
        _store.Delete($"policies/{key}");
        return hit;
    }
}
