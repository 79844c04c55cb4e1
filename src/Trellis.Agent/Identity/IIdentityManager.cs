using Trellis.Policy;

namespace Trellis.Agent.Identity;

/// <summary>Numeric security identities for identity label sets, as the node agent uses them: node-local
/// (<see cref="IdentityManager"/>, over the embedded store) or cluster-wide (<see cref="EtcdIdentityAllocator"/>,
/// the same label set gets the same number on every node).</summary>
public interface IIdentityManager
{
    /// <summary>The identity of <paramref name="labels"/>, allocated if it has none, and referenced by this node until
    /// <see cref="Release"/>. <paramref name="created"/>: the identity was not in <see cref="All"/> before.</summary>
    uint GetOrAllocate(Labels labels, out bool created);

    /// <summary>This node no longer uses <paramref name="id"/>; it is freed once nothing references it.</summary>
    void Release(uint id);

    /// <summary>The identities this node knows.</summary>
    IReadOnlyCollection<IdentityInfo> All { get; }

    Labels? LabelsOf(uint id);
}
