using System.CommandLine;
using System.Text.Json;
using Trellis.Api;

namespace Trellis.Cli.Commands;

internal static class MonitorCommand
{
    public static Command Create()
    {
        var type = new Option<string[]>("--type", "-t") { Description = "Only these event types: drop, trace (a new flow passed), audit, translate (socket load balancing)", Arity = ArgumentArity.OneOrMore };
        type.AcceptOnlyFromAmong("drop", "trace", "audit", "translate");
        var endpoint = new Option<uint[]>("--related-to") { Description = "Only events of these endpoint ids (see 'trellis endpoint list')", Arity = ArgumentArity.OneOrMore };
        var output = new Option<string>("--output", "-o") { Description = "text (one line an event, as cilium monitor) or json", DefaultValueFactory = _ => "text" };
        output.AcceptOnlyFromAmong("text", "json");
        var cmd = new Command("monitor", """
            Print raw datapath events as the kernel sends them, from now until Ctrl-C, as 'cilium monitor' does:
            every drop with its reason and a packet summary (endpoint, interface, identities, addresses, ports,
            protocol, TCP flags, length), every new flow that passed, every socket translation. No names are
            looked up: for enriched, filterable flows use 'trellis observe'.

            Examples:
              trellis monitor --type drop
              trellis monitor --related-to 3 -o json
            """);
        cmd.Options.Add(type);
        cmd.Options.Add(endpoint);
        cmd.Options.Add(output);
        cmd.SetAction((r, ct) => Global.Run(async () =>
        {
            using var c = new AgentClient(AgentPaths.Socket(r.GetValue(Global.Node)!), Timeout.InfiniteTimeSpan);
            var eps = r.GetValue(endpoint) ?? [];
            bool json = r.GetValue(output) == "json";
            Console.Error.WriteLine("Listening for events on node " + r.GetValue(Global.Node) + ". Press Ctrl-C to quit");
            await foreach (var e in c.MonitorAsync(r.GetValue(type), ct))
            {
                if (eps.Length > 0 && !eps.Contains(e.Endpoint)) continue;
                Console.WriteLine(json ? JsonSerializer.Serialize(e, AgentClient.Json) : Text(e));
            }
            return 0;
        }));
        return cmd;
    }

    /// <summary>One line an event, in the shape of cilium monitor's.</summary>
    internal static string Text(MonitorEventDto e)
    {
        var prefix = e.Type switch
        {
            "drop" => $"xx drop ({e.Reason})",
            "audit" => $"!! audit ({e.Reason})",
            "translate" => $"<> sock translate to service frontend {e.FrontendId} cgroup {e.CgroupId}",
            _ => e.Direction == "INGRESS" ? "-> endpoint" : "<- endpoint",
        };
        var flags = e.TcpFlags.Count > 0 ? " " + string.Join(", ", e.TcpFlags) : "";
        var ports = e.Protocol is "TCP" or "UDP" or "SCTP";
        string Addr(string ip, int port) => ports ? $"{ip}:{port}" : ip;
        var icmp = e.Protocol == "ICMP" ? $" type/id {e.SourcePort} code/id {e.DestinationPort}" : "";
        return $"{e.Time.ToLocalTime():HH:mm:ss.ffffff} {prefix} ep {e.Endpoint} ifindex {e.Ifindex} {e.Direction.ToLowerInvariant()}, identity {e.SrcIdentity}->{e.DstIdentity}: " +
               $"{Addr(e.Source, e.SourcePort)} -> {Addr(e.Destination, e.DestinationPort)} {e.Protocol.ToLowerInvariant()}{flags}{icmp} len {e.Length}" +
               (e.PolicyId != 0 ? $" policy {e.PolicyId}" : "");
    }
}
