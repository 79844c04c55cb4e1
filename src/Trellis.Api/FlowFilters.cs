using System.Net;
using System.Net.Sockets;

namespace Trellis.Api;

/// <summary>
/// A flow filter with Hubble's semantics (the fields of Hubble's FlowFilter message, by the same names): every
/// field that is set must match (AND), a field with several values matches if any does (OR), and a flow passes a
/// list of filters if any filter matches (OR). Null or empty fields do not constrain.
/// </summary>
public sealed record FlowFilterDto
{
    /// <summary>An address or a CIDR ("10.200.0.0/24").</summary>
    public IReadOnlyList<string>? SourceIp { get; init; }
    public IReadOnlyList<string>? DestinationIp { get; init; }
    /// <summary>"namespace/" (the whole namespace), "namespace/pod-name-prefix", or "pod-name-prefix" in any namespace.</summary>
    public IReadOnlyList<string>? SourcePod { get; init; }
    public IReadOnlyList<string>? DestinationPod { get; init; }
    /// <summary>A label selector term: "key=value", "key!=value" or "key" (present); keys may carry a source prefix ("k8s:app").</summary>
    public IReadOnlyList<string>? SourceLabel { get; init; }
    public IReadOnlyList<string>? DestinationLabel { get; init; }
    public IReadOnlyList<uint>? SourceIdentity { get; init; }
    public IReadOnlyList<uint>? DestinationIdentity { get; init; }
    /// <summary>"namespace/name" of a service the flow went through (prefix match, like pods).</summary>
    public IReadOnlyList<string>? DestinationService { get; init; }
    /// <summary>FORWARDED, DROPPED, AUDIT, REDIRECTED, ERROR, TRANSLATED.</summary>
    public IReadOnlyList<string>? Verdict { get; init; }
    /// <summary>tcp, udp, icmp, sctp (L4), or http, dns (flows with that L7 record).</summary>
    public IReadOnlyList<string>? Protocol { get; init; }
    public IReadOnlyList<string>? SourcePort { get; init; }
    public IReadOnlyList<string>? DestinationPort { get; init; }
    /// <summary>"404" exactly, or "4+" for every status starting with 4 (Hubble's form).</summary>
    public IReadOnlyList<string>? HttpStatusCode { get; init; }
    public IReadOnlyList<string>? HttpMethod { get; init; }
    /// <summary>INGRESS or EGRESS.</summary>
    public IReadOnlyList<string>? TrafficDirection { get; init; }
    public bool? Reply { get; init; }
    public IReadOnlyList<string>? NodeName { get; init; }
    /// <summary>Drop reason descriptions, e.g. "policy denied".</summary>
    public IReadOnlyList<string>? DropReason { get; init; }
}

/// <summary>What to read from the flow store: the last N matching flows, optionally within a time window, and then
/// (with Follow) new ones as they come.</summary>
public sealed record FlowsRequest
{
    public int Last { get; init; } = 20;
    public bool Follow { get; init; }
    public DateTimeOffset? Since { get; init; }
    public DateTimeOffset? Until { get; init; }
    /// <summary>A flow must match one of these (when any are given)...</summary>
    public IReadOnlyList<FlowFilterDto>? Whitelist { get; init; }
    /// <summary>...and none of these.</summary>
    public IReadOnlyList<FlowFilterDto>? Blacklist { get; init; }
}

/// <summary>Checks and evaluates <see cref="FlowFilterDto"/>s. Used by the agent for every flow it streams, by the
/// gRPC observer and by the CLI to validate its options.</summary>
public static class FlowFilters
{
    private static readonly string[] Verdicts = ["FORWARDED", "DROPPED", "AUDIT", "REDIRECTED", "ERROR", "TRANSLATED"];
    private static readonly string[] Protocols = ["tcp", "udp", "icmp", "sctp", "http", "dns"];

