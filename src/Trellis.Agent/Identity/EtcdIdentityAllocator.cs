using System.Globalization;
using Etcdserverpb;
using Google.Protobuf;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Trellis.Agent.State;
using Trellis.Agent.State.Etcd;
using Trellis.Policy;

namespace Trellis.Agent.Identity;

/// <summary>Cluster-wide identity allocation in etcd, after Cilium's kvstore allocator, with compare-and-swap
/// transactions instead of its per-key locks. Under the cluster's root ("/trellis/&lt;cluster&gt;/"):
/// <code>
/// identities/v1/id/&lt;id&gt;                = labels (Labels.Key)   the id is taken, by these labels    no lease
/// identities/v1/labels/&lt;L&gt;             = id                    these labels have this id           no lease
/// identities/v1/value/&lt;L&gt;/&lt;node&gt;      = id                    the node uses it                    the node's lease
/// </code>
/// L is the label set's canonical key, percent-encoded into one key segment ("-" for the empty set). Ids are
/// <see cref="ReservedIdentity.MinimumAllocated"/>..<see cref="ReservedIdentity.MaximumAllocated"/>, as node-local ones.
/// <list type="bullet">
/// <item>New id: one transaction creates all three keys if neither labels/&lt;L&gt; nor id/&lt;id&gt; exists. The first key makes
/// "same labels, same id" hold cluster-wide, the second "one id, one label set"; a node that loses the race reads again.</item>
/// <item>Existing id: the node's reference is put if labels/&lt;L&gt; and id/&lt;id&gt; still say the same (not collected meanwhile).</item>
/// <item>Collection: labels/&lt;L&gt; and id/&lt;id&gt; are deleted in one transaction only if no key is under value/&lt;L&gt;/ (a range
/// compare), so an id is never freed while a node takes a reference to it. A node releasing its last use collects at
/// once; <see cref="CollectGarbage"/> collects what dead nodes left (their references vanished with their lease).</item>
/// </list>
/// Thread-safe. <see cref="All"/> holds this node's identities and those <see cref="Refresh"/> or <see cref="SyncAsync"/>
/// loaded; allocation reads etcd, not that cache.</summary>
public sealed class EtcdIdentityAllocator : IIdentityManager
{
    private const string IdPrefix = "identities/v1/id";
    private const string LabelsPrefix = "identities/v1/labels";
    private const string RefPrefix = "identities/v1/value";
    private const int MaxAttempts = 64;

    private readonly EtcdStateStore _store;
    private readonly string _node;
    private readonly Random _random;
    private readonly ILogger _log;
    private readonly Lock _gate = new();
    private readonly Dictionary<uint, Labels> _known = new();
    private readonly Dictionary<Labels, uint> _held = new();
    private INodeLease _lease;

    public string Node => _node;
    /// <summary>How many allocation transactions failed their compare because another node changed the keys first.</summary>
    public long LostRaces => Interlocked.Read(ref _lostRaces);
    private long _lostRaces;

