using Google.Protobuf;
using Trellis.Api;
using H = Trellis.Hubble;

namespace Trellis.Agent.Observer;

/// <summary>A Hubble filter field Trellis cannot evaluate, or a value it cannot read: the observer answers
/// INVALID_ARGUMENT with <see cref="Exception.Message"/> (never ignores the field).</summary>
public sealed class UnsupportedFilterException(string message) : Exception(message);

/// <summary>One Hubble <see cref="H.FlowFilter"/> as Trellis evaluates it: the fields <see cref="FlowFilterDto"/> has
/// (same semantics, evaluated by <see cref="FlowFilters.Matches"/>) plus the ones only the Hubble side needs
/// (event type, TCP flags, uuid).</summary>
public sealed record CompiledFlowFilter(FlowFilterDto Dto, Func<FlowDto, bool>? Extra = null)
{
    public bool Matches(FlowDto f) => FlowFilters.Matches(f, Dto) && (Extra is null || Extra(f));
}

/// <summary>Hubble <see cref="H.FlowFilter"/> lists → what Trellis evaluates, with Hubble's semantics: a flow passes
/// when it matches one whitelist filter (if any are given) and no blacklist filter.</summary>
public static class HubbleFilters
{
    /// <summary>The Hubble cluster name Trellis' single node belongs to (node_name filters may say "cluster/node").</summary>
    public const string ClusterName = "default";

    /// <summary>Fields Hubble defines that Trellis does not evaluate, with why.</summary>
    private static readonly (int Number, string Name, string Why)[] Unsupported =
    [
        (H.FlowFilter.SourceFqdnFieldNumber, "source_fqdn", "Trellis has no DNS proxy, so flows carry no FQDNs"),
        (H.FlowFilter.DestinationFqdnFieldNumber, "destination_fqdn", "Trellis has no DNS proxy, so flows carry no FQDNs"),
        (H.FlowFilter.SourceServiceFieldNumber, "source_service", "Trellis records only the service a flow was sent to (use destination_service)"),
        (H.FlowFilter.SourceWorkloadFieldNumber, "source_workload", "Trellis pods have no owning workloads"),
        (H.FlowFilter.DestinationWorkloadFieldNumber, "destination_workload", "Trellis pods have no owning workloads"),
        (H.FlowFilter.DnsQueryFieldNumber, "dns_query", "Trellis records no DNS queries yet"),
        (H.FlowFilter.HttpPathFieldNumber, "http_path", "regular expressions on HTTP paths are not supported"),
        (H.FlowFilter.HttpUrlFieldNumber, "http_url", "regular expressions on HTTP URLs are not supported"),
        (H.FlowFilter.HttpHeaderFieldNumber, "http_header", "Trellis records no HTTP headers"),
        (H.FlowFilter.TraceIdFieldNumber, "trace_id", "Trellis records no trace context"),
    ];

    private static readonly string[] Protocols = ["tcp", "udp", "icmp", "sctp", "http", "dns"];

    /// <summary>Compiles a whitelist or blacklist. A filter that can never match a Trellis flow (verdict TRACED,
    /// IPv6 only, another node's name) compiles to null. Throws <see cref="UnsupportedFilterException"/> naming the
    /// list, the filter's index and the field.</summary>
    public static List<CompiledFlowFilter?> Compile(IEnumerable<H.FlowFilter> filters, string list, string node)
    {
        var result = new List<CompiledFlowFilter?>();
        int i = 0;
        foreach (var f in filters)
        {
            try
            {
                result.Add(Compile(f, node));
            }
            catch (UnsupportedFilterException e)
            {
                throw new UnsupportedFilterException($"{list}[{i}]: {e.Message}");
            }
            i++;
        }
        return result;
    }

    /// <summary>Whether a flow passes compiled lists (a filter that can never match is null).</summary>
    public static bool Passes(FlowDto f, IReadOnlyList<CompiledFlowFilter?> whitelist, IReadOnlyList<CompiledFlowFilter?> blacklist) =>
        (whitelist.Count == 0 || whitelist.Any(w => w is not null && w.Matches(f))) && !blacklist.Any(b => b is not null && b.Matches(f));

