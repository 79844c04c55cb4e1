using System.CommandLine;
using Spectre.Console;
using Trellis.Lab;

namespace Trellis.Cli.Commands;

internal static class PolicyCommands
{
    public static Command Create()
    {
        var policy = new Command("policy", "Apply, delete and list network policies (CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy).");
        policy.Subcommands.Add(Apply());
        policy.Subcommands.Add(Delete());
        policy.Subcommands.Add(List());
        policy.Subcommands.Add(PolicyGetCommand.Create());
        policy.Subcommands.Add(PolicyTraceCommand.Create());
        return policy;
    }

    private static Command Apply()
    {
        var file = new Option<FileInfo>("--file", "-f") { Description = "YAML file with one or more policies", Required = true };
        var cmd = new Command("apply", """
            Apply the policies of a file. The whole file is checked first: if any document is invalid, nothing is applied.
            Live traffic follows the new policy within a second; pods keep running.

            Example:
              trellis policy apply -f examples/shop/policy.yaml
            """);
        cmd.Options.Add(file);
        cmd.SetAction((r, ct) => Global.Run(async () =>
        {
            var f = r.GetValue(file)!;
            if (!f.Exists) throw new LabException($"policy file {f} does not exist");
            // Parse here too, so a bad file is reported even when no agent runs.
            var text = await File.ReadAllTextAsync(f.FullName, ct);
            Trellis.Policy.ManifestParser.Parse(text, f.ToString());
            using var c = Global.Client(r);
            var res = await c.ApplyPolicyAsync(f.ToString(), text, ct);
            foreach (var w in res.Warnings ?? []) Console.Error.WriteLine($"Warning: {w}");
            foreach (var a in res.Applied) Console.WriteLine($"{a} applied");
            return 0;
        }));
        return cmd;
    }

    private static Command Delete()
    {
        var name = new Argument<string>("name") { Description = "Policy name" };
        var ns = new Option<string>("--namespace", "-n") { Description = "Namespace of a CiliumNetworkPolicy", DefaultValueFactory = _ => "default" };
        var cluster = new Option<bool>("--clusterwide") { Description = "Delete a CiliumClusterwideNetworkPolicy" };
        var cmd = new Command("delete", """
            Delete a policy by name.

            Examples:
              trellis policy delete allow-frontend -n shop
              trellis policy delete baseline --clusterwide
            """);
        cmd.Arguments.Add(name);
        cmd.Options.Add(ns);
        cmd.Options.Add(cluster);
        cmd.SetAction((r, ct) => Global.Run(async () =>
        {
            using var c = Global.Client(r);
            var n = r.GetValue(cluster) ? null : r.GetValue(ns);
            await c.DeletePolicyAsync(n, r.GetValue(name)!, ct);
            Console.WriteLine($"policy {(n is null ? "" : n + "/")}{r.GetValue(name)} deleted");
            return 0;
        }));
        return cmd;
    }

    private static Command List()
    {
        var cmd = new Command("list", """
            List applied policies.

            Example:
              trellis policy list
            """);
        cmd.SetAction((r, ct) => Global.Run(async () =>
        {
            using var c = Global.Client(r);
            var t = new Table().AddColumns("ID", "KIND", "NAMESPACE", "NAME", "RULES", "SOURCE", "APPLIED");
            foreach (var p in await c.PoliciesAsync(ct))
                t.AddRow(p.Id.ToString(), p.Kind, p.Namespace ?? "<cluster>", p.Name, p.Rules.ToString(), Markup.Escape(p.Source), p.AppliedAt.ToLocalTime().ToString("u"));
            Global.Out.Write(t);
            return 0;
        }));
        return cmd;
    }
}

internal static class PolicyGetCommand
{
    public static Command Create()
    {
        var name = new Argument<string>("name") { Description = "Policy name" };
        var ns = new Option<string>("--namespace", "-n") { Description = "Namespace of a CiliumNetworkPolicy", DefaultValueFactory = _ => "default" };
        var cluster = new Option<bool>("--clusterwide") { Description = "A CiliumClusterwideNetworkPolicy" };
        var output = new Option<string>("--output", "-o") { Description = "yaml (the policy as applied) or json (its metadata)", DefaultValueFactory = _ => "yaml" };
        output.AcceptOnlyFromAmong("yaml", "json");
        var cmd = new Command("get", """
            Show an applied policy as it was applied.

            Example:
              trellis policy get backend-from-frontend -n shop -o yaml
            """);
        cmd.Arguments.Add(name);
        cmd.Options.Add(ns);
        cmd.Options.Add(cluster);
        cmd.Options.Add(output);
        cmd.SetAction((r, ct) => Global.Run(async () =>
        {
            using var c = Global.Client(r);
            var p = await c.GetPolicyAsync(r.GetValue(cluster) ? null : r.GetValue(ns), r.GetValue(name)!, ct);
            Console.Write(r.GetValue(output) == "json" ? System.Text.Json.JsonSerializer.Serialize(p.Policy, Trellis.Api.AgentClient.Json) + "\n" : p.Yaml);
            return 0;
        }));
        return cmd;
    }
}

internal static class PolicyTraceCommand
{
    public static Command Create()
    {
        var from = new Option<string?>("--from") { Description = "Source pod, as POD or NAMESPACE/POD, or an IPv4 address" };
        var to = new Option<string?>("--to") { Description = "Destination pod, as POD or NAMESPACE/POD, or an IPv4 address" };
        var port = new Option<int>("--port") { Description = "Destination port (ICMP: the ICMP type)", Required = true };
        var proto = new Option<string>("--protocol") { Description = "TCP, UDP, SCTP or ICMP", DefaultValueFactory = _ => "TCP" };
        var cmd = new Command("trace", """
            Would a connection be allowed, and by which rule? Answers from the policy installed in the kernel,
            without sending traffic (as `cilium policy trace` does).

            Examples:
              trellis policy trace --from shop/frontend --to data/db --port 5432
              trellis policy trace --from shop/backend --to 8.8.8.8 --port 53 --protocol UDP
            """);
        cmd.Options.Add(from);
        cmd.Options.Add(to);
        cmd.Options.Add(port);
        cmd.Options.Add(proto);
        cmd.SetAction((r, ct) => Global.Run(async () =>
        {
            var (fns, fpod, fip) = Split(r.GetValue(from) ?? throw new LabException("--from is required"));
            var (tns, tpod, tip) = Split(r.GetValue(to) ?? throw new LabException("--to is required"));
            using var c = Global.Client(r);
            var t = await c.TraceAsync(new Trellis.Api.TraceRequest(fns, fpod, fip, tns, tpod, tip, r.GetValue(port), r.GetValue(proto)!), ct);
            Console.WriteLine($"source identity {t.SourceIdentity} -> destination identity {t.DestinationIdentity}, {r.GetValue(proto)!.ToUpperInvariant()}/{r.GetValue(port)}");
            foreach (var s in t.Steps)
                Console.WriteLine($"  {s.Verdict}{(s.PolicyName is null ? "" : $" (policy {(s.PolicyNamespace is null ? "" : s.PolicyNamespace + "/")}{s.PolicyName})")}");
            Console.WriteLine($"Final verdict: {(t.Allowed ? "ALLOWED" : "DENIED")}");
            return 0;
        }));
        return cmd;
    }

    private static (string? Ns, string? Pod, string? Ip) Split(string v)
    {
        if (System.Net.IPAddress.TryParse(v, out _)) return (null, null, v);
        var slash = v.IndexOf('/');
        return slash < 0 ? ("default", v, null) : (v[..slash], v[(slash + 1)..], null);
    }
}
