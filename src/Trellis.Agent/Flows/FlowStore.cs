using System.Threading.Channels;
using Trellis.Datapath;

namespace Trellis.Agent.Flows;

/// <summary>Who an address belonged to when the flow was seen (shared, immutable: no allocation per flow).</summary>
public sealed record EndpointRef(string Namespace, string Pod, IReadOnlyList<string> Labels, uint Identity = 0);

public sealed record PolicyRef(string Name, string? Namespace);

public readonly record struct StoredFlow(FlowEvent Raw, DateTimeOffset Time, EndpointRef? Source, EndpointRef? Destination,
    IReadOnlyList<string>? SourceLabels, IReadOnlyList<string>? DestinationLabels, PolicyRef? Policy, string? Service = null)
{
    /// <summary>The proxy's HTTP record, for an L7 flow; null for the kernel's L3/L4 flows.</summary>
    public Trellis.Api.L7RecordDto? L7 { get; init; }
}

/// <summary>A bounded ring of recent flows plus live subscribers (follow). Nothing is dropped silently:
/// overwritten flows and flows a slow subscriber missed are counted.</summary>
public sealed class FlowStore
{
    private readonly StoredFlow[] _ring;
    private long _written;
    private readonly Lock _gate = new();
    private readonly List<Subscriber> _subscribers = new();

    public FlowStore(int capacity)
    {
        if (capacity < 1) throw new ArgumentOutOfRangeException(nameof(capacity), "flow store size must be at least 1");
        _ring = new StoredFlow[capacity];
    }

    public int Capacity => _ring.Length;
    public long Written => Interlocked.Read(ref _written);
    public int Count => (int)Math.Min(Written, _ring.Length);

    /// <summary>Called for every flow as it is added, on the flow monitor's thread (metrics count here). Must be
    /// quick and must not throw.</summary>
    public Action<StoredFlow>? OnAdd { get; set; }

    public void Add(in StoredFlow f)
    {
        OnAdd?.Invoke(f);
        lock (_gate)
        {
            _ring[_written % _ring.Length] = f;
            _written++;
            foreach (var s in _subscribers)
                if (!s.Channel.Writer.TryWrite(f))
                    s.Dropped++;
        }
    }

    /// <summary>The most recent flows, oldest first, at most <paramref name="last"/>.</summary>
    public List<StoredFlow> Recent(int last)
    {
        lock (_gate)
        {
            int n = (int)Math.Min(Math.Min(_written, _ring.Length), last);
            var result = new List<StoredFlow>(n);
            for (long i = _written - n; i < _written; i++)
                result.Add(_ring[i % _ring.Length]);
            return result;
        }
    }

    /// <summary>Recent flows and then every new one, atomically (none missed between the two).</summary>
    public (List<StoredFlow> Backlog, Subscriber Live) Subscribe(int last, int queue = 10_000)
    {
        lock (_gate)
        {
            var sub = new Subscriber(Channel.CreateBounded<StoredFlow>(new BoundedChannelOptions(queue)
            {
                FullMode = BoundedChannelFullMode.DropWrite,
                SingleReader = true,
            }), this);
            _subscribers.Add(sub);
            return (Recent(last), sub);
        }
    }

    internal void Unsubscribe(Subscriber s)
    {
        lock (_gate) _subscribers.Remove(s);
        s.Channel.Writer.TryComplete();
    }

    public sealed class Subscriber(Channel<StoredFlow> channel, FlowStore owner) : IDisposable
    {
        public Channel<StoredFlow> Channel { get; } = channel;
        public long Dropped { get; internal set; }
        public void Dispose() => owner.Unsubscribe(this);
    }
}
