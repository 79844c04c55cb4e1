using Trellis.Api;

namespace Trellis.ServiceMap;

public enum NodeKind
{
    /// <summary>Pods grouped by namespace and app label (or pod name).</summary>
    Workload,
    /// <summary>The node itself (identity 1).</summary>
    Host,
    /// <summary>Anything outside the cluster without a CIDR identity (identity 2).</summary>
    World,
    /// <summary>An external prefix a policy names (its own CIDR identity).</summary>
    Cidr,
    /// <summary>An address without identity (e.g. a spoofed source).</summary>
    Unknown,
}

/// <summary>A box on the map. <paramref name="Id"/> is stable and unique ("pod:shop/web", "world", "host", "cidr:10.0.0.0/8").</summary>
/// <param name="Pods">The pods grouped into a workload, sorted; empty for other kinds.</param>
/// <param name="Ips">The addresses seen for it, sorted.</param>
public sealed record MapNode(string Id, NodeKind Kind, string? Namespace, string Name, IReadOnlyList<string> Pods, IReadOnlyList<string> Ips);

public enum EdgeVerdict { Forwarded, Audit, Dropped }

/// <summary>An arrow: the connections from one workload to another on one protocol and destination port.</summary>
/// <param name="Forwarded">Connections that passed.</param>
/// <param name="Dropped">Connections with at least one dropped packet in the original direction.</param>
/// <param name="Audit">Connections policy would have dropped, passed in audit mode.</param>
/// <param name="PerSecond">Connections per second over the map's window.</param>
/// <param name="Services">"ns/name:port" of the services the connections were load-balanced through, sorted.</param>
/// <param name="ViaService">How many of the connections went through a service.</param>
public sealed record MapEdge(string From, string To, string Protocol, int Port, int Forwarded, int Dropped, int Audit,
    IReadOnlyList<string> DropReasons, IReadOnlyList<string> AuditReasons, IReadOnlyList<string> Services, int ViaService, double PerSecond)
{
    public int Flows => Forwarded + Dropped + Audit;
    public EdgeVerdict Verdict => Dropped > 0 ? EdgeVerdict.Dropped : Audit > 0 ? EdgeVerdict.Audit : EdgeVerdict.Forwarded;
}

/// <summary>Who talked to whom between <paramref name="From"/> and <paramref name="To"/>. Nodes are sorted by
/// namespace then name (nodes outside the cluster last), edges by their ends, protocol and port.</summary>
public sealed record ServiceGraph(IReadOnlyList<MapNode> Nodes, IReadOnlyList<MapEdge> Edges, DateTimeOffset From, DateTimeOffset To)
{
    public TimeSpan Window => To - From;
    public MapNode Node(string id) => Nodes.Single(n => n.Id == id);
}

