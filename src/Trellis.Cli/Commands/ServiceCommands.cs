using System.CommandLine;
using Spectre.Console;
using Trellis.Lab;

namespace Trellis.Cli.Commands;

internal static class ServiceCommands
{
    public static Command Create()
    {
        var service = new Command("service", "Services (ClusterIP, NodePort), load-balanced in the kernel: at connect time for local sockets, per packet for NodePort traffic from outside.");
        service.Subcommands.Add(Apply());
        service.Subcommands.Add(List());
        service.Subcommands.Add(Delete());
        service.Subcommands.Add(BackendState());
        return service;
    }

    private static Command Apply()
    {
        var file = new Option<FileInfo>("--file", "-f") { Description = "YAML file with v1 Service and discovery.k8s.io/v1 EndpointSlice resources", Required = true };
        var cmd = new Command("apply", """
            Create or update services, and the EndpointSlices that give a service without selector its backends.
            The whole file is checked first; nothing is applied if any document is invalid.

            Example:
              trellis service apply -f examples/shop/services.yaml
            """);
        cmd.Options.Add(file);
        cmd.SetAction((r, ct) => Global.Run(async () =>
        {
            var f = r.GetValue(file)!;
            if (!f.Exists) throw new LabException($"service file {f} does not exist");
            var text = await File.ReadAllTextAsync(f.FullName, ct);
            Trellis.Policy.ManifestParser.Parse(text, f.ToString());
            using var c = Global.Client(r);
            foreach (var s in await c.ApplyServicesAsync(f.ToString(), text, ct))
                Console.WriteLine($"service {s.Namespace}/{s.Name} applied: {s.ClusterIp} ({string.Join(", ", s.Ports.Select(p => $"{p.Port}/{p.Protocol}{(p.NodePort is { } np ? $" nodePort {np}" : "")}: {p.Backends.Count(b => b.InUse)} backends"))})");
            return 0;
        }));
        return cmd;
    }

    private static Command List()
    {
        var output = Global.OutputOption();
        var cmd = new Command("list", """
            List services: each frontend (service IP, port, protocol) and its backends with their state.

            Example:
              trellis service list
            """);
        cmd.Options.Add(output);
        cmd.SetAction((r, ct) => Global.Run(async () =>
        {
            using var c = Global.Client(r);
            var services = await c.ServicesAsync(ct);
            if (Global.PrintedJson(r, output, services)) return 0;
            var t = new Table().AddColumns("SERVICE", "TYPE", "FRONTEND", "TARGET", "AFFINITY", "POLICY", "BACKENDS");
            foreach (var s in services)
                foreach (var p in s.Ports)
                    t.AddRow(Markup.Escape($"{s.Namespace}/{s.Name}"), s.Type,
                        Markup.Escape($"{s.ClusterIp}:{p.Port}/{p.Protocol}" + (p.NodePort is { } np ? $"\n<node>:{np}/{p.Protocol} ({s.Algorithm})" : "")),
                        Markup.Escape(p.TargetPort), s.SessionAffinity,
                        Markup.Escape($"internal {s.InternalTrafficPolicy}" + (s.ExternalTrafficPolicy is { } etp ? $"\nexternal {etp}" : "")),
                        p.Backends.Count == 0 ? "[red](none)[/]" : string.Join(Environment.NewLine, p.Backends.Select(Backend)));
            Global.Out.Write(t);
            return 0;
        }));
        return cmd;
    }

    private static string Backend(Trellis.Api.ServiceBackendDto b)
    {
        var colour = b.State switch { "active" => "green", "terminating" => "yellow", _ => "red" };
        var who = Markup.Escape($"{b.Ip}:{b.Port} ({b.Pod}{(b.Local ? "" : ", remote")}, ");
        var note = b.State == "terminating" && b.InUse ? " [yellow](in use: no active backend left)[/]"
            : b.State == "active" && !b.InUse ? " [grey](not used: internalTrafficPolicy Local)[/]" : "";
        return $"{who}[{colour}]{b.State}[/]){note}";
    }

    private static Command Delete()
    {
        var name = new Argument<string>("name") { Description = "Service (or, with --endpointslice, EndpointSlice) name" };
        var ns = new Option<string>("--namespace", "-n") { Description = "Namespace", DefaultValueFactory = _ => "default" };
        var slice = new Option<bool>("--endpointslice") { Description = "Delete an EndpointSlice instead of a service" };
        var cmd = new Command("delete", """
            Delete a service (new connections to its addresses are no longer translated; open ones continue), or
            an EndpointSlice (its addresses stop being backends).

            Examples:
              trellis service delete backend -n shop
              trellis service delete legacy-db-1 -n shop --endpointslice
            """);
        cmd.Arguments.Add(name);
        cmd.Options.Add(ns);
        cmd.Options.Add(slice);
        cmd.SetAction((r, ct) => Global.Run(async () =>
        {
            using var c = Global.Client(r);
            if (r.GetValue(slice))
            {
                await c.DeleteEndpointSliceAsync(r.GetValue(ns)!, r.GetValue(name)!, ct);
                Console.WriteLine($"endpointslice {r.GetValue(ns)}/{r.GetValue(name)} deleted");
            }
            else
            {
                await c.DeleteServiceAsync(r.GetValue(ns)!, r.GetValue(name)!, ct);
                Console.WriteLine($"service {r.GetValue(ns)}/{r.GetValue(name)} deleted");
            }
            return 0;
        }));
        return cmd;
    }

    private static Command BackendState()
    {
        var address = new Argument<string>("address") { Description = "Backend address IP:PORT, as 'trellis service list' shows it" };
        var state = new Argument<string>("state") { Description = "quarantined, maintenance, or active (to clear)" };
        state.AcceptOnlyFromAmong("quarantined", "maintenance", "active");
        var cmd = new Command("backend-state", """
            Take a backend out of load balancing on every service that has it (quarantined: found unhealthy;
            maintenance: drained by an operator), or put it back (active). Open connections continue; new ones
            avoid it. The state is kept across agent restarts.

            Examples:
              trellis service backend-state 10.200.0.7:8080 quarantined
              trellis service backend-state 10.200.0.7:8080 active
            """);
        cmd.Arguments.Add(address);
        cmd.Arguments.Add(state);
        cmd.SetAction((r, ct) => Global.Run(async () =>
        {
            using var c = Global.Client(r);
            await c.SetBackendStateAsync(r.GetValue(address)!, r.GetValue(state)!, ct);
            Console.WriteLine($"backend {r.GetValue(address)} is {r.GetValue(state)}");
            return 0;
        }));
        return cmd;
    }
}
