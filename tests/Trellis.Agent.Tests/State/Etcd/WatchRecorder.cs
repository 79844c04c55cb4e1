using System.Diagnostics;
using Trellis.Agent.State;

namespace Trellis.Agent.Tests.State.Etcd;

/// <summary>Consumes a watch in the background and keeps what it delivered, for tests to wait on and inspect.</summary>
internal sealed class WatchRecorder : IAsyncDisposable
{
    private readonly CancellationTokenSource _stop = new();
    private readonly List<StateWatchEvent> _events = [];
    private readonly Task _run;
    private Exception? _failure;

    public WatchRecorder(Func<CancellationToken, IAsyncEnumerable<StateWatchEvent>> watch)
    {
        _run = Task.Run(async () =>
        {
            try
            {
                await foreach (var e in watch(_stop.Token))
                    lock (_events) _events.Add(e);
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested) { }
            catch (Exception e)
            {
                _failure = e;
            }
        });
    }

    public IReadOnlyList<StateWatchEvent> Events
    {
        get { lock (_events) return _events.ToList(); }
    }

    public IReadOnlyList<StateChange> Changes => Events.OfType<StateChanges>().SelectMany(c => c.Changes).ToList();

    /// <summary>Waits until <paramref name="done"/> holds; fails with what was seen if the watch failed or time ran out.</summary>
    public async Task WaitForAsync(Func<WatchRecorder, bool> done, string what, TimeSpan? timeout = null)
    {
        var limit = timeout ?? TimeSpan.FromSeconds(60);
        var clock = Stopwatch.StartNew();
        while (!done(this))
        {
            if (_failure is not null) throw new Xunit.Sdk.XunitException($"the watch failed while waiting for {what}: {_failure}");
            if (clock.Elapsed > limit)
                throw new Xunit.Sdk.XunitException($"no {what} after {limit.TotalSeconds} s; the watch delivered: " +
                    string.Join(", ", Changes.Select(c => $"{c.Kind} {c.Key}@{c.Revision}")));
            await Task.Delay(50);
        }
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        await _run;
        _stop.Dispose();
        if (_failure is not null) throw new Xunit.Sdk.XunitException($"the watch failed: {_failure}");
    }
}

internal static class Eventually
{
    /// <summary>Polls <paramref name="condition"/> until it holds; fails naming <paramref name="what"/> after the timeout.</summary>
    public static async Task TrueAsync(Func<bool> condition, string what, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            if (clock.Elapsed > timeout) throw new Xunit.Sdk.XunitException($"{what}: still not so after {timeout.TotalSeconds} s");
            await Task.Delay(100);
        }
    }
}