    /// <summary>One Hubble filter; null when no Trellis flow can match it.</summary>
    public static CompiledFlowFilter? Compile(H.FlowFilter f, string node)
    {
        foreach (var number in UnknownFields(f))
            throw new UnsupportedFilterException($"field number {number} of flow.FlowFilter is not supported by Trellis (a field newer than Trellis' copy of Hubble's API)");
        foreach (var (number, name, why) in Unsupported)
            if (IsSet(f, number))
                throw new UnsupportedFilterException($"filter field {name} is not supported: {why}");

        bool impossible = false;
        var extra = new List<Func<FlowDto, bool>>();

        List<string>? verdicts = null;
        if (f.Verdict.Count > 0)
        {
            verdicts = f.Verdict.Select(HubbleFlows.VerdictName).OfType<string>().ToList();
            if (verdicts.Count == 0) impossible = true; // TRACED / VERDICT_UNKNOWN only: Trellis flows always carry a decision
        }

        List<string>? directions = null;
        if (f.TrafficDirection.Count > 0)
        {
            directions = f.TrafficDirection.Where(d => d != H.TrafficDirection.Unknown).Select(d => d == H.TrafficDirection.Ingress ? "INGRESS" : "EGRESS").Distinct().ToList();
            if (directions.Count == 0) impossible = true;
        }

        List<string>? protocols = null;
        if (f.Protocol.Count > 0)
        {
            protocols = [];
            foreach (var p in f.Protocol)
                switch (p.ToLowerInvariant())
                {
                    case "icmpv4": protocols.Add("icmp"); break;
                    case "icmpv6" or "kafka": break; // never on a Trellis flow (IPv4 only, no Kafka parser)
                    case var l when Protocols.Contains(l): protocols.Add(l); break;
                    default: throw new UnsupportedFilterException($"protocol '{p}' is not one of tcp, udp, icmp, icmpv4, icmpv6, sctp, http, dns, kafka");
                }
            if (protocols.Count == 0) impossible = true;
        }

        bool? reply = f.Reply.Distinct().Count() == 1 ? f.Reply[0] : null;

        List<string>? nodeNames = null;
        if (f.NodeName.Count > 0)
        {
            // Every flow Trellis serves was seen by this node: evaluate the patterns once, here.
            if (!f.NodeName.Any(p => NodeNameMatches(p, node))) impossible = true;
            else nodeNames = [node];
        }

        if (f.IpVersion.Count > 0 && !f.IpVersion.Contains(H.IPVersion.Ipv4)) impossible = true; // pods are IPv4 only

        if (f.EventType.Count > 0)
        {
            var types = f.EventType.ToList();
            extra.Add(dto =>
            {
                var (type, sub) = HubbleFlows.EventType(dto);
                return types.Any(t => t.Type == type && (!t.MatchSubType || t.SubType == sub));
            });
        }

        if (f.TcpFlags.Count > 0)
        {
            var wanted = f.TcpFlags.Select(FlagNames).ToList();
            extra.Add(dto => string.Equals(dto.Protocol, "TCP", StringComparison.OrdinalIgnoreCase) && wanted.Any(w => w.All(dto.TcpFlags.Contains)));
        }

        if (f.Uuid.Count > 0)
        {
            var uuids = f.Uuid.ToHashSet(StringComparer.OrdinalIgnoreCase);
            extra.Add(dto => uuids.Contains(HubbleFlows.Uuid(dto)));
        }

        var dto = new FlowFilterDto
        {
            SourceIp = NullIfEmpty(f.SourceIp),
            DestinationIp = NullIfEmpty(f.DestinationIp),
            SourcePod = NullIfEmpty(f.SourcePod.Select(Pod)),
            DestinationPod = NullIfEmpty(f.DestinationPod.Select(Pod)),
            SourceLabel = NullIfEmpty(f.SourceLabel.Select(l => Label(l, "source_label"))),
            DestinationLabel = NullIfEmpty(f.DestinationLabel.Select(l => Label(l, "destination_label"))),
            SourceIdentity = NullIfEmpty(f.SourceIdentity),
            DestinationIdentity = NullIfEmpty(f.DestinationIdentity),
            DestinationService = NullIfEmpty(f.DestinationService.Select(Pod)),
            Verdict = verdicts,
            Protocol = protocols,
            SourcePort = NullIfEmpty(f.SourcePort),
            DestinationPort = NullIfEmpty(f.DestinationPort),
            HttpStatusCode = NullIfEmpty(f.HttpStatusCode),
            HttpMethod = NullIfEmpty(f.HttpMethod),
            TrafficDirection = directions,
            Reply = reply,
            NodeName = nodeNames,
        };
        if (FlowFilters.Validate(dto) is { } problem) throw new UnsupportedFilterException(problem);
        if (impossible) return null;
        Func<FlowDto, bool>? all = extra.Count switch
        {
            0 => null,
            1 => extra[0],
            _ => flow => extra.All(e => e(flow)),
        };
        return new CompiledFlowFilter(dto, all);
    }

