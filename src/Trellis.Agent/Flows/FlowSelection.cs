using System.Runtime.CompilerServices;
using Trellis.Api;

namespace Trellis.Agent.Flows;

/// <summary>
/// Reads what a <see cref="FlowsRequest"/> asks for from the flow store: the backlog (the last N flows that pass the
/// filters and the time window, or the first N with <c>oldestFirst</c>), then, with Follow, every new flow that passes.
/// With Follow the backlog and the live part come from one <see cref="FlowStore.Subscribe"/>, so no flow is missed or
/// repeated between the two. Shared by the JSON API (<c>/v1/flows</c>) and the Hubble observer (GetFlows).
/// </summary>
public sealed class FlowSelection : IDisposable
{
    private readonly FlowStore.Subscriber? _live;
    private readonly Func<StoredFlow, FlowDto?> _pass;

    /// <summary>The flows already in the store that were asked for, oldest first.</summary>
    public IReadOnlyList<FlowDto> Backlog { get; }

    /// <summary>Whether new flows follow (<see cref="FollowAsync"/>).</summary>
    public bool Follows => _live is not null;

    /// <summary>How many new flows this reader missed because it read too slowly (its queue was full).</summary>
    public long Missed => _live?.Dropped ?? 0;

    private FlowSelection(IReadOnlyList<FlowDto> backlog, FlowStore.Subscriber? live, Func<StoredFlow, FlowDto?> pass)
    {
        Backlog = backlog;
        _live = live;
        _pass = pass;
    }

    /// <summary>Null when the request is well-formed, else what is wrong (naming the field).</summary>
    public static string? Validate(FlowsRequest r)
    {
        if (r.Last < 0) return $"last: {r.Last} is not a non-negative number";
        if (r.Follow && r.Until is not null) return "until cannot be combined with follow (a followed stream has no end)";
        if (r.Since is { } s0 && r.Until is { } u0 && s0 > u0) return $"since ({s0:O}) is after until ({u0:O})";
        foreach (var (filter, i) in (r.Whitelist ?? []).Select((x, i) => (x, i)).Concat((r.Blacklist ?? []).Select((x, i) => (x, i))))
            if (FlowFilters.Validate(filter) is { } problem)
                return $"filter {i}: {problem}";
        return null;
    }

    /// <summary>Takes the backlog (and subscribes, with Follow). <paramref name="passes"/> replaces the request's
    /// whitelist/blacklist test when given (the time window always applies); <paramref name="oldestFirst"/> keeps the
    /// first <see cref="FlowsRequest.Last"/> passing flows instead of the last ones. The request must be valid
    /// (<see cref="Validate"/>).</summary>
    public static FlowSelection Open(FlowStore store, string node, FlowsRequest r, Func<FlowDto, bool>? passes = null, bool oldestFirst = false)
    {
        passes ??= dto => FlowFilters.Passes(dto, r.Whitelist, r.Blacklist);
        FlowDto? Pass(StoredFlow s)
        {
            if (r.Since is { } since && s.Time < since) return null;
            if (r.Until is { } until && s.Time > until) return null;
            var dto = FlowConverter.ToDto(s, node);
            return passes(dto) ? dto : null;
        }

        List<StoredFlow> stored;
        FlowStore.Subscriber? live = null;
        if (r.Follow)
            (stored, live) = store.Subscribe(store.Capacity);
        else
            stored = store.Recent(store.Capacity);
        // "last N" counts passing flows.
        var matching = new List<FlowDto>();
        foreach (var s in stored)
            if (Pass(s) is { } dto) matching.Add(dto);
        IReadOnlyList<FlowDto> backlog = oldestFirst
            ? matching.Take(r.Last).ToList()
            : matching.Skip(Math.Max(0, matching.Count - r.Last)).ToList();
        return new FlowSelection(backlog, live, Pass);
    }

    /// <summary>Every new flow that passes, until <paramref name="ct"/> is cancelled (which ends the enumeration
    /// with <see cref="OperationCanceledException"/>). Empty without Follow.</summary>
    public async IAsyncEnumerable<FlowDto> FollowAsync([EnumeratorCancellation] CancellationToken ct)
    {
        if (_live is null) yield break;
        await foreach (var s in _live.Channel.Reader.ReadAllAsync(ct))
            if (_pass(s) is { } dto)
                yield return dto;
    }

    public void Dispose() => _live?.Dispose();
}
