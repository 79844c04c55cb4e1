using Trellis.Api;
using Trellis.Datapath;

namespace Trellis.Agent.Flows;

public static class FlowConverter
{
    private static readonly string[] TcpFlagNames = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];

    public static FlowDto ToDto(in StoredFlow f, string node)
    {
        var e = f.Raw;
        var verdict = (Verdict)e.Verdict;
        var reason = (DropReason)e.Reason;
        var flags = Flags(e);
        return new FlowDto(
            f.Time,
            node,
            verdict.ToString().ToUpperInvariant(),
            verdict is Verdict.Dropped or Verdict.Audit ? DropReasons.Describe(reason) : null,
            e.Dir == (byte)TrafficDirection.Ingress ? "INGRESS" : "EGRESS",
            e.IsReply != 0,
            Party(e.SAddr, e.SPort, e.SrcIdentity, f.Source, f.SourceLabels),
            Party(e.DAddr, e.DPort, e.DstIdentity, f.Destination, f.DestinationLabels),
            Protocol(e.Proto),
            flags,
            f.Policy?.Name,
            f.Policy?.Namespace,
            (int)e.PktLen,
            f.Service,
            f.L7);
    }

    public static MonitorEventDto ToMonitor(in StoredFlow f)
    {
        var e = f.Raw;
        var type = (Verdict)e.Verdict switch
        {
            Verdict.Dropped => "drop",
            Verdict.Audit => "audit",
            Verdict.Translated => "translate",
            _ => "trace",
        };
        return new MonitorEventDto(f.Time, type, (Verdict)e.Verdict is Verdict.Dropped or Verdict.Audit ? DropReasons.Describe((DropReason)e.Reason) : null,
            e.EndpointId, e.Ifindex, e.SrcIdentity, e.DstIdentity, NetOrder.ToAddress(e.SAddr).ToString(), e.SPort,
            NetOrder.ToAddress(e.DAddr).ToString(), e.DPort, Protocol(e.Proto), Flags(e), e.Dir == (byte)TrafficDirection.Ingress ? "INGRESS" : "EGRESS",
            (int)e.PktLen, e.PolicyId, e.FrontendId, e.CgroupId);
    }

    private static List<string> Flags(in FlowEvent e)
    {
        var flags = new List<string>();
        if (e.Proto == 6)
            for (int i = 0; i < 8; i++)
                if ((e.TcpFlags & (1 << i)) != 0) flags.Add(TcpFlagNames[i]);
        return flags;
    }

    private static FlowEndpointDto Party(uint addr, ushort port, uint identity, EndpointRef? ep, IReadOnlyList<string>? labels) =>
        new(NetOrder.ToAddress(addr).ToString(), port, identity, ep?.Namespace, ep?.Pod, labels ?? ep?.Labels ?? []);

    public static string Protocol(byte p) => p switch
    {
        1 => "ICMP",
        6 => "TCP",
        17 => "UDP",
        132 => "SCTP",
        _ => $"proto-{p}",
    };
}
