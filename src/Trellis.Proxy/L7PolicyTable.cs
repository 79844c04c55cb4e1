using System.Collections.Frozen;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Http;
using Trellis.Policy;

namespace Trellis.Proxy;

/// <summary>One local endpoint as the L7 policy table sees it: its IPv4 address, identity and compiled policy.</summary>
public sealed record L7Endpoint(IPAddress Address, uint Identity, EndpointPolicy Policy);

/// <summary>
/// The proxy's <see cref="IL7Policy"/>: an immutable snapshot of the HTTP rules of every local endpoint, built once
/// per policy/endpoint change (the agent rebuilds it and swaps it in through <see cref="SwappableL7Policy"/>).
/// <para>
/// A request is checked against both sides that can restrict it: the egress rules of the client endpoint (when the
/// client is local) for (destination identity, port), and the ingress rules of the destination endpoint (when the
/// destination is local) for (client identity, port). Every side that has L7 rules for the flow must allow the
/// request; a side without L7 rules for it does not restrict. Rule lists are compiled once into
/// <see cref="HttpRuleMatcher"/>s shared by every key with the same rules. Thread-safe; no locks, no I/O.
/// </para>
/// </summary>
public sealed class L7PolicyTable : IL7Policy
{
    /// <summary>The reason of a request on a flow that no side has L7 rules for.</summary>
    public const string NoPolicyReason = "no L7 policy for this flow";

    /// <summary>No endpoint: every request is denied (fail closed).</summary>
    public static readonly L7PolicyTable Empty = new([], _ => ReservedIdentity.Unknown);

    [ThreadStatic]
    private static List<KeyValuePair<string, string>>? t_headers;

    private readonly FrozenDictionary<uint, EndpointTable> _endpoints;
    private readonly Func<IPAddress, uint> _identityOf;

    /// <param name="endpoints">The node's local endpoints (IPv4 addresses, each at most once).</param>
    /// <param name="identityOf">
    /// The identity of a non-local destination address (the agent answers from its ipcache); called on the request
    /// path, only when the client is local and has egress L7 rules, so it must be fast and non-blocking.
    /// </param>
    public L7PolicyTable(IEnumerable<L7Endpoint> endpoints, Func<IPAddress, uint> identityOf)
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        ArgumentNullException.ThrowIfNull(identityOf);
        _identityOf = identityOf;

