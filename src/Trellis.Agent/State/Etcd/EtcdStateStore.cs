using Etcdserverpb;
using Google.Protobuf;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Trellis.Agent.State.Etcd;

/// <summary>The state store of a multi-node cluster: etcd (v3 API), every key under "/trellis/&lt;cluster&gt;/".
/// Same contract as <see cref="IStateStore"/>, with these differences, all allowed by it:
/// <list type="bullet">
/// <item>Durable and crash-safe by etcd's own rule: a call that returned was committed (written to disk) by a majority
/// of the members.</item>
/// <item><see cref="PutMany"/> and <see cref="DeleteMany"/> are atomic (one transaction) when the batch fits one:
/// at most <see cref="MaxOpsPerTransaction"/> keys (etcd's default --max-txn-ops) and about 1 MiB (under its default
/// --max-request-bytes). A larger batch is split into several transactions, each atomic; other calls on this instance
/// wait for the whole batch, as the contract asks (other nodes may see a split batch half done).</item>
/// <item>A failure is an <see cref="EtcdException"/> (an <see cref="IOException"/>); etcd unreachable for
/// <see cref="EtcdOptions.RequestTimeout"/> is an <see cref="EtcdUnavailableException"/> naming the endpoints.
/// A put or delete retried after a lost answer may have been applied by the lost attempt: the end state is the same,
/// but <see cref="Delete"/> may then return false (and <see cref="DeleteMany"/> count less) for a key it deleted.</item>
/// <item><see cref="List"/> is in ordinal key order (etcd's byte order).</item>
/// </list></summary>
public sealed partial class EtcdStateStore : IClusterStateStore, IDisposable
{
    public const int MaxOpsPerTransaction = 128;
    private const int MaxTransactionBytes = 1 << 20;
    private const int ListPageSize = 1000;

    private readonly EtcdConnection _conn;
    private readonly ILogger _log;
    private readonly ReaderWriterLockSlim _batchGate = new(LockRecursionPolicy.NoRecursion);
    private readonly List<EtcdLease> _leases = [];
    private long _watchReconnects;

    /// <summary>"/trellis/&lt;cluster&gt;/": the etcd key of state key K is Root + K.</summary>
    public string Root { get; }
    public IReadOnlyList<string> Endpoints => _conn.Endpoints;
    /// <summary>How often a watch stream of this store broke and was reopened (each one is also logged).</summary>
    public long WatchReconnects => Interlocked.Read(ref _watchReconnects);

    internal EtcdConnection Connection => _conn;

    public EtcdStateStore(EtcdOptions options, ILogger? log = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (string.IsNullOrEmpty(options.Cluster) || options.Cluster.Contains('/'))
            throw new ArgumentException($"cluster name '{options.Cluster}' must be non-empty and without '/'", nameof(options));
        Root = $"/trellis/{options.Cluster}/";
        _conn = new EtcdConnection(options);
        _log = log ?? NullLogger.Instance;
    }

    internal ByteString EtcdKey(string normalizedKey) => ByteString.CopyFromUtf8(Root + normalizedKey);

    internal string StateKeyOf(ByteString etcdKey)
    {
        var k = etcdKey.ToStringUtf8();
        return k.StartsWith(Root, StringComparison.Ordinal) ? k[Root.Length..] : throw new EtcdException($"etcd key '{k}' is outside {Root}");
    }

    /// <summary>The etcd key range [from, end) of every state key under <paramref name="normalizedPrefix"/> + '/'
    /// (every key of the cluster for an empty prefix).</summary>
    internal (ByteString From, ByteString End) RangeOf(string normalizedPrefix)
    {
        var from = normalizedPrefix.Length == 0 ? Root : Root + normalizedPrefix + "/";
        var bytes = System.Text.Encoding.UTF8.GetBytes(from);
        return (ByteString.CopyFrom(bytes), PrefixEnd(bytes));
    }

    /// <summary>The first key after every key starting with <paramref name="prefix"/>: the prefix with its last byte
    /// that is not 0xff incremented (etcd's clientv3.GetPrefixRangeEnd).</summary>
    internal static ByteString PrefixEnd(byte[] prefix)
    {
        var end = (byte[])prefix.Clone();
        for (int i = end.Length - 1; i >= 0; i--)
        {
            if (end[i] < 0xff)
            {
                end[i]++;
                return ByteString.CopyFrom(end, 0, i + 1);
            }
        }
        return ByteString.CopyFrom(0); // no end: every key from the prefix on
    }

