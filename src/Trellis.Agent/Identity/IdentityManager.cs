using System.Collections.Frozen;
using System.Text.Json;
using Trellis.Agent.State;
using Trellis.Policy;

namespace Trellis.Agent.Identity;

public sealed record StoredIdentity(uint Id, Dictionary<string, string> Labels);

/// <summary>Numeric security identities, one per distinct identity label set, persisted so the same
/// label set keeps its number across agent restarts. Identities no endpoint uses are released.</summary>
public sealed class IdentityManager : IIdentityManager
{
    private readonly IStateStore _store;
    private readonly IdentityAllocator _allocator;
    private readonly Dictionary<uint, Labels> _byId = new();

    public IdentityManager(IStateStore store)
    {
        _store = store;
        var existing = new Dictionary<Labels, uint>();
        foreach (var (_, json) in store.List("identities"))
        {
            var s = JsonSerializer.Deserialize<StoredIdentity>(json)!;
            var labels = new Labels(s.Labels);
            existing[labels] = s.Id;
            _byId[s.Id] = labels;
        }
        _allocator = new IdentityAllocator(existing);
    }

    /// <summary>Not thread-safe: the caller (the node's state lock) serializes.</summary>
    public uint GetOrAllocate(Labels labels, out bool created)
    {
        var id = _allocator.GetOrAllocate(labels);
        created = !_byId.ContainsKey(id);
        if (created)
        {
            _byId[id] = labels;
            _store.Put($"identities/{id}", JsonSerializer.Serialize(new StoredIdentity(id, labels.ToDictionary())));
        }
        return id;
    }

    public void Release(uint id)
    {
        if (!_byId.Remove(id, out var labels)) return;
        _allocator.Release(labels);
        _store.Delete($"identities/{id}");
    }

    public IReadOnlyCollection<IdentityInfo> All => _byId.Select(kv => new IdentityInfo(kv.Key, kv.Value)).ToList();

    public Labels? LabelsOf(uint id) => _byId.GetValueOrDefault(id);

    public FrozenDictionary<uint, Labels> Snapshot() => _byId.ToFrozenDictionary();
}