    /// <summary>Field numbers set in the filter that Trellis' copy of flow.proto does not declare.</summary>
    public static List<int> UnknownFields(IMessage message)
    {
        var unknown = new List<int>();
        var input = new CodedInputStream(message.ToByteArray());
        uint tag;
        while ((tag = input.ReadTag()) != 0)
        {
            int number = WireFormat.GetTagFieldNumber(tag);
            if (message.Descriptor.FindFieldByNumber(number) is null && !unknown.Contains(number)) unknown.Add(number);
            input.SkipLastField();
        }
        return unknown;
    }

    private static bool IsSet(H.FlowFilter f, int number) =>
        H.FlowFilter.Descriptor.FindFieldByNumber(number).Accessor.GetValue(f) is System.Collections.ICollection { Count: > 0 };

    private static IReadOnlyList<T>? NullIfEmpty<T>(IEnumerable<T> values)
    {
        var list = values.ToList();
        return list.Count == 0 ? null : list;
    }

    /// <summary>Hubble's "/name" (a pod in any namespace) is Trellis' "name"; "ns/" and "ns/prefix" are the same.</summary>
    private static string Pod(string p) => p.StartsWith('/') ? p[1..] : p;

    /// <summary>Hubble takes a Kubernetes label selector; Trellis evaluates one term: key, key=value (or ==), key!=value.</summary>
    private static string Label(string selector, string field)
    {
        var s = selector.Trim();
        if (s.Contains(',') || s.Contains('(') || s.StartsWith('!') || s.Contains(" in ", StringComparison.Ordinal) || s.Contains(" notin ", StringComparison.Ordinal))
            throw new UnsupportedFilterException($"{field} '{selector}': only one selector term is supported (key, key=value, key==value or key!=value)");
        return s.Replace("==", "=", StringComparison.Ordinal);
    }

    private static List<string> FlagNames(H.TCPFlags t)
    {
        var names = new List<string>();
        if (t.FIN) names.Add("FIN");
        if (t.SYN) names.Add("SYN");
        if (t.RST) names.Add("RST");
        if (t.PSH) names.Add("PSH");
        if (t.ACK) names.Add("ACK");
        if (t.URG) names.Add("URG");
        if (t.ECE) names.Add("ECE");
        if (t.CWR) names.Add("CWR");
        if (t.NS) names.Add("NS");
        return names;
    }

    /// <summary>Hubble's node name patterns: "node", "pattern*" (glob), "cluster/pattern", "cluster/" (every node of the cluster).</summary>
    public static bool NodeNameMatches(string pattern, string node)
    {
        var slash = pattern.IndexOf('/');
        if (slash < 0) return Glob(pattern, node);
        var cluster = pattern[..slash];
        var name = pattern[(slash + 1)..];
        return Glob(cluster.Length == 0 ? "*" : cluster, ClusterName) && (name.Length == 0 || Glob(name, node));
    }

    private static bool Glob(string pattern, string text)
    {
        var regex = "^" + string.Join(".*", pattern.Split('*').Select(System.Text.RegularExpressions.Regex.Escape)) + "$";
        return System.Text.RegularExpressions.Regex.IsMatch(text, regex);
    }
}
