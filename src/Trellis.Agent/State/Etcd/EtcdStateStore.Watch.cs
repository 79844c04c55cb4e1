using System.Runtime.CompilerServices;
using Etcdserverpb;
using Grpc.Core;
using Microsoft.Extensions.Logging;

namespace Trellis.Agent.State.Etcd;

public sealed partial class EtcdStateStore
{
    private static readonly TimeSpan WatchBackoffMax = TimeSpan.FromSeconds(2);

    /// <summary>See <see cref="IClusterStateStore.WatchAsync"/>. One etcd watch stream at a time; after a failure
    /// (stream error or end, watch canceled by the member, e.g. because it lost its leader) a new stream, on whichever
    /// member answers, starts at the revision after the last change delivered. etcd never splits the events of one
    /// revision over two responses, so "after the last delivered revision" loses and repeats nothing. Progress
    /// notifications are not used to move that revision on (etcd 3.4 may send one ahead of events still queued): a
    /// watch on a quiet prefix that resumes after a compaction gets a <see cref="StateResync"/> it could have avoided,
    /// never a gap.</summary>
    public async IAsyncEnumerable<StateWatchEvent> WatchAsync(string prefix, long fromRevision,
        [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(fromRevision);
        var p = StateKey.NormalizePrefix(prefix);
        var (from, end) = RangeOf(p);
        long next = fromRevision; // the first revision not yet delivered (0 until the first stream says what "now" is)
        var pause = TimeSpan.FromMilliseconds(100);
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            Exception? failure = null;
            using (var call = _conn.Watch.Watch(new Grpc.Core.CallOptions(EtcdConnection.RequireLeader, cancellationToken: cancellationToken)))
            {
                var create = new WatchRequest { CreateRequest = new WatchCreateRequest { Key = from, RangeEnd = end, StartRevision = next } };
                failure = await TryAsync(() => call.RequestStream.WriteAsync(create, cancellationToken), cancellationToken);
                while (failure is null)
                {
                    WatchResponse? r = null;
                    failure = await TryAsync(async () =>
                    {
                        r = await call.ResponseStream.MoveNext(cancellationToken) ? call.ResponseStream.Current : null;
                    }, cancellationToken);
                    if (failure is not null) break;
                    if (r is null)
                    {
                        failure = new EtcdException("the member ended the watch stream");
                        break;
                    }
                    if (r.CompactRevision != 0)
                    {
                        // Revisions from `next` are gone: the prefix as it is now replaces them.
                        _log.LogWarning("etcd watch of '{Prefix}' from revision {Next}: compacted up to {Compact}; listing the prefix again",
                            p, next, r.CompactRevision);
                        StateListing? listing = null;
                        failure = await TryAsync(async () => listing = await Task.Run(() => ListWithRevision(p), cancellationToken), cancellationToken);
                        if (failure is not null) break; // the stream is reopened at `next` again, and compacted again
                        next = listing!.Revision + 1;
                        yield return new StateResync(listing.Items, r.CompactRevision, listing.Revision);
                        break; // a new stream from the listing's revision
                    }
                    if (r.Created)
                    {
                        if (next == 0) next = r.Header.Revision + 1;
                        pause = TimeSpan.FromMilliseconds(100); // a working stream: the next failure retries quickly
                    }
                    if (r.Canceled)
                    {
                        failure = new EtcdException($"the member canceled the watch: {r.CancelReason}");
                        break;
                    }
                    var changes = new List<StateChange>(r.Events.Count);
                    foreach (var e in r.Events)
                    {
                        if (e.Kv.ModRevision < next) continue; // already delivered (never expected; cheap to be sure)
                        changes.Add(e.Type == Mvccpb.Event.Types.EventType.Delete
                            ? new StateChange(StateChangeKind.Delete, StateKeyOf(e.Kv.Key), null, e.Kv.ModRevision)
                            : new StateChange(StateChangeKind.Put, StateKeyOf(e.Kv.Key), e.Kv.Value.ToStringUtf8(), e.Kv.ModRevision));
                    }
                    if (changes.Count == 0) continue;
                    next = changes[^1].Revision + 1;
                    yield return new StateChanges(changes, changes[^1].Revision);
                }
            }
            if (failure is null) continue;
            Interlocked.Increment(ref _watchReconnects);
            _log.LogWarning("etcd watch of '{Prefix}' broke ({Error}); reopening from revision {Next} in {Pause} ms (endpoints {Endpoints})",
                p, EtcdConnection.Describe(failure), next, (int)pause.TotalMilliseconds, string.Join(", ", Endpoints));
            await Task.Delay(pause, cancellationToken);
            pause = TimeSpan.FromTicks(Math.Min(pause.Ticks * 2, WatchBackoffMax.Ticks));
        }
    }

    // The failures after which the stream is reopened; the caller's cancellation is not one of them.
    private static async Task<Exception?> TryAsync(Func<Task> step, CancellationToken cancellationToken)
    {
        try
        {
            await step();
            return null;
        }
        catch (Exception e) when (cancellationToken.IsCancellationRequested && e is not OperationCanceledException)
        {
            throw new OperationCanceledException("the watch was canceled", e, cancellationToken);
        }
        catch (Exception e) when (e is RpcException or IOException or HttpRequestException or InvalidOperationException and not ObjectDisposedException)
        {
            return e;
        }
    }
}
