using System.CommandLine;
using Trellis.Api;
using Trellis.Lab;

namespace Trellis.Cli.Commands;

internal static class ConfigCommands
{
    private static bool ParseOnOff(string v, string option = "policy-audit-mode") => v.ToLowerInvariant() switch
    {
        "on" or "true" or "enabled" => true,
        "off" or "false" or "disabled" => false,
        _ => throw new LabException($"{option}: '{v}' is not on/off"),
    };

    /// <summary>`trellis config [policy-audit-mode on|off]`: node-wide settings.</summary>
    public static Command Create()
    {
        var audit = new Option<string?>("--policy-audit-mode") { Description = "on: policy drops pass and are reported as AUDIT (observe posture); off: enforce" };
        var events = new Option<string?>("--flow-events") { Description = "on (default): the datapath reports flows; off: it reports nothing (to measure what flow events cost)" };
        var accel = new Option<string?>("--socket-acceleration")
        {
            Description = "on: TCP between two pods of this node is spliced socket to socket (sock_ops + sk_msg), skipping TCP/IP and TC once the policy allowed the handshake; not for flows through the L7 proxy. off (default): every packet crosses the stack",
        };
        var cmd = new Command("config", """
            Show or change node-wide agent settings.

            Examples:
              trellis config
              trellis config --policy-audit-mode on
              trellis config --flow-events off
              trellis config --socket-acceleration on
            """);
        cmd.Options.Add(audit);
        cmd.Options.Add(events);
        cmd.Options.Add(accel);
        cmd.SetAction((r, ct) => Global.Run(async () =>
        {
            using var c = Global.Client(r);
            bool? a = r.GetValue(audit) is { } v ? ParseOnOff(v) : null;
            bool? e = r.GetValue(events) is { } ev ? ParseOnOff(ev, "flow-events") : null;
            bool? s = r.GetValue(accel) is { } sv ? ParseOnOff(sv, "socket-acceleration") : null;
            var cfg = a is null && e is null && s is null ? await c.ConfigAsync(ct) : await c.SetConfigAsync(new ConfigDto(a, e, s), ct);
            Console.WriteLine($"policy-audit-mode: {(cfg.PolicyAuditMode == true ? "on" : "off")}");
            Console.WriteLine($"flow-events: {(cfg.FlowEvents != false ? "on" : "off")}");
            Console.WriteLine($"socket-acceleration: {(cfg.SocketAcceleration == true ? "on" : "off")}");
            return 0;
        }));
        return cmd;
    }

    /// <summary>`trellis endpoint config POD -n NS --policy-audit-mode on|off`.</summary>
    public static Command CreateEndpointConfig()
    {
        var pod = new Argument<string>("pod") { Description = "Pod name" };
        var ns = new Option<string>("--namespace", "-n") { Description = "Pod namespace", DefaultValueFactory = _ => "default" };
        var audit = new Option<string>("--policy-audit-mode") { Description = "on or off, for this endpoint only", Required = true };
        var accel = new Option<string?>("--socket-acceleration")
        {
            Description = "on: TCP between two pods of this node is spliced socket to socket (sock_ops + sk_msg), skipping TCP/IP and TC once the policy allowed the handshake; not for flows through the L7 proxy. off (default): every packet crosses the stack",
        };
        var cmd = new Command("config", """
            Change an endpoint's settings: policy audit mode for one pod, to roll a policy out in observe posture.

            Example:
              trellis endpoint config backend -n shop --policy-audit-mode on
            """);
        cmd.Arguments.Add(pod);
        cmd.Options.Add(ns);
        cmd.Options.Add(audit);
        cmd.SetAction((r, ct) => Global.Run(async () =>
        {
            using var c = Global.Client(r);
            var e = await c.SetEndpointConfigAsync(r.GetValue(ns)!, r.GetValue(pod)!, new EndpointConfigDto(ParseOnOff(r.GetValue(audit)!)), ct);
            Console.WriteLine($"endpoint {e.Namespace}/{e.Pod}: policy-audit-mode {(e.PolicyAuditMode ? "on" : "off")}");
            return 0;
        }));
        return cmd;
    }
}

internal static class EndpointLabelCommand
{
    /// <summary>`trellis endpoint label POD -n NS key=value key-`, as `kubectl label` does.</summary>
    public static Command Create()
    {
        var pod = new Argument<string>("pod") { Description = "Pod name" };
        var changes = new Argument<string[]>("labels") { Description = "key=value to set, key- to remove", Arity = ArgumentArity.OneOrMore };
        var ns = new Option<string>("--namespace", "-n") { Description = "Pod namespace", DefaultValueFactory = _ => "default" };
        var cmd = new Command("label", """
            Change a pod's labels. Its identity, and every policy that selects it or selects it as a peer,
            follow within a second; only the affected endpoints' policy maps are rewritten.

            Examples:
              trellis endpoint label frontend -n shop tier=edge
              trellis endpoint label frontend -n shop tier-
            """);
        cmd.Arguments.Add(pod);
        cmd.Arguments.Add(changes);
        cmd.Options.Add(ns);
        cmd.SetAction((r, ct) => Global.Run(async () =>
        {
            var parsed = new Dictionary<string, string?>();
            foreach (var c in r.GetValue(changes)!)
            {
                if (c.EndsWith('-') && !c.Contains('=')) parsed[c[..^1]] = null;
                else if (c.IndexOf('=') is > 0 and var eq) parsed[c[..eq]] = c[(eq + 1)..];
                else throw new LabException($"'{c}' is neither key=value nor key-");
            }
            using var client = Global.Client(r);
            var e = await client.SetEndpointLabelsAsync(r.GetValue(ns)!, r.GetValue(pod)!, parsed, ct);
            Console.WriteLine($"endpoint {e.Namespace}/{e.Pod}: identity {e.Identity}, labels {string.Join(",", e.Labels.Select(l => $"{l.Key}={l.Value}"))}");
            return 0;
        }));
        return cmd;
    }
}