    public string? Get(string key)
    {
        var k = EtcdKey(StateKey.Normalize(key, nameof(key)));
        using var _ = Shared();
        var r = _conn.Call($"get '{key}'", o => _conn.Kv.Range(new RangeRequest { Key = k }, o));
        return r.Kvs.Count == 0 ? null : r.Kvs[0].Value.ToStringUtf8();
    }

    public void Put(string key, string value)
    {
        ArgumentNullException.ThrowIfNull(value);
        var k = EtcdKey(StateKey.Normalize(key, nameof(key)));
        using var _ = Shared();
        _conn.Call($"put '{key}'", o => _conn.Kv.Put(new PutRequest { Key = k, Value = ByteString.CopyFromUtf8(value) }, o));
    }

    public void PutWithLease(string key, string value, INodeLease lease)
    {
        ArgumentNullException.ThrowIfNull(value);
        ArgumentNullException.ThrowIfNull(lease);
        var k = EtcdKey(StateKey.Normalize(key, nameof(key)));
        using var _ = Shared();
        _conn.Call($"put '{key}' with lease {lease.Id:x}",
            o => _conn.Kv.Put(new PutRequest { Key = k, Value = ByteString.CopyFromUtf8(value), Lease = lease.Id }, o));
    }

    public bool Delete(string key)
    {
        var k = EtcdKey(StateKey.Normalize(key, nameof(key)));
        using var _ = Shared();
        return _conn.Call($"delete '{key}'", o => _conn.Kv.DeleteRange(new DeleteRangeRequest { Key = k }, o)).Deleted > 0;
    }

    public IReadOnlyList<KeyValuePair<string, string>> List(string prefix) => ListWithRevision(prefix).Items;

    public StateListing ListWithRevision(string prefix)
    {
        var p = StateKey.NormalizePrefix(prefix);
        using var _ = Shared();
        return ListAt(p);
    }

    // Pages of ListPageSize keys, every page read at the revision of the first, so the listing is one consistent
    // snapshot however large the prefix.
    private StateListing ListAt(string normalizedPrefix)
    {
        var (from, end) = RangeOf(normalizedPrefix);
        var items = new List<KeyValuePair<string, string>>();
        long revision = 0;
        while (true)
        {
            var request = new RangeRequest { Key = from, RangeEnd = end, Limit = ListPageSize, Revision = revision };
            var r = _conn.Call($"list '{normalizedPrefix}'", o => _conn.Kv.Range(request, o));
            if (revision == 0) revision = r.Header.Revision;
            foreach (var kv in r.Kvs) items.Add(new(StateKeyOf(kv.Key), kv.Value.ToStringUtf8()));
            if (!r.More || r.Kvs.Count == 0) return new StateListing(items, revision);
            from = ByteString.CopyFrom([.. r.Kvs[^1].Key.Span, (byte)0]); // the next key after the last one
        }
    }

    public void PutMany(IReadOnlyList<KeyValuePair<string, string>> items)
    {
        ArgumentNullException.ThrowIfNull(items);
        // Validated and deduplicated first (a later duplicate wins; etcd refuses a key twice in one transaction).
        var writes = new Dictionary<string, string>(items.Count, StringComparer.Ordinal);
        foreach (var (key, value) in items)
            writes[StateKey.Normalize(key, nameof(items))] = value ?? throw new ArgumentNullException(nameof(items), $"null value for state key '{key}'");
        var ops = writes.Select(w => new RequestOp
        {
            RequestPut = new PutRequest { Key = EtcdKey(w.Key), Value = ByteString.CopyFromUtf8(w.Value) },
        }).ToList();
        RunBatch($"put of {ops.Count} keys", ops);
    }

