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
        var flags = new List<string>();
        if (e.Proto == 6)
            for (int i = 0; i < 8; i++)
                if ((e.TcpFlags & (1 << i)) != 0) flags.Add(TcpFlagNames[i]);
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
            f.Service);
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
