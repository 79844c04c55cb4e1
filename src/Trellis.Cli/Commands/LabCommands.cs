using System.CommandLine;
using Trellis.Lab;

namespace Trellis.Cli.Commands;

internal static class LabCommands
{
    public static Command Create()
    {
        var lab = new Command("lab", "A one-node lab cluster on this machine: pods are network namespaces, the node runs the agent.");
        lab.Subcommands.Add(Up());
        lab.Subcommands.Add(Down());
        lab.Subcommands.Add(Exec());
        return lab;
    }

    private static Command Up()
    {
        var file = new Option<FileInfo>("--file", "-f") { Description = "Lab file: Namespace and Pod resources (and optionally policies)", Required = true };
        var podCidr = new Option<string>("--pod-cidr") { Description = "The node's pod CIDR", DefaultValueFactory = _ => "10.200.0.0/24" };
        var cmd = new Command("up", """
            Create the node (starting its agent if none runs) and the pods of a lab file, then start each pod's command.
            Running it again adds what is missing.

            Example:
              trellis lab up -f examples/shop/lab.yaml
            """);
        cmd.Options.Add(file);
        cmd.Options.Add(podCidr);
        cmd.SetAction((r, ct) => Global.Run(async () =>
        {
            var f = r.GetValue(file)!;
            if (!f.Exists) throw new LabException($"lab file {f} does not exist");
            var spec = LabRunner.Load(f.ToString());
            var runner = new LabRunner(new LabOptions
            {
                Node = r.GetValue(Global.Node)!,
                PodCidr = r.GetValue(podCidr)!,
                TrellisCommand = Global.SelfCommand(),
                Progress = Console.WriteLine,
            });
            await runner.UpAsync(spec, ct);
            Console.WriteLine($"lab is up: {spec.Pods.Count} pods on node {r.GetValue(Global.Node)}. Try 'trellis endpoint list' and 'trellis observe'.");
            return 0;
        }));
        return cmd;
    }

    private static Command Down()
    {
        var cmd = new Command("down", """
            Remove everything the lab made for the node: pods and their processes, veths, namespaces, cgroups,
            the agent, pinned BPF objects and state. Safe to run more than once.

            Example:
              trellis lab down
            """);
        cmd.SetAction(r => Global.Run(() =>
        {
            LabRunner.Down(r.GetValue(Global.Node)!, Console.WriteLine);
            Console.WriteLine($"node {r.GetValue(Global.Node)} is down");
            return Task.FromResult(0);
        }));
        return cmd;
    }

    private static Command Exec()
    {
        var pod = new Argument<string>("pod") { Description = "Pod name" };
        var ns = new Option<string>("--namespace", "-n") { Description = "Pod namespace", DefaultValueFactory = _ => "default" };
        var command = new Argument<string[]>("command") { Description = "Command and arguments (after --)", Arity = ArgumentArity.OneOrMore };
        var cmd = new Command("exec", """
            Run a command inside a pod: its network namespace and cgroup. Exits with the command's exit code.

            Example:
              trellis lab exec frontend -n shop -- curl -s http://10.200.0.3:8080/
            """);
        cmd.Arguments.Add(pod);
        cmd.Arguments.Add(command);
        cmd.Options.Add(ns);
        cmd.SetAction(r => Global.Run(() =>
            Task.FromResult(LabRunner.Exec(r.GetValue(Global.Node)!, r.GetValue(ns)!, r.GetValue(pod)!, r.GetValue(command)!))));
        return cmd;
    }
}