    public int DeleteMany(IReadOnlyCollection<string> keys)
    {
        ArgumentNullException.ThrowIfNull(keys);
        var distinct = new HashSet<string>(keys.Count, StringComparer.Ordinal);
        foreach (var key in keys) distinct.Add(StateKey.Normalize(key, nameof(keys)));
        var ops = distinct.Select(k => new RequestOp { RequestDeleteRange = new DeleteRangeRequest { Key = EtcdKey(k) } }).ToList();
        return RunBatch($"delete of {ops.Count} keys", ops)
            .Sum(r => r.ResponseDeleteRange is { } d ? (int)d.Deleted : 0);
    }

    private List<ResponseOp> RunBatch(string what, List<RequestOp> ops)
    {
        var responses = new List<ResponseOp>(ops.Count);
        if (ops.Count == 0) return responses;
        var chunks = Chunk(ops);
        using var _ = chunks.Count == 1 ? Shared() : Exclusive();
        foreach (var chunk in chunks)
        {
            var txn = new TxnRequest { Success = { chunk } };
            var r = _conn.Call(chunks.Count == 1 ? what : $"{what} ({chunk.Count} in this transaction)", o => _conn.Kv.Txn(txn, o));
            responses.AddRange(r.Responses);
        }
        return responses;
    }

    private static List<List<RequestOp>> Chunk(List<RequestOp> ops)
    {
        var chunks = new List<List<RequestOp>> { new() };
        int bytes = 0;
        foreach (var op in ops)
        {
            int size = op.CalculateSize();
            if (chunks[^1].Count == MaxOpsPerTransaction || (chunks[^1].Count > 0 && bytes + size > MaxTransactionBytes))
            {
                chunks.Add([]);
                bytes = 0;
            }
            chunks[^1].Add(op);
            bytes += size;
        }
        return chunks;
    }

    /// <summary>One etcd transaction (compare-and-swap for callers that build their own, like the identity allocator).</summary>
    internal TxnResponse Transact(string what, TxnRequest txn)
    {
        using var _ = Shared();
        return _conn.Call(what, o => _conn.Kv.Txn(txn, o));
    }

    /// <summary>The etcd keys (no values) under a state prefix.</summary>
    internal IReadOnlyList<string> ListKeys(string prefix)
    {
        var p = StateKey.NormalizePrefix(prefix);
        var (from, end) = RangeOf(p);
        using var _ = Shared();
        var r = _conn.Call($"list the keys of '{p}'", o => _conn.Kv.Range(new RangeRequest { Key = from, RangeEnd = end, KeysOnly = true }, o));
        return r.Kvs.Select(kv => StateKeyOf(kv.Key)).ToList();
    }

    public INodeLease GrantLease(TimeSpan ttl)
    {
        if (ttl < TimeSpan.FromSeconds(1)) throw new ArgumentOutOfRangeException(nameof(ttl), ttl, "an etcd lease lasts at least 1 s");
        var seconds = (long)Math.Ceiling(ttl.TotalSeconds);
        var r = _conn.Call($"grant a lease of {seconds} s", o => _conn.Lease.LeaseGrant(new LeaseGrantRequest { TTL = seconds }, o));
        if (!string.IsNullOrEmpty(r.Error)) throw new EtcdException($"etcd refused a lease of {seconds} s: {r.Error}");
        // etcd raises a TTL below its minimum (1.5 election timeouts) and says so in the answer.
        var lease = new EtcdLease(_conn, r.ID, TimeSpan.FromSeconds(r.TTL), _log);
        lock (_leases) _leases.Add(lease);
        return lease;
    }

    private BatchLock Shared()
    {
        _batchGate.EnterReadLock();
        return new BatchLock(_batchGate, exclusive: false);
    }

    private BatchLock Exclusive()
    {
        _batchGate.EnterWriteLock();
        return new BatchLock(_batchGate, exclusive: true);
    }

    private readonly struct BatchLock(ReaderWriterLockSlim gate, bool exclusive) : IDisposable
    {
        public void Dispose()
        {
            if (exclusive) gate.ExitWriteLock();
            else gate.ExitReadLock();
        }
    }

    /// <summary>Stops renewing this store's leases (without revoking them: their keys expire after the TTL) and closes
    /// the connection.</summary>
    public void Dispose()
    {
        lock (_leases)
        {
            foreach (var lease in _leases) lease.Dispose();
            _leases.Clear();
        }
        _conn.Dispose();
        _batchGate.Dispose();
    }
}