    /// <summary>Null when the filter is well-formed, else what is wrong (naming the field and value).</summary>
    public static string? Validate(FlowFilterDto f)
    {
        foreach (var ip in (f.SourceIp ?? []).Concat(f.DestinationIp ?? []))
            if (ParseCidr(ip) is null) return $"ip '{ip}' is neither an IPv4 address nor a CIDR";
        foreach (var v in f.Verdict ?? [])
            if (!Verdicts.Contains(v.ToUpperInvariant())) return $"verdict '{v}' is not one of {string.Join(", ", Verdicts)}";
        foreach (var p in f.Protocol ?? [])
            if (!Protocols.Contains(p.ToLowerInvariant())) return $"protocol '{p}' is not one of {string.Join(", ", Protocols)}";
        foreach (var p in (f.SourcePort ?? []).Concat(f.DestinationPort ?? []))
            if (!ushort.TryParse(p, out _)) return $"port '{p}' is not a number from 0 to 65535";
        foreach (var s in f.HttpStatusCode ?? [])
            if (!(s.Length == 3 && s.All(char.IsAsciiDigit)) && !(s.Length is 2 or 3 && s[^1] == '+' && s[..^1].All(char.IsAsciiDigit)))
                return $"http status '{s}' is neither a 3-digit code nor a prefix like 5+ or 40+";
        foreach (var d in f.TrafficDirection ?? [])
            if (!d.Equals("INGRESS", StringComparison.OrdinalIgnoreCase) && !d.Equals("EGRESS", StringComparison.OrdinalIgnoreCase))
                return $"traffic direction '{d}' is not ingress or egress";
        foreach (var l in (f.SourceLabel ?? []).Concat(f.DestinationLabel ?? []))
            if (l.Length == 0 || l.StartsWith('=') || l.StartsWith("!=", StringComparison.Ordinal)) return $"label '{l}' is not key, key=value or key!=value";
        foreach (var p in (f.SourcePod ?? []).Concat(f.DestinationPod ?? []).Concat(f.DestinationService ?? []))
            if (p.Length == 0 || p.Count(c => c == '/') > 1) return $"'{p}' is not [namespace/]name";
        return null;
    }

    /// <summary>Whether the flow passes: one of the whitelist (if any) and none of the blacklist.</summary>
    public static bool Passes(FlowDto f, IReadOnlyList<FlowFilterDto>? whitelist, IReadOnlyList<FlowFilterDto>? blacklist) =>
        (whitelist is not { Count: > 0 } || whitelist.Any(w => Matches(f, w))) && (blacklist is null || !blacklist.Any(b => Matches(f, b)));

    public static bool Matches(FlowDto f, FlowFilterDto q) =>
        Any(q.SourceIp, ip => InCidr(f.Source.Ip, ip)) &&
        Any(q.DestinationIp, ip => InCidr(f.Destination.Ip, ip)) &&
        Any(q.SourcePod, p => PodMatches(f.Source, p)) &&
        Any(q.DestinationPod, p => PodMatches(f.Destination, p)) &&
        Any(q.SourceLabel, l => LabelMatches(f.Source.Labels, l)) &&
        Any(q.DestinationLabel, l => LabelMatches(f.Destination.Labels, l)) &&
        Any(q.SourceIdentity, id => f.Source.Identity == id) &&
        Any(q.DestinationIdentity, id => f.Destination.Identity == id) &&
        Any(q.DestinationService, s => f.Service is { } svc && NameMatches(svc.Split(':')[0], s)) &&
        Any(q.Verdict, v => string.Equals(f.Verdict, v, StringComparison.OrdinalIgnoreCase)) &&
        Any(q.Protocol, p => ProtocolMatches(f, p)) &&
        Any(q.SourcePort, p => f.Source.Port.ToString() == p) &&
        Any(q.DestinationPort, p => f.Destination.Port.ToString() == p) &&
        Any(q.HttpStatusCode, s => f.L7?.Http is { Code: var c and > 0 } && StatusMatches(c, s)) &&
        Any(q.HttpMethod, m => string.Equals(f.L7?.Http?.Method, m, StringComparison.OrdinalIgnoreCase)) &&
        Any(q.TrafficDirection, d => string.Equals(f.Direction, d, StringComparison.OrdinalIgnoreCase)) &&
        (q.Reply is not { } reply || f.IsReply == reply) &&
        Any(q.NodeName, n => f.Node == n) &&
        Any(q.DropReason, r => string.Equals(f.DropReason, r, StringComparison.OrdinalIgnoreCase));

    private static bool Any<T>(IReadOnlyList<T>? values, Func<T, bool> match) => values is not { Count: > 0 } || values.Any(match);

    private static bool ProtocolMatches(FlowDto f, string p) => p.ToLowerInvariant() switch
    {
        "http" => f.L7?.Http is not null,
        "dns" => f.L7?.Dns is not null,
        var l4 => string.Equals(f.Protocol, l4, StringComparison.OrdinalIgnoreCase),
    };

