namespace Trellis.Policy;

/// <summary>
/// Maps identity label sets to numeric identities. Pure: the caller persists <see cref="Snapshot"/> and passes it
/// back in, so ids stay stable across restarts.
/// </summary>
public sealed class IdentityAllocator
{
    private readonly Dictionary<Labels, uint> _byLabels = new();
    private readonly SortedSet<uint> _used = new();

    public IdentityAllocator()
        : this(new Dictionary<Labels, uint>())
    {
    }

    public IdentityAllocator(IReadOnlyDictionary<Labels, uint> existing)
    {
        ArgumentNullException.ThrowIfNull(existing);
        foreach (var (labels, id) in existing)
        {
            if (id is < ReservedIdentity.MinimumAllocated or > ReservedIdentity.MaximumAllocated)
                throw new ArgumentException(
                    $"identity {id} for {{{labels}}} is outside the allocatable range {ReservedIdentity.MinimumAllocated}..{ReservedIdentity.MaximumAllocated}",
                    nameof(existing));
            if (!_used.Add(id))
                throw new ArgumentException($"identity {id} is allocated to more than one label set", nameof(existing));
            _byLabels.Add(labels, id);
        }
    }

    /// <summary>The existing id for these labels, or the lowest free id ≥ <see cref="ReservedIdentity.MinimumAllocated"/>.</summary>
    public uint GetOrAllocate(Labels labels)
    {
        ArgumentNullException.ThrowIfNull(labels);
        if (_byLabels.TryGetValue(labels, out var existing))
            return existing;

        var id = ReservedIdentity.MinimumAllocated;
        foreach (var used in _used)
        {
            // _used is sorted, so the first gap is the lowest free id.
            if (used != id)
                break;
            id++;
        }
        if (id > ReservedIdentity.MaximumAllocated)
            throw new InvalidOperationException("no free identity left");

        _used.Add(id);
        _byLabels.Add(labels, id);
        return id;
    }

    public bool TryGet(Labels labels, out uint id) => _byLabels.TryGetValue(labels, out id);

    /// <summary>Frees the id of these labels; returns false if they had none.</summary>
    public bool Release(Labels labels)
    {
        ArgumentNullException.ThrowIfNull(labels);
        if (!_byLabels.Remove(labels, out var id))
            return false;
        _used.Remove(id);
        return true;
    }

    /// <summary>A copy of all allocations, ordered by id.</summary>
    public IReadOnlyDictionary<Labels, uint> Snapshot =>
        _byLabels.OrderBy(p => p.Value).ToDictionary(p => p.Key, p => p.Value);
}
