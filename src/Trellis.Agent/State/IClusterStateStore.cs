namespace Trellis.Agent.State;

/// <summary>What a store shared by the nodes of a cluster (etcd) adds to <see cref="IStateStore"/>: revisions to
/// list-then-watch without a gap, prefix watches that survive a broken connection, and a node lease whose keys vanish
/// when the node stops renewing it. The embedded store has none of this and does not implement it.
/// Keys follow the <see cref="IStateStore"/> rules; a revision is the store-wide counter every write increments.</summary>
public interface IClusterStateStore : IStateStore
{
    /// <summary><see cref="IStateStore.List"/> and the revision it was read at, in one read: watch from
    /// <see cref="StateListing.Revision"/> + 1 to see every later change exactly once.</summary>
    StateListing ListWithRevision(string prefix);

    /// <summary>Every change under <paramref name="prefix"/> + '/' from revision <paramref name="fromRevision"/> on
    /// (0: from now), in revision order, each once. A broken stream (member killed, etcd restarted) is reopened from
    /// the revision after the last one delivered, for as long as <paramref name="cancellationToken"/> allows: no change
    /// is lost or repeated across reconnects. When the revisions to resume from were compacted away, the next item is a
    /// <see cref="StateResync"/> (the whole prefix now), and changes follow from there.</summary>
    IAsyncEnumerable<StateWatchEvent> WatchAsync(string prefix, long fromRevision, CancellationToken cancellationToken);

    /// <summary>Grants a lease of <paramref name="ttl"/> and keeps it alive in the background until the lease is
    /// disposed or lost. Keys put with it (<see cref="PutWithLease"/>) are deleted by the store when it expires: a node
    /// that dies (or is cut off for longer than the TTL) disappears with its keys.</summary>
    INodeLease GrantLease(TimeSpan ttl);

    /// <summary>Like <see cref="IStateStore.Put"/>, but the key lives only as long as <paramref name="lease"/>.</summary>
    void PutWithLease(string key, string value, INodeLease lease);
}

public sealed record StateListing(IReadOnlyList<KeyValuePair<string, string>> Items, long Revision);

public enum StateChangeKind { Put, Delete }

/// <summary>One key changed at <paramref name="Revision"/>; <paramref name="Value"/> is null for a delete.</summary>
public sealed record StateChange(StateChangeKind Kind, string Key, string? Value, long Revision);

public abstract record StateWatchEvent(long Revision);

/// <summary>Changes of one or more whole revisions (the changes of one transaction are never split), in order;
/// <see cref="StateWatchEvent.Revision"/> is the last one's.</summary>
public sealed record StateChanges(IReadOnlyList<StateChange> Changes, long Revision) : StateWatchEvent(Revision);

/// <summary>The revisions to resume from were compacted (<paramref name="CompactRevision"/>): here is the whole prefix
/// as of <see cref="StateWatchEvent.Revision"/> instead. A consumer replaces its view with it: keys it had that are not
/// in <paramref name="Items"/> were deleted meanwhile.</summary>
public sealed record StateResync(IReadOnlyList<KeyValuePair<string, string>> Items, long CompactRevision, long Revision)
    : StateWatchEvent(Revision);

/// <summary>A lease held by this node, renewed in the background. Disposing stops renewing without revoking (its keys
/// expire after the TTL, as if the node had died); <see cref="Revoke"/> deletes them now.</summary>
public interface INodeLease : IDisposable
{
    long Id { get; }
    TimeSpan Ttl { get; }
    /// <summary>Canceled when the store says the lease no longer exists (it expired while this node could not renew
    /// it): its keys are gone, and the owner must grant a new lease and put them again.</summary>
    CancellationToken Lost { get; }
    /// <summary>When the store last confirmed the lease.</summary>
    DateTimeOffset LastRenewed { get; }
    void Revoke();
}
