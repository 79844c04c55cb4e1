using System.CommandLine;
using System.Text.Json;
using Spectre.Console;
using Trellis.Api;

namespace Trellis.Cli.Commands;

internal static class ObserveCommand
{
    public static Command Create()
    {
        var verdict = new Option<string?>("--verdict") { Description = "Only flows with this verdict: FORWARDED, DROPPED, AUDIT, REDIRECTED, ERROR" };
        var follow = new Option<bool>("--follow", "-f") { Description = "Keep printing new flows as they happen" };
        var output = new Option<string>("--output", "-o") { Description = "compact (one line a flow) or json (one object a line)", DefaultValueFactory = _ => "compact" };
        output.AcceptOnlyFromAmong("compact", "json");
        var last = new Option<int>("--last") { Description = "How many recent flows to show first", DefaultValueFactory = _ => 20 };
        var cmd = new Command("observe", """
            Show flows the datapath saw: every new connection and every drop, with identities and the policy verdict.

            Examples:
              trellis observe --last 50
              trellis observe --verdict DROPPED --follow
              trellis observe -o json
            """);
        cmd.Options.Add(verdict);
        cmd.Options.Add(follow);
        cmd.Options.Add(output);
        cmd.Options.Add(last);
        cmd.SetAction((r, ct) => Global.Run(async () =>
        {
            if (r.GetValue(last) < 0) throw new Trellis.Lab.LabException("--last must be 0 or more");
            using var c = new AgentClient(AgentPaths.Socket(r.GetValue(Global.Node)!), Timeout.InfiniteTimeSpan);
            bool json = r.GetValue(output) == "json";
            await foreach (var f in c.FlowsAsync(r.GetValue(last), r.GetValue(follow), r.GetValue(verdict)?.ToUpperInvariant(), ct))
            {
                if (json) Console.WriteLine(JsonSerializer.Serialize(f, AgentClient.Json));
                else Global.Out.MarkupLine(Compact(f));
            }
            return 0;
        }));
        return cmd;
    }

    /// <summary>One line a flow, in the spirit of `hubble observe`.</summary>
    internal static string Compact(FlowDto f)
    {
        static string Who(FlowEndpointDto e) =>
            (e.Pod is not null ? $"{e.Namespace}/{e.Pod}" : e.Ip == "0.0.0.0" && e.Identity == 1 ? "host" : e.Ip) + (e.Port != 0 ? $":{e.Port}" : "") + $" (ID:{e.Identity})";
        var verdict = f.Verdict switch
        {
            "FORWARDED" => "[green]FORWARDED[/]",
            "DROPPED" => "[red]DROPPED[/]",
            var v => $"[yellow]{v}[/]",
        };
        var detail = f.TcpFlags.Count > 0 ? $" (TCP Flags: {string.Join(", ", f.TcpFlags)})" : $" ({f.Protocol})";
        var policy = f.PolicyName is null ? null : Markup.Escape((f.PolicyNamespace is null ? "" : f.PolicyNamespace + "/") + f.PolicyName);
        var why = f.DropReason is not null ? $" [red]{Markup.Escape(f.DropReason)}[/]{(policy is null ? "" : $" ({policy})")}"
            : policy is not null ? $" by policy {policy}" : "";
        var service = f.Service is null ? "" : $" via service {f.Service}";
        return $"{f.Time.ToLocalTime():MMM dd HH:mm:ss.fff} [[{Markup.Escape(f.Node)}]] {Markup.Escape(Who(f.Source))} -> {Markup.Escape(Who(f.Destination) + service)} " +
               $"{f.Direction.ToLowerInvariant()} {verdict}{Markup.Escape(detail)}{why}";
    }
}
