using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Google.Protobuf.WellKnownTypes;
using Trellis.Api;
using Trellis.Datapath;
using H = Trellis.Hubble;

namespace Trellis.Agent.Observer;

/// <summary>What a <see cref="FlowDto"/> does not carry and a Hubble flow names: the endpoint id of a pod and the
/// kind of a policy. Either may be null (the field is then left at its default or guessed from the namespace).</summary>
public sealed record HubbleLookups(Func<string, string, uint?>? EndpointId = null, Func<string?, string, string?>? PolicyKind = null)
{
    public static readonly HubbleLookups None = new();
}

/// <summary>Trellis flow records as Hubble <see cref="H.Flow"/>s: verdicts, drop reasons and event types in Hubble's
/// (Cilium's) numbering, endpoints, L4, L7, the service and the policy that decided.</summary>
public static class HubbleFlows
{
    // Cilium's monitor message types (pkg/monitor/api): what Hubble clients print a flow's event as.
    public const int MessageTypeDrop = 1;
    public const int MessageTypeTrace = 4;
    public const int MessageTypeTraceSock = 7;
    public const int MessageTypeAccessLog = 129;
    // Cilium's trace sub types (the observation point): to-endpoint (0) and from-endpoint (5).
    public const int TraceToLxc = 0;
    public const int TraceFromLxc = 5;

    private static readonly Dictionary<string, Datapath.DropReason> ReasonsByDescription =
        System.Enum.GetValues<Datapath.DropReason>().Where(r => r != Datapath.DropReason.None).ToDictionary(DropReasons.Describe, r => r);

    /// <summary>Trellis' verdict name (FlowDto.Verdict) as Hubble's verdict.</summary>
    public static H.Verdict Verdict(string verdict) => verdict.ToUpperInvariant() switch
    {
        "FORWARDED" => H.Verdict.Forwarded,
        "DROPPED" => H.Verdict.Dropped,
        "AUDIT" => H.Verdict.Audit,
        "REDIRECTED" => H.Verdict.Redirected,
        "ERROR" => H.Verdict.Error,
        "TRANSLATED" => H.Verdict.Translated,
        _ => H.Verdict.Unknown,
    };

    /// <summary>Hubble's verdict as Trellis' verdict name; null for TRACED and VERDICT_UNKNOWN, which no Trellis flow has.</summary>
    public static string? VerdictName(H.Verdict v) => v switch
    {
        H.Verdict.Forwarded => "FORWARDED",
        H.Verdict.Dropped => "DROPPED",
        H.Verdict.Audit => "AUDIT",
        H.Verdict.Redirected => "REDIRECTED",
        H.Verdict.Error => "ERROR",
        H.Verdict.Translated => "TRANSLATED",
        _ => null,
    };

    /// <summary>The closest of Hubble's drop reasons to Trellis' (bpf/lib/drop_reasons.h).</summary>
    public static H.DropReason DropReason(Datapath.DropReason r) => r switch
    {
        Datapath.DropReason.PolicyDenied => H.DropReason.PolicyDenied,
        Datapath.DropReason.InvalidSource => H.DropReason.InvalidSourceIp,
        Datapath.DropReason.InvalidPacket => H.DropReason.InvalidPacketDropped,
        Datapath.DropReason.UnsupportedL3 => H.DropReason.UnsupportedL3Protocol,
        Datapath.DropReason.NoIdentity => H.DropReason.InvalidIdentity,
        Datapath.DropReason.PolicyDenyRule => H.DropReason.PolicyDeny,
        Datapath.DropReason.CtMapFull => H.DropReason.CtMapInsertionFailed,
        Datapath.DropReason.Fragment => H.DropReason.IpFragmentationNotSupported,
        Datapath.DropReason.NoServiceBackend => H.DropReason.ServiceBackendNotFound,
        // Hubble reports an L7 proxy's denial as a DROPPED L7 flow; its closest drop reason is the policy's.
        Datapath.DropReason.L7Denied => H.DropReason.PolicyDenied,
        Datapath.DropReason.AuthRequired => H.DropReason.AuthRequired,
        _ => H.DropReason.Unknown,
    };

    /// <summary>A drop reason description (FlowDto.DropReason) as Hubble's drop reason; unknown text gives DROP_REASON_UNKNOWN.</summary>
    public static H.DropReason DropReason(string? description) =>
        description is not null && ReasonsByDescription.TryGetValue(description, out var r) ? DropReason(r) : H.DropReason.Unknown;

    /// <summary>The Cilium event type Hubble clients show a flow as: a drop (sub type = drop reason), a socket
    /// translation, an L7 record, or a trace at the pod's veth (to-endpoint for ingress, from-endpoint for egress).</summary>
    public static (int Type, int SubType) EventType(FlowDto f)
    {
        if (f.L7 is not null) return (MessageTypeAccessLog, 0);
        return Verdict(f.Verdict) switch
        {
            H.Verdict.Dropped => (MessageTypeDrop, (int)DropReason(f.DropReason)),
            H.Verdict.Translated => (MessageTypeTraceSock, 0),
            _ => (MessageTypeTrace, IsIngress(f) ? TraceToLxc : TraceFromLxc),
        };
    }