        var matchers = new Dictionary<RuleSet, HttpRuleMatcher>();
        var tables = new Dictionary<uint, EndpointTable>();
        foreach (var endpoint in endpoints)
        {
            ArgumentNullException.ThrowIfNull(endpoint);
            if (KeyOf(endpoint.Address) is not { } key || key == 0)
                throw new ArgumentException($"endpoint address {endpoint.Address} is not a unicast IPv4 address", nameof(endpoints));
            var table = new EndpointTable(
                endpoint.Identity,
                DirectionTable.Build(endpoint.Policy, Direction.Ingress, matchers),
                DirectionTable.Build(endpoint.Policy, Direction.Egress, matchers));
            if (!tables.TryAdd(key, table))
                throw new ArgumentException($"endpoint address {endpoint.Address} is listed twice", nameof(endpoints));
        }
        _endpoints = tables.ToFrozenDictionary();
        MatcherCount = matchers.Count;
    }

    /// <summary>How many distinct rule lists were compiled (one <see cref="HttpRuleMatcher"/> each).</summary>
    public int MatcherCount { get; }

    /// <summary>How many local endpoints the table knows.</summary>
    public int EndpointCount => _endpoints.Count;

    public Decision Check(L7Request request)
    {
        var destination = request.Destination;
        var port = (ushort)destination.Port;
        _endpoints.TryGetValue(KeyOf(destination.Address) ?? 0, out var server);
        EndpointTable? client = null;
        if (request.Client is { } clientAddress)
            _endpoints.TryGetValue(KeyOf(clientAddress.Address) ?? 0, out client);

        // Ingress rules of the local destination for (client identity, port).
        var ingress = server?.Ingress?.Lookup(request.ClientIdentity, port);
        // Egress rules of the local client for (destination identity, port).
        HttpRuleMatcher? egress = null;
        if (client?.Egress is { } egressTable)
        {
            var destinationIdentity = server?.Identity ?? _identityOf(destination.Address);
            egress = egressTable.Lookup(destinationIdentity, port);
        }

        if (ingress is null && egress is null)
        {
            // Only flows with L7 rules are redirected to the proxy, so this one should never have got here (stale
            // snapshot, or a redirect this table does not know about): fail closed rather than forward unchecked.
            return Decision.Deny(NoPolicyReason);
        }

        var method = request.Method;
        var path = request.Query.Length == 0 ? request.Path : string.Concat(request.Path, request.Query); // Envoy's :path
        var host = request.Host.Length == 0 ? null : request.Host; // Host / :authority as sent; empty = absent
        var headers = t_headers ??= new List<KeyValuePair<string, string>>(32);
        try
        {
            Flatten(request.Headers, headers);
            if (egress is not null && !egress.Allows(method, path, host, headers))
                return Decision.Deny();
            if (ingress is not null && !ingress.Allows(method, path, host, headers))
                return Decision.Deny();
            return Decision.Allow;
        }
        finally
        {
            headers.Clear(); // do not keep the request's strings alive
            if (headers.Capacity > 256)
                t_headers = null;
        }
    }

    /// <summary>
    /// The matcher enforced on <paramref name="endpoint"/>'s <paramref name="direction"/> for a connection with
    /// <paramref name="peer"/> on TCP <paramref name="port"/>; null when L7 does not restrict it (or the endpoint is unknown).
    /// </summary>
    internal HttpRuleMatcher? MatcherFor(IPAddress endpoint, Direction direction, uint peer, ushort port)
    {
        if (KeyOf(endpoint) is not { } key || !_endpoints.TryGetValue(key, out var table))
            return null;
        var directionTable = direction == Direction.Ingress ? table.Ingress : table.Egress;
        return directionTable?.Lookup(peer, port);
    }

    /// <summary>Every header line as one pair per value, without LINQ (Allows wants a collection of pairs).</summary>
    private static void Flatten(IHeaderDictionary source, List<KeyValuePair<string, string>> target)
    {
        foreach (var header in source)
        {
            foreach (var value in header.Value)
            {
                if (value is not null)
                    target.Add(new KeyValuePair<string, string>(header.Key, value));
            }
        }
    }

    /// <summary>An IPv4 address (IPv4-mapped IPv6 included) as a host-order uint; null otherwise.</summary>
    private static uint? KeyOf(IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6)
            address = address.MapToIPv4();
        if (address.AddressFamily != AddressFamily.InterNetwork)
            return null;
        Span<byte> bytes = stackalloc byte[4];
        address.TryWriteBytes(bytes, out _);
        // Never 0 for a real endpoint: 0.0.0.0 is not an endpoint address, so 0 doubles as "no key" in Check.
        return (uint)bytes[0] << 24 | (uint)bytes[1] << 16 | (uint)bytes[2] << 8 | bytes[3];
    }

    private sealed record EndpointTable(uint Identity, DirectionTable? Ingress, DirectionTable? Egress);

    /// <summary>
    /// One direction of one endpoint: the TCP port space cut into the intervals on which the covering policy keys do
    /// not change, each with the matcher per peer identity (null = no L7 restriction). Only the intervals some L7 key
    /// covers are kept. Peers without a key of their own share <see cref="Slot.Other"/> (the "any peer" keys only).
    /// </summary>
    private sealed class DirectionTable
    {
        private readonly int[] _starts;
        private readonly int[] _ends;
        private readonly Slot[] _slots;

        private DirectionTable(int[] starts, int[] ends, Slot[] slots)
        {
            _starts = starts;
            _ends = ends;
            _slots = slots;
        }

        public HttpRuleMatcher? Lookup(uint peer, ushort port)
        {
            var i = Array.BinarySearch(_starts, port);
            if (i < 0)
                i = ~i - 1;
            if (i < 0 || port > _ends[i])
                return null;
            var slot = _slots[i];
            return slot.ByPeer is not null && slot.ByPeer.TryGetValue(peer, out var matcher) ? matcher : slot.Other;
        }

        public static DirectionTable? Build(EndpointPolicy policy, Direction direction, Dictionary<RuleSet, HttpRuleMatcher> matchers)
        {
            ArgumentNullException.ThrowIfNull(policy);
            var l7Keys = new List<PolicyKey>();
            foreach (var key in policy.HttpRules.Keys)
            {
                if (key.Direction == direction && key.Proto == L4Proto.Tcp)
                    l7Keys.Add(key);
            }
            if (l7Keys.Count == 0)
                return null;

            // Only TCP keys of this direction can change HttpRulesFor's answer (it skips protocol-any keys).
            var wildcard = new List<KeyValuePair<PolicyKey, PolicyEntry>>();
            var byIdentity = new Dictionary<uint, List<KeyValuePair<PolicyKey, PolicyEntry>>>();
            var boundaries = new SortedSet<int>();
            foreach (var pair in policy.Entries)
            {
                var key = pair.Key;
                if (key.Direction != direction || key.Proto != L4Proto.Tcp)
                    continue;
                if (key.Identity == ReservedIdentity.Unknown)
                    wildcard.Add(pair);
                else if (byIdentity.TryGetValue(key.Identity, out var list))
                    list.Add(pair);
                else
                    byIdentity.Add(key.Identity, [pair]);
                boundaries.Add(key.Port);
                boundaries.Add(key.EndPort + 1);
            }
            foreach (var key in l7Keys)
            {
                boundaries.Add(key.Port);
                boundaries.Add(key.EndPort + 1);
            }

            // Elementary intervals [b_i, b_{i+1} - 1] that some L7 key covers.
            var points = boundaries.ToArray();
            var starts = new List<int>();
            var ends = new List<int>();
            for (var i = 0; i + 1 < points.Length; i++)
            {
                var start = points[i];
                if (l7Keys.Exists(k => start >= k.Port && start <= k.EndPort))
                {
                    starts.Add(start);
                    ends.Add(points[i + 1] - 1);
                }
            }

            // Decide each (interval, peer) with the policy's own HttpRulesFor, on a policy reduced to the keys that can
            // cover that peer (the "any peer" keys and its own): same semantics, without scanning every entry each time.
            var others = Reduced(policy, wildcard, null);
            var slots = new Slot[starts.Count];
            var byPeer = new Dictionary<uint, HttpRuleMatcher?>[starts.Count];
            for (var i = 0; i < starts.Count; i++)
                slots[i] = new Slot(MatcherOf(others.HttpRulesFor(direction, ReservedIdentity.Unknown, L4Proto.Tcp, (ushort)starts[i]), matchers), null);
            foreach (var (identity, own) in byIdentity)
            {
                var reduced = Reduced(policy, wildcard, own);
                for (var i = 0; i < starts.Count; i++)
                {
                    var matcher = MatcherOf(reduced.HttpRulesFor(direction, identity, L4Proto.Tcp, (ushort)starts[i]), matchers);
                    if (!ReferenceEquals(matcher, slots[i].Other))
                        (byPeer[i] ??= [])[identity] = matcher;
                }
            }
            for (var i = 0; i < slots.Length; i++)
            {
                if (byPeer[i] is { } peers)
                    slots[i] = slots[i] with { ByPeer = peers.ToFrozenDictionary() };
            }
            return new DirectionTable(starts.ToArray(), ends.ToArray(), slots);
        }

        private static EndpointPolicy Reduced(
            EndpointPolicy policy, List<KeyValuePair<PolicyKey, PolicyEntry>> wildcard, List<KeyValuePair<PolicyKey, PolicyEntry>>? own)
        {
            var entries = new Dictionary<PolicyKey, PolicyEntry>(wildcard);
            if (own is not null)
            {
                foreach (var (key, entry) in own)
                    entries[key] = entry;
            }
            return policy with { Entries = entries };
        }

        private static HttpRuleMatcher? MatcherOf(IReadOnlyList<HttpRule>? rules, Dictionary<RuleSet, HttpRuleMatcher> matchers)
        {
            if (rules is null)
                return null;
            var set = new RuleSet(rules);
            if (!matchers.TryGetValue(set, out var matcher))
            {
                matcher = new HttpRuleMatcher(rules);
                matchers.Add(set, matcher);
            }
            return matcher;
        }
    }

    private sealed record Slot(HttpRuleMatcher? Other, FrozenDictionary<uint, HttpRuleMatcher?>? ByPeer);

    /// <summary>A rule list compared as a set (a request passes when any rule matches, so order does not matter).</summary>
    private sealed class RuleSet(IReadOnlyList<HttpRule> rules) : IEquatable<RuleSet>
    {
        private readonly HashSet<HttpRule> _rules = [.. rules];
        private readonly int _hash = Hash(rules);

        public bool Equals(RuleSet? other) => other is not null && _hash == other._hash && _rules.SetEquals(other._rules);

        public override bool Equals(object? obj) => Equals(obj as RuleSet);

        public override int GetHashCode() => _hash;

        private static int Hash(IReadOnlyList<HttpRule> rules)
        {
            var hash = 0;
            var seen = new HashSet<HttpRule>();
            foreach (var rule in rules)
            {
                if (seen.Add(rule))
                    hash ^= rule.GetHashCode();
            }
            return hash;
        }
    }
}

/// <summary>
/// The <see cref="IL7Policy"/> the proxy is started with: the agent swaps in a new <see cref="L7PolicyTable"/>
/// whenever policy or endpoints change; each request sees one whole snapshot (a volatile reference, no lock).
/// Starts with <see cref="L7PolicyTable.Empty"/>, which denies everything.
/// </summary>
public sealed class SwappableL7Policy : IL7Policy
{
    private volatile IL7Policy _current = L7PolicyTable.Empty;

    public IL7Policy Current
    {
        get => _current;
        set => _current = value ?? throw new ArgumentNullException(nameof(value));
    }

    public Decision Check(L7Request request) => _current.Check(request);
}
