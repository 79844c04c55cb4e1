using System.CommandLine;
using Spectre.Console;
using Trellis.Lab;

namespace Trellis.Cli.Commands;

internal static class ServiceCommands
{
    public static Command Create()
    {
        var service = new Command("service", "ClusterIP services, load-balanced in the kernel at connect time (no proxy, no iptables).");
        service.Subcommands.Add(Apply());
        service.Subcommands.Add(List());
        service.Subcommands.Add(Delete());
        return service;
    }

    private static Command Apply()
    {
        var file = new Option<FileInfo>("--file", "-f") { Description = "YAML file with one or more v1 Service resources", Required = true };
        var cmd = new Command("apply", """
            Create or update services. The whole file is checked first; nothing is applied if any document is invalid.

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
                Console.WriteLine($"service {s.Namespace}/{s.Name} applied: {s.ClusterIp} ({string.Join(", ", s.Ports.Select(p => $"{p.Port}/{p.Protocol}: {p.Backends.Count} backends"))})");
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
            var t = new Table().AddColumns("SERVICE", "TYPE", "FRONTEND", "TARGET", "AFFINITY", "BACKENDS");
            foreach (var s in services)
                foreach (var p in s.Ports)
                    t.AddRow($"{s.Namespace}/{s.Name}", s.Type, $"{s.ClusterIp}:{p.Port}/{p.Protocol}", p.TargetPort, s.SessionAffinity,
                        p.Backends.Count == 0 ? "[red](none)[/]" : Markup.Escape(string.Join(Environment.NewLine, p.Backends.Select(b => $"{b.Ip}:{b.Port} ({b.Pod}, {b.State})"))));
            Global.Out.Write(t);
            return 0;
        }));
        return cmd;
    }

    private static Command Delete()
    {
        var name = new Argument<string>("name") { Description = "Service name" };
        var ns = new Option<string>("--namespace", "-n") { Description = "Service namespace", DefaultValueFactory = _ => "default" };
        var cmd = new Command("delete", """
            Delete a service; new connections to its address are no longer translated.

            Example:
              trellis service delete backend -n shop
            """);
        cmd.Arguments.Add(name);
        cmd.Options.Add(ns);
        cmd.SetAction((r, ct) => Global.Run(async () =>
        {
            using var c = Global.Client(r);
            await c.DeleteServiceAsync(r.GetValue(ns)!, r.GetValue(name)!, ct);
            Console.WriteLine($"service {r.GetValue(ns)}/{r.GetValue(name)} deleted");
            return 0;
        }));
        return cmd;
    }
}