    /// <summary>A stable id for the flow record (the same record gets the same uuid in every response).</summary>
    public static string Uuid(FlowDto f)
    {
        var key = $"{f.Node}|{f.Time.UtcTicks}|{f.Source.Ip}:{f.Source.Port}|{f.Destination.Ip}:{f.Destination.Port}|{f.Protocol}|{f.Direction}|{f.Verdict}|{f.IsReply}";
        Span<byte> hash = stackalloc byte[32];
        SHA256.HashData(Encoding.UTF8.GetBytes(key), hash);
        hash[6] = (byte)(hash[6] & 0x0f | 0x80); // version 8 (custom, RFC 9562)
        hash[8] = (byte)(hash[8] & 0x3f | 0x80); // RFC 4122 variant
        return new Guid(hash[..16], bigEndian: true).ToString();
    }

    public static H.Flow ToHubble(FlowDto f, HubbleLookups? lookups = null)
    {
        lookups ??= HubbleLookups.None;
        var verdict = Verdict(f.Verdict);
        var (eventType, subType) = EventType(f);
        var flow = new H.Flow
        {
            Time = Timestamp.FromDateTimeOffset(f.Time),
            Uuid = Uuid(f),
            Verdict = verdict,
            IP = new H.IP
            {
                Source = f.Source.Ip,
                Destination = f.Destination.Ip,
                IpVersion = IPAddress.TryParse(f.Source.Ip, out var a) && a.AddressFamily == AddressFamily.InterNetworkV6 ? H.IPVersion.Ipv6 : H.IPVersion.Ipv4,
            },
            L4 = Layer4(f),
            Source = Endpoint(f.Source, lookups),
            Destination = Endpoint(f.Destination, lookups),
            Type = f.L7 is not null ? H.FlowType.L7 : verdict == H.Verdict.Translated ? H.FlowType.Sock : H.FlowType.L3L4,
            NodeName = f.Node,
#pragma warning disable CS0612 // Hubble keeps the deprecated bool for old clients; so do we
            Reply = f.IsReply,
#pragma warning restore CS0612
            IsReply = f.IsReply,
            EventType = new H.CiliumEventType { Type = eventType, SubType = subType },
            TrafficDirection = IsIngress(f) ? H.TrafficDirection.Ingress : H.TrafficDirection.Egress,
#pragma warning disable CS0612 // deprecated by Hubble, still printed by its clients as a fallback
            Summary = Summary(f),
#pragma warning restore CS0612
        };
        if (eventType == MessageTypeTrace)
            flow.TraceObservationPoint = subType == TraceToLxc ? H.TraceObservationPoint.ToEndpoint : H.TraceObservationPoint.FromEndpoint;
        if (verdict == H.Verdict.Translated)
            flow.SockXlatePoint = H.SocketTranslationPoint.SockXlatePointPostDirectionFwd;
        if (verdict == H.Verdict.Dropped)
        {
            flow.DropReasonDesc = DropReason(f.DropReason);
#pragma warning disable CS0612 // the legacy numeric field carries the same number
            flow.DropReason = (uint)flow.DropReasonDesc;
#pragma warning restore CS0612
        }
        if (f.L7 is { } l7) flow.L7 = Layer7(l7);
        if (ParseService(f.Service) is { } svc) flow.DestinationService = svc;
        if (f.PolicyName is { } policyName)
        {
            var kind = lookups.PolicyKind?.Invoke(f.PolicyNamespace, policyName)
                ?? (f.PolicyNamespace is null ? "CiliumClusterwideNetworkPolicy" : "CiliumNetworkPolicy");
            var policy = new H.Policy { Name = policyName, Namespace = f.PolicyNamespace ?? "", Kind = kind };
            // The labels Cilium derives for a policy's rules, so clients that read them find the same names.
            policy.Labels.Add($"k8s:io.cilium.k8s.policy.derived-from={kind}");
            policy.Labels.Add($"k8s:io.cilium.k8s.policy.name={policyName}");
            if (f.PolicyNamespace is not null) policy.Labels.Add($"k8s:io.cilium.k8s.policy.namespace={f.PolicyNamespace}");
            // A flow that carries a drop reason (dropped, or audited: would have been dropped) was decided by a deny rule.
            var denied = f.DropReason is not null;
            (IsIngress(f)
                ? denied ? flow.IngressDeniedBy : flow.IngressAllowedBy
                : denied ? flow.EgressDeniedBy : flow.EgressAllowedBy).Add(policy);
        }
        return flow;
    }

    private static bool IsIngress(FlowDto f) => string.Equals(f.Direction, "INGRESS", StringComparison.OrdinalIgnoreCase);

    private static H.Endpoint Endpoint(FlowEndpointDto e, HubbleLookups lookups)
    {
        var ep = new H.Endpoint { Identity = e.Identity, Namespace = e.Namespace ?? "", PodName = e.Pod ?? "" };
        ep.Labels.AddRange(e.Labels);
        if (e.Namespace is not null && e.Pod is not null && lookups.EndpointId?.Invoke(e.Namespace, e.Pod) is { } id)
            ep.ID = id;
        return ep;
    }