    public EtcdIdentityAllocator(EtcdStateStore store, string node, INodeLease lease, Random? random = null, ILogger? log = null)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(lease);
        if (string.IsNullOrEmpty(node) || node.Contains('/'))
            throw new ArgumentException($"node name '{node}' must be non-empty and without '/'", nameof(node));
        _store = store;
        _node = node;
        _lease = lease;
        _random = random ?? Random.Shared;
        _log = log ?? NullLogger.Instance;
    }

    private static string Segment(Labels labels) => labels.Count == 0 ? "-" : Uri.EscapeDataString(labels.Key);
    private static string IdKey(uint id) => $"{IdPrefix}/{id.ToString(CultureInfo.InvariantCulture)}";
    private static string LabelsKey(Labels labels) => $"{LabelsPrefix}/{Segment(labels)}";
    private static string RefsOf(Labels labels) => $"{RefPrefix}/{Segment(labels)}";
    private string RefKey(Labels labels) => $"{RefsOf(labels)}/{_node}";

    public uint GetOrAllocate(Labels labels, out bool created)
    {
        ArgumentNullException.ThrowIfNull(labels);
        lock (_gate)
        {
            if (_held.TryGetValue(labels, out var held))
            {
                created = false;
                return held;
            }
            for (int attempt = 1; attempt <= MaxAttempts; attempt++)
            {
                var existing = _store.Get(LabelsKey(labels));
                if (existing is not null)
                {
                    var id = ParseId(existing, LabelsKey(labels));
                    if (!TryReference(labels, id))
                    {
                        Interlocked.Increment(ref _lostRaces);
                        continue; // collected or changed since the read: read again
                    }
                    return Hold(labels, id, out created);
                }
                var candidate = PickFree(attempt);
                if (TryCreate(labels, candidate))
                {
                    _log.LogInformation("identity {Id} allocated for {{{Labels}}} by node {Node}", candidate, labels, _node);
                    return Hold(labels, candidate, out created);
                }
                Interlocked.Increment(ref _lostRaces);
            }
            throw new EtcdException($"identity allocation for {{{labels}}} lost {MaxAttempts} races in a row; " +
                $"if no other node is allocating this fast, check {_store.Root}{LabelsKey(labels)} and its id key for manual edits");
        }
    }

    private uint Hold(Labels labels, uint id, out bool created)
    {
        created = !_known.ContainsKey(id);
        _known[id] = labels;
        _held[labels] = id;
        return id;
    }

    // The node's reference, only if the id still belongs to these labels.
    private bool TryReference(Labels labels, uint id)
    {
        var txn = new TxnRequest
        {
            Compare = { ValueIs(LabelsKey(labels), Id(id)), ValueIs(IdKey(id), labels.Key) },
            Success = { PutRef(labels, id) },
        };
        return _store.Transact($"reference identity {id}", txn).Succeeded;
    }

    // All three keys, only if neither the labels nor the id exist.
    private bool TryCreate(Labels labels, uint id)
    {
        var txn = new TxnRequest
        {
            Compare = { Absent(LabelsKey(labels)), Absent(IdKey(id)) },
            Success = { Put(LabelsKey(labels), Id(id)), Put(IdKey(id), labels.Key), PutRef(labels, id) },
        };
        return _store.Transact($"allocate identity {id}", txn).Succeeded;
    }

    // The lowest free id first (ids stay small, as node-local ones); after a lost race one of the 16 lowest free ids at
    // random, so nodes racing for new identities stop picking the same one.
    private uint PickFree(int attempt)
    {
        var used = new SortedSet<uint>();
        foreach (var key in _store.ListKeys(IdPrefix))
            if (uint.TryParse(key.AsSpan(IdPrefix.Length + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var id)) used.Add(id);
        int skip = attempt == 1 ? 0 : _random.Next(16);
        uint candidate = ReservedIdentity.MinimumAllocated;
        foreach (var u in used)
        {
            if (u < candidate) continue;
            while (candidate < u)
            {
                if (skip-- == 0) return candidate;
                candidate++;
            }
            candidate = u + 1;
        }
        candidate += (uint)Math.Max(skip, 0);
        if (candidate > ReservedIdentity.MaximumAllocated)
            throw new EtcdException($"no free identity left in {ReservedIdentity.MinimumAllocated}..{ReservedIdentity.MaximumAllocated}");
        return candidate;
    }

    public void Release(uint id)
    {
        lock (_gate)
        {
            var labels = _held.FirstOrDefault(h => h.Value == id).Key;
            if (labels is null) return;
            _store.Delete(RefKey(labels));
            _held.Remove(labels);
            if (TryCollect(labels, id)) _known.Remove(id);
        }
    }

    // Frees the id if no node references it (and it still is this label set's).
    private bool TryCollect(Labels labels, uint id)
    {
        var refs = _store.RangeOf(RefsOf(labels));
        var txn = new TxnRequest
        {
            Compare =
            {
                ValueIs(LabelsKey(labels), Id(id)),
                ValueIs(IdKey(id), labels.Key),
                new Compare { Key = refs.From, RangeEnd = refs.End, Target = Compare.Types.CompareTarget.Create, Result = Compare.Types.CompareResult.Equal, CreateRevision = 0 },
            },
            Success = { Delete(LabelsKey(labels)), Delete(IdKey(id)) },
        };
        if (!_store.Transact($"collect identity {id}", txn).Succeeded) return false;
        _log.LogInformation("identity {Id} of {{{Labels}}} freed: no node uses it", id, labels);
        return true;
    }

    /// <summary>Frees every identity no node references any more (those of nodes whose lease expired). Safe to run on
    /// any node at any time: each id is freed by a transaction that checks again that nothing references it.
    /// Returns how many were freed.</summary>
    public int CollectGarbage()
    {
        var referenced = _store.ListKeys(RefPrefix).Select(k => k[(RefPrefix.Length + 1)..k.LastIndexOf('/')]).ToHashSet(StringComparer.Ordinal);
        int freed = 0;
        foreach (var (id, labels) in ReadAll())
        {
            if (referenced.Contains(Segment(labels))) continue;
            lock (_gate)
            {
                if (_held.ContainsKey(labels)) continue; // ours: our reference is on its way (or the lease was lost)
                if (!TryCollect(labels, id)) continue;
                _known.Remove(id);
                freed++;
            }
        }
        return freed;
    }

    /// <summary>Puts this node's references again under <paramref name="lease"/> (after the old lease was lost: its
    /// references vanished, and another node may have freed or even reused an id meanwhile). An id still allocated to its
    /// labels is referenced again; a freed one is allocated again with the same number if that is still free. Returns the
    /// label sets whose id could not be kept: they are no longer held, and the caller allocates them again (a new id).</summary>
    public IReadOnlyList<(Labels Labels, uint OldId)> Reattach(INodeLease lease)
    {
        ArgumentNullException.ThrowIfNull(lease);
        lock (_gate)
        {
            _lease = lease;
            var lost = new List<(Labels, uint)>();
            foreach (var (labels, id) in _held.ToList())
            {
                if (TryReference(labels, id) || TryCreate(labels, id)) continue;
                _held.Remove(labels);
                lost.Add((labels, id));
                _log.LogWarning("identity {Id} of {{{Labels}}} was freed and reused while node {Node} had no lease", id, labels, _node);
            }
            return lost;
        }
    }

    private List<(uint Id, Labels Labels)> ReadAll()
    {
        var all = new List<(uint, Labels)>();
        foreach (var (key, value) in _store.List(IdPrefix))
            all.Add((ParseId(key[(IdPrefix.Length + 1)..], key), Labels.FromKey(value)));
        return all;
    }

    /// <summary>Loads every identity of the cluster into <see cref="All"/>.</summary>
    public void Refresh()
    {
        var all = ReadAll();
        lock (_gate) Replace(all);
    }

    private void Replace(IEnumerable<(uint Id, Labels Labels)> all)
    {
        _known.Clear();
        foreach (var (id, labels) in all) _known[id] = labels;
        foreach (var (labels, id) in _held) _known[id] = labels;
    }

    /// <summary>Keeps <see cref="All"/> equal to the cluster's identities: a listing, then a watch from its revision
    /// (resumed across reconnects by the store) until <paramref name="cancellationToken"/>. <paramref name="changed"/> is
    /// called after each update.</summary>
    public async Task SyncAsync(Action? changed, CancellationToken cancellationToken)
    {
        var listing = await Task.Run(() => _store.ListWithRevision(IdPrefix), cancellationToken);
        lock (_gate) Replace(listing.Items.Select(kv => (ParseId(kv.Key[(IdPrefix.Length + 1)..], kv.Key), Labels.FromKey(kv.Value))));
        changed?.Invoke();
        await foreach (var e in _store.WatchAsync(IdPrefix, listing.Revision + 1, cancellationToken))
        {
            lock (_gate)
            {
                if (e is StateResync resync)
                    Replace(resync.Items.Select(kv => (ParseId(kv.Key[(IdPrefix.Length + 1)..], kv.Key), Labels.FromKey(kv.Value))));
                else if (e is StateChanges changes)
                {
                    foreach (var c in changes.Changes)
                    {
                        var id = ParseId(c.Key[(IdPrefix.Length + 1)..], c.Key);
                        if (c.Kind == StateChangeKind.Put) _known[id] = Labels.FromKey(c.Value!);
                        else if (!_held.ContainsValue(id)) _known.Remove(id);
                    }
                }
            }
            changed?.Invoke();
        }
    }

    public IReadOnlyCollection<IdentityInfo> All
    {
        get
        {
            lock (_gate) return _known.Select(kv => new IdentityInfo(kv.Key, kv.Value)).ToList();
        }
    }

    public Labels? LabelsOf(uint id)
    {
        lock (_gate) return _known.GetValueOrDefault(id);
    }

    private static uint ParseId(string text, string key) =>
        uint.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var id) && id is >= ReservedIdentity.MinimumAllocated and <= ReservedIdentity.MaximumAllocated
            ? id
            : throw new EtcdException($"etcd key '{key}': '{text}' is not an identity ({ReservedIdentity.MinimumAllocated}..{ReservedIdentity.MaximumAllocated})");

    private static string Id(uint id) => id.ToString(CultureInfo.InvariantCulture);

    private ByteString K(string stateKey) => _store.EtcdKey(stateKey);

    private Compare ValueIs(string key, string value) => new()
    {
        Key = K(key), Target = Compare.Types.CompareTarget.Value, Result = Compare.Types.CompareResult.Equal, Value = ByteString.CopyFromUtf8(value),
    };

    private Compare Absent(string key) => new()
    {
        Key = K(key), Target = Compare.Types.CompareTarget.Create, Result = Compare.Types.CompareResult.Equal, CreateRevision = 0,
    };

    private RequestOp Put(string key, string value) => new() { RequestPut = new PutRequest { Key = K(key), Value = ByteString.CopyFromUtf8(value) } };

    private RequestOp PutRef(Labels labels, uint id) => new()
    {
        RequestPut = new PutRequest { Key = K(RefKey(labels)), Value = ByteString.CopyFromUtf8(Id(id)), Lease = _lease.Id },
    };

    private RequestOp Delete(string key) => new() { RequestDeleteRange = new DeleteRangeRequest { Key = K(key) } };
}