/// <summary>
/// Turns flow records into a <see cref="ServiceGraph"/>.
/// <list type="bullet">
/// <item>A pod belongs to the workload named by its <c>app</c> label (else <c>app.kubernetes.io/name</c>, else the pod
/// name) in its namespace: two pods labelled app=web in shop are one node "web". No ReplicaSet-suffix guessing.</item>
/// <item>Non-pods: identity 1 is "host", identity 2 "world", a CIDR identity its prefix, identity 0 "unknown"; the
/// addresses seen are kept on the node.</item>
/// <item>A connection (protocol and both addresses and ports) counts once, however many events it has: the datapath
/// reports a pod-to-pod connection at both ends (source egress, destination ingress) and a dropped SYN every time it
/// is retransmitted. Its outcome is the worst verdict seen: DROPPED, else AUDIT, else FORWARDED. ERROR counts as a
/// drop; REDIRECTED as forwarded.</item>
/// <item>Replies (<see cref="FlowDto.IsReply"/>) and TRANSLATED events (socket load-balancing traces, which only
/// name the service) are skipped, so no edge is doubled or reversed.</item>
/// </list>
/// </summary>
public static class ServiceMapBuilder
{
    /// <param name="namespaces">When not empty, only connections with an end in one of these namespaces.</param>
    public static ServiceGraph Build(IEnumerable<FlowDto> flows, DateTimeOffset from, DateTimeOffset to, IReadOnlyCollection<string>? namespaces = null)
    {
        if (to <= from) throw new ArgumentException("the map's window must end after it starts", nameof(to));
        var conns = new Dictionary<(string, string, int, int, string), Connection>();
        foreach (var f in flows)
        {
            if (f.IsReply || f.Verdict == "TRANSLATED" || f.Time < from || f.Time > to) continue;
            var key = (f.Source.Ip, f.Destination.Ip, f.Source.Port, f.Destination.Port, f.Protocol);
            if (!conns.TryGetValue(key, out var c))
            {
                var src = Classify(f.Source);
                var dst = Classify(f.Destination);
                if (namespaces is { Count: > 0 } && !namespaces.Contains(src.Namespace ?? "") && !namespaces.Contains(dst.Namespace ?? "")) continue;
                conns[key] = c = new Connection(src, dst, f.Protocol, f.Destination.Port);
            }
            c.Add(f);
        }

        var nodes = new Dictionary<string, NodeAcc>();
        var edges = new Dictionary<(string, string, string, int), EdgeAcc>();
        foreach (var c in conns.Values)
        {
            Touch(nodes, c.Source);
            Touch(nodes, c.Destination);
            var ek = (c.Source.Id, c.Destination.Id, c.Protocol, c.Port);
            if (!edges.TryGetValue(ek, out var e)) edges[ek] = e = new EdgeAcc();
            switch (c.Outcome)
            {
                case EdgeVerdict.Dropped: e.Dropped++; e.DropReasons.UnionWith(c.DropReasons); break;
                case EdgeVerdict.Audit: e.Audit++; e.AuditReasons.UnionWith(c.AuditReasons); break;
                default: e.Forwarded++; break;
            }
            e.Services.UnionWith(c.Services);
            if (c.Services.Count > 0) e.ViaService++;
        }

        double seconds = (to - from).TotalSeconds;
        var nodeList = nodes.Values
            .Select(n => new MapNode(n.Key.Id, n.Key.Kind, n.Key.Namespace, n.Key.Name, Sorted(n.Pods), SortedIps(n.Ips)))
            .OrderBy(n => n.Namespace is null ? 1 : 0).ThenBy(n => n.Namespace, StringComparer.Ordinal).ThenBy(n => n.Name, StringComparer.Ordinal)
            .ThenBy(n => n.Id, StringComparer.Ordinal)
            .ToList();
        var edgeList = edges
            .Select(kv => new MapEdge(kv.Key.Item1, kv.Key.Item2, kv.Key.Item3, kv.Key.Item4, kv.Value.Forwarded, kv.Value.Dropped, kv.Value.Audit,
                Sorted(kv.Value.DropReasons), Sorted(kv.Value.AuditReasons), Sorted(kv.Value.Services), kv.Value.ViaService,
                (kv.Value.Forwarded + kv.Value.Dropped + kv.Value.Audit) / seconds))
            .OrderBy(e => e.From, StringComparer.Ordinal).ThenBy(e => e.To, StringComparer.Ordinal)
            .ThenBy(e => e.Protocol, StringComparer.Ordinal).ThenBy(e => e.Port)
            .ToList();
        return new ServiceGraph(nodeList, edgeList, from, to);
    }

    /// <summary>Where an end of a flow goes on the map.</summary>
    public static NodeKey Classify(FlowEndpointDto e)
    {
        var labels = ParseLabels(e.Labels);
        if (e.Pod is not null)
        {
            var ns = e.Namespace ?? labels.GetValueOrDefault("io.kubernetes.pod.namespace") ?? "";
            var name = WorkloadName(labels) ?? e.Pod;
            return new NodeKey($"pod:{ns}/{name}", NodeKind.Workload, ns, name, e.Pod, e.Ip);
        }
        switch (e.Identity)
        {
            case 0: return new NodeKey("unknown", NodeKind.Unknown, null, "unknown", null, e.Ip);
            case 1: return new NodeKey("host", NodeKind.Host, null, "host", null, e.Ip);
            case 2: return new NodeKey("world", NodeKind.World, null, "world", null, e.Ip);
        }
        if (labels.TryGetValue("cidr", out var cidr))
            return new NodeKey($"cidr:{cidr}", NodeKind.Cidr, null, cidr, null, e.Ip);
        if (labels.TryGetValue("reserved", out var reserved) && reserved is "host" or "world")
            return reserved == "host" ? new NodeKey("host", NodeKind.Host, null, "host", null, e.Ip) : new NodeKey("world", NodeKind.World, null, "world", null, e.Ip);
        // A pod identity whose endpoint is gone (or not known to the agent): its identity labels still say who it was.
        if (labels.TryGetValue("io.kubernetes.pod.namespace", out var podNs))
        {
            var name = WorkloadName(labels) ?? $"identity {e.Identity}";
            return new NodeKey($"pod:{podNs}/{name}", NodeKind.Workload, podNs, name, null, e.Ip);
        }
        return new NodeKey($"identity:{e.Identity}", NodeKind.Unknown, null, $"identity {e.Identity}", null, e.Ip);
    }