    private static H.Layer4? Layer4(FlowDto f)
    {
        uint sport = (uint)f.Source.Port, dport = (uint)f.Destination.Port;
        switch (f.Protocol.ToUpperInvariant())
        {
            case "TCP":
                var flags = new H.TCPFlags();
                foreach (var flag in f.TcpFlags)
                    switch (flag)
                    {
                        case "FIN": flags.FIN = true; break;
                        case "SYN": flags.SYN = true; break;
                        case "RST": flags.RST = true; break;
                        case "PSH": flags.PSH = true; break;
                        case "ACK": flags.ACK = true; break;
                        case "URG": flags.URG = true; break;
                        case "ECE": flags.ECE = true; break;
                        case "CWR": flags.CWR = true; break;
                        case "NS": flags.NS = true; break;
                    }
                return new H.Layer4 { TCP = new H.TCP { SourcePort = sport, DestinationPort = dport, Flags = flags } };
            case "UDP":
                return new H.Layer4 { UDP = new H.UDP { SourcePort = sport, DestinationPort = dport } };
            case "SCTP":
                return new H.Layer4 { SCTP = new H.SCTP { SourcePort = sport, DestinationPort = dport } };
            case "ICMP":
                var (type, code) = Icmp(f);
                return new H.Layer4 { ICMPv4 = new H.ICMPv4 { Type = type, Code = code } };
            default:
                return null;
        }
    }

    /// <summary>The datapath keeps an echo's identifier in the port fields (request: source port, reply: destination
    /// port) and type/code of other ICMP messages in source/destination port (bpf/lib/packet.h).</summary>
    private static (uint Type, uint Code) Icmp(FlowDto f)
    {
        const uint EchoReply = 0, EchoRequest = 8;
        uint sport = (uint)f.Source.Port, dport = (uint)f.Destination.Port;
        if (sport == 0 && dport != 0) return (EchoReply, 0);
        // Destination unreachable, source quench, redirect, time exceeded, parameter problem.
        if (sport is 3 or 4 or 5 or 11 or 12 && dport <= 15) return (sport, dport);
        return (EchoRequest, 0);
    }

    private static H.Layer7 Layer7(L7RecordDto l7)
    {
        var r = new H.Layer7
        {
            Type = l7.Type.ToUpperInvariant() switch
            {
                "REQUEST" => H.L7FlowType.Request,
                "RESPONSE" => H.L7FlowType.Response,
                "SAMPLE" => H.L7FlowType.Sample,
                _ => H.L7FlowType.UnknownL7Type,
            },
            LatencyNs = (ulong)Math.Max(0, l7.LatencyNs),
        };
        if (l7.Http is { } http)
            r.Http = new H.HTTP { Code = (uint)Math.Max(0, http.Code), Method = http.Method, Url = http.Url, Protocol = http.Protocol };
        else if (l7.Dns is { } dns)
        {
            var d = new H.DNS { Query = dns.Query, Rcode = (uint)Math.Max(0, dns.Rcode) };
            d.Ips.AddRange(dns.Ips);
            d.Qtypes.AddRange(dns.QTypes);
            r.Dns = d;
        }
        return r;
    }

    /// <summary>"ns/name:port" (FlowDto.Service) as Hubble's service name and namespace.</summary>
    public static H.Service? ParseService(string? service)
    {
        if (string.IsNullOrEmpty(service)) return null;
        var colon = service.LastIndexOf(':');
        var nsName = colon > 0 ? service[..colon] : service;
        var slash = nsName.IndexOf('/');
        return slash < 0
            ? new H.Service { Name = nsName }
            : new H.Service { Namespace = nsName[..slash], Name = nsName[(slash + 1)..] };
    }

    /// <summary>The one-line summary Hubble's printers fall back to.</summary>
    public static string Summary(FlowDto f)
    {
        if (f.L7?.Http is { } http)
            return f.L7.Type.Equals("RESPONSE", StringComparison.OrdinalIgnoreCase)
                ? $"{http.Protocol} {http.Code} {f.L7.LatencyNs / 1_000_000}ms ({http.Method} {http.Url})"
                : $"{http.Protocol} {http.Method} {http.Url}";
        if (f.L7?.Dns is { } dns)
            return $"DNS {f.L7.Type.ToLowerInvariant()} {dns.Query} {string.Join(",", dns.QTypes)}";
        return f.Protocol.ToUpperInvariant() switch
        {
            "TCP" => f.TcpFlags.Count > 0 ? $"TCP Flags: {string.Join(", ", f.TcpFlags)}" : "TCP",
            "ICMP" => Icmp(f) switch { (8, _) => "ICMPv4 EchoRequest", (0, _) => "ICMPv4 EchoReply", var (t, c) => $"ICMPv4 type {t} code {c}" },
            var p => p,
        };
    }
}