    private static bool StatusMatches(int code, string s) =>
        s.EndsWith('+') ? code.ToString().StartsWith(s[..^1], StringComparison.Ordinal) : code.ToString() == s;

    private static bool PodMatches(FlowEndpointDto e, string filter) =>
        e.Pod is not null && NameMatches($"{e.Namespace}/{e.Pod}", filter);

    /// <summary>"ns/" = everything in ns; "ns/prefix" = names in ns starting with prefix; "prefix" = in any namespace.</summary>
    private static bool NameMatches(string nsName, string filter)
    {
        var slash = filter.IndexOf('/');
        if (slash < 0)
            return nsName[(nsName.IndexOf('/') + 1)..].StartsWith(filter, StringComparison.Ordinal);
        return nsName.StartsWith(filter, StringComparison.Ordinal);
    }

    /// <summary>Labels are "source:key=value" strings ("k8s:app=web"); a selector key without a source matches any source.</summary>
    private static bool LabelMatches(IReadOnlyList<string> labels, string selector)
    {
        string key, value = "";
        bool negate = false, hasValue = false;
        var ne = selector.IndexOf("!=", StringComparison.Ordinal);
        var eq = selector.IndexOf('=');
        if (ne > 0) { key = selector[..ne]; value = selector[(ne + 2)..]; negate = hasValue = true; }
        else if (eq > 0) { key = selector[..eq]; value = selector[(eq + 1)..]; hasValue = true; }
        else key = selector;
        bool present = false, equal = false;
        foreach (var l in labels)
        {
            var lEq = l.IndexOf('=');
            var lKey = lEq < 0 ? l : l[..lEq];
            var lValue = lEq < 0 ? "" : l[(lEq + 1)..];
            bool keyMatches = key.Contains(':') ? lKey == key : lKey == key || lKey.EndsWith(":" + key, StringComparison.Ordinal);
            if (!keyMatches) continue;
            present = true;
            if (lValue == value) equal = true;
        }
        if (!hasValue) return present;
        return negate ? !equal : equal;
    }

    private static bool InCidr(string ip, string cidr)
    {
        if (!IPAddress.TryParse(ip, out var a) || ParseCidr(cidr) is not { } c) return false;
        var bytes = a.GetAddressBytes();
        if (bytes.Length != 4) return false;
        uint v = (uint)(bytes[0] << 24 | bytes[1] << 16 | bytes[2] << 8 | bytes[3]);
        uint mask = c.Prefix == 0 ? 0 : uint.MaxValue << (32 - c.Prefix);
        return (v & mask) == (c.Network & mask);
    }

    private static (uint Network, int Prefix)? ParseCidr(string text)
    {
        var parts = text.Split('/');
        if (parts.Length > 2 || !IPAddress.TryParse(parts[0], out var a) || a.AddressFamily != AddressFamily.InterNetwork) return null;
        int prefix = 32;
        if (parts.Length == 2 && (!int.TryParse(parts[1], out prefix) || prefix is < 0 or > 32)) return null;
        var b = a.GetAddressBytes();
        return ((uint)(b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3]), prefix);
    }
}

/// <summary>Builds Hubble-style filter lists: from-/to- options constrain one side; the first either-side option
/// splits the filter into a pair (the value as source in one, as destination in the other), and later ones
/// extend the same side of each, as the hubble CLI does.</summary>
public sealed class FlowFilterBuilder
{
    private FlowFilterDto _left = new();
    private FlowFilterDto? _right;

    public void From(Func<FlowFilterDto, FlowFilterDto> add) { _left = add(_left); if (_right is not null) _right = add(_right); }
    public void To(Func<FlowFilterDto, FlowFilterDto> add) => From(add);
    public void Both(Func<FlowFilterDto, FlowFilterDto> add) => From(add);

    public void Either(Func<FlowFilterDto, FlowFilterDto> asSource, Func<FlowFilterDto, FlowFilterDto> asDestination)
    {
        _right ??= _left;
        _left = asSource(_left);
        _right = asDestination(_right);
    }

    public List<FlowFilterDto> Build()
    {
        var empty = new FlowFilterDto();
        var result = new List<FlowFilterDto>();
        if (_left != empty) result.Add(_left);
        if (_right is not null && _right != empty) result.Add(_right);
        return result;
    }
}