    private static string? WorkloadName(Dictionary<string, string> labels) =>
        labels.GetValueOrDefault("app") ?? labels.GetValueOrDefault("app.kubernetes.io/name");

    /// <summary>"k8s:app=web" → app: web; "cidr:10.0.0.0/8" → cidr: 10.0.0.0/8; "reserved:world" → reserved: world.</summary>
    private static Dictionary<string, string> ParseLabels(IReadOnlyList<string> labels)
    {
        var d = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var l in labels)
        {
            if (l.StartsWith("cidr:", StringComparison.Ordinal)) { d.TryAdd("cidr", l[5..]); continue; }
            if (l.StartsWith("reserved:", StringComparison.Ordinal)) { d.TryAdd("reserved", l[9..]); continue; }
            var s = l.StartsWith("k8s:", StringComparison.Ordinal) ? l[4..] : l.StartsWith("any:", StringComparison.Ordinal) ? l[4..] : l;
            int eq = s.IndexOf('=');
            if (eq > 0) d.TryAdd(s[..eq], s[(eq + 1)..]);
        }
        return d;
    }

    private static void Touch(Dictionary<string, NodeAcc> nodes, NodeKey k)
    {
        if (!nodes.TryGetValue(k.Id, out var n)) nodes[k.Id] = n = new NodeAcc(k);
        if (k.Pod is not null) n.Pods.Add(k.Pod);
        if (k.Ip is { Length: > 0 } ip && ip != "0.0.0.0") n.Ips.Add(ip);
    }

    private static IReadOnlyList<string> Sorted(IEnumerable<string> s) => s.Order(StringComparer.Ordinal).ToList();

    private static IReadOnlyList<string> SortedIps(IEnumerable<string> s) =>
        s.OrderBy(ip => System.Net.IPAddress.TryParse(ip, out var a) ? a.GetAddressBytes() : [], ByteOrder.Instance).ThenBy(ip => ip, StringComparer.Ordinal).ToList();

    private sealed class ByteOrder : IComparer<byte[]>
    {
        public static readonly ByteOrder Instance = new();
        public int Compare(byte[]? x, byte[]? y) => ((ReadOnlySpan<byte>)x).SequenceCompareTo(y);
    }

    /// <summary>One end of a flow placed on the map: the node it belongs to, and the pod and address it was.</summary>
    public sealed record NodeKey(string Id, NodeKind Kind, string? Namespace, string Name, string? Pod, string? Ip);

    private sealed class Connection(NodeKey source, NodeKey destination, string protocol, int port)
    {
        public NodeKey Source { get; } = source;
        public NodeKey Destination { get; } = destination;
        public string Protocol { get; } = protocol;
        public int Port { get; } = port;
        public EdgeVerdict Outcome { get; private set; }
        public SortedSet<string> DropReasons { get; } = new(StringComparer.Ordinal);
        public SortedSet<string> AuditReasons { get; } = new(StringComparer.Ordinal);
        public SortedSet<string> Services { get; } = new(StringComparer.Ordinal);

        public void Add(FlowDto f)
        {
            if (f.Service is { Length: > 0 } s) Services.Add(s);
            switch (f.Verdict)
            {
                case "DROPPED" or "ERROR":
                    Outcome = EdgeVerdict.Dropped;
                    DropReasons.Add(f.DropReason is { Length: > 0 } r ? r : f.Verdict.ToLowerInvariant());
                    break;
                case "AUDIT":
                    if (Outcome < EdgeVerdict.Audit) Outcome = EdgeVerdict.Audit;
                    if (f.DropReason is { Length: > 0 } a) AuditReasons.Add(a);
                    break;
            }
        }
    }

    private sealed class NodeAcc(NodeKey key)
    {
        public NodeKey Key { get; } = key;
        public HashSet<string> Pods { get; } = new(StringComparer.Ordinal);
        public HashSet<string> Ips { get; } = new(StringComparer.Ordinal);
    }

    private sealed class EdgeAcc
    {
        public int Forwarded, Dropped, Audit, ViaService;
        public SortedSet<string> DropReasons { get; } = new(StringComparer.Ordinal);
        public SortedSet<string> AuditReasons { get; } = new(StringComparer.Ordinal);
        public SortedSet<string> Services { get; } = new(StringComparer.Ordinal);
    }
}
