using System.CommandLine;
using Trellis.Api;
using Trellis.Lab;

namespace Trellis.Cli.Commands;

internal static class ConfigCommands
{
    private static bool ParseOnOff(string v) => v.ToLowerInvariant() switch
    {
        "on" or "true" or "enabled" => true,
        "off" or "false" or "disabled" => false,
        _ => throw new LabException($"policy-audit-mode: '{v}' is not on/off"),
    };

    /// <summary>`trellis config [policy-audit-mode on|off]`: node-wide settings.</summary>
    public static Command Create()
    {
        var audit = new Option<string?>("--policy-audit-mode") { Description = "on: policy drops pass and are reported as AUDIT (observe posture); off: enforce" };
        var cmd = new Command("config", """
            Show or change node-wide agent settings.

            Examples:
              trellis config
              trellis config --policy-audit-mode on
            """);
        cmd.Options.Add(audit);
        cmd.SetAction((r, ct) => Global.Run(async () =>
        {
            using var c = Global.Client(r);
            var cfg = r.GetValue(audit) is { } v ? await c.SetConfigAsync(new ConfigDto(ParseOnOff(v)), ct) : await c.ConfigAsync(ct);
            Console.WriteLine($"policy-audit-mode: {(cfg.PolicyAuditMode ? "on" : "off")}");
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
