using Etcdserverpb;
using Grpc.Core;
using Microsoft.Extensions.Logging;

namespace Trellis.Agent.State.Etcd;

/// <summary>A granted etcd lease and the loop that keeps it alive: a keep-alive stream, one renewal every third of the
/// TTL (as etcd's own client does), the stream reopened on any member after a failure. The lease is lost only when etcd
/// answers that it no longer exists; while no member can be reached the loop keeps trying (etcd extends every lease by
/// its TTL when a new leader takes over, so a lease can outlive a short full outage).</summary>
internal sealed class EtcdLease : INodeLease
{
    private readonly EtcdConnection _conn;
    private readonly ILogger _log;
    private readonly CancellationTokenSource _stop = new();
    private readonly CancellationTokenSource _lost = new();
    private readonly Task _loop;
    private long _lastRenewedTicks;

    public long Id { get; }
    public TimeSpan Ttl { get; }
    public CancellationToken Lost => _lost.Token;
    public DateTimeOffset LastRenewed => new(Interlocked.Read(ref _lastRenewedTicks), TimeSpan.Zero);

    public EtcdLease(EtcdConnection conn, long id, TimeSpan ttl, ILogger log)
    {
        _conn = conn;
        _log = log;
        Id = id;
        Ttl = ttl;
        _lastRenewedTicks = DateTimeOffset.UtcNow.UtcTicks;
        _loop = Task.Run(() => KeepAliveAsync(_stop.Token));
    }

    private async Task KeepAliveAsync(CancellationToken stop)
    {
        var interval = Ttl / 3;
        var pause = TimeSpan.FromMilliseconds(100);
        while (!stop.IsCancellationRequested)
        {
            try
            {
                // A member that stops answering is given up on after one interval (the call is canceled).
                using var stream = CancellationTokenSource.CreateLinkedTokenSource(stop);
                using var call = _conn.Lease.LeaseKeepAlive(new CallOptions(EtcdConnection.RequireLeader, cancellationToken: stream.Token));
                while (true)
                {
                    stream.CancelAfter(interval);
                    await call.RequestStream.WriteAsync(new LeaseKeepAliveRequest { ID = Id }, stream.Token);
                    if (!await call.ResponseStream.MoveNext(stream.Token))
                        throw new EtcdException("the member ended the keep-alive stream");
                    if (call.ResponseStream.Current.TTL <= 0)
                    {
                        _log.LogError("etcd lease {Lease:x} expired (not renewed for {Ttl} s): its keys are gone", Id, Ttl.TotalSeconds);
                        _lost.Cancel();
                        return;
                    }
                    Interlocked.Exchange(ref _lastRenewedTicks, DateTimeOffset.UtcNow.UtcTicks);
                    pause = TimeSpan.FromMilliseconds(100);
                    stream.CancelAfter(Timeout.InfiniteTimeSpan);
                    await Task.Delay(interval, stop);
                }
            }
            catch (ObjectDisposedException)
            {
                return; // the store was disposed under the lease
            }
            catch (Exception e) when (!stop.IsCancellationRequested)
            {
                _log.LogWarning("etcd lease {Lease:x}: keep-alive failed ({Error}), last renewed {Ago:0.0} s ago; retrying (endpoints {Endpoints})",
                    Id, EtcdConnection.Describe(e), (DateTimeOffset.UtcNow - LastRenewed).TotalSeconds, string.Join(", ", _conn.Endpoints));
            }
            catch (Exception) when (stop.IsCancellationRequested)
            {
                return;
            }
            try { await Task.Delay(pause, stop); }
            catch (OperationCanceledException) { return; }
            pause = TimeSpan.FromTicks(Math.Min(pause.Ticks * 2, interval.Ticks));
        }
    }

    public void Revoke()
    {
        StopRenewing();
        try
        {
            _conn.Call($"revoke lease {Id:x}", o => _conn.Lease.LeaseRevoke(new LeaseRevokeRequest { ID = Id }, o));
        }
        catch (EtcdException e) when (e.InnerException is RpcException { StatusCode: StatusCode.NotFound })
        {
            // Already gone: expired, or revoked by an attempt whose answer was lost.
        }
    }

    private void StopRenewing()
    {
        if (_stop.IsCancellationRequested) return;
        _stop.Cancel();
        try { _loop.Wait(TimeSpan.FromSeconds(5)); }
        catch (AggregateException) { } // the loop ends by cancellation; anything else was logged
    }

    public void Dispose()
    {
        StopRenewing();
        _stop.Dispose();
    }
}
