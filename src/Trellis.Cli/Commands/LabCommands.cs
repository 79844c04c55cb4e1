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
        lab.Subcommands.Add(HostExec());
        lab.Subcommands.Add(Delete());
        return lab;
    }

    private static Command Up()
    {
        var file = new Option<FileInfo>("--file", "-f") { Description = "Lab file: Namespace and Pod resources (and optionally policies)", Required = true };
        var podCidr = new Option<string>("--pod-cidr") { Description = "The node's pod CIDR", DefaultValueFactory = _ => "10.200.0.0/24" };
        var etcd = Global.EtcdOption("Start the node's agent in a cluster: etcd client URLs, comma-separated (see 'trellis agent --help')");
        var cluster = Global.ClusterOption();
        var cmd = new Command("up", """
            Create the node (starting its agent if none runs) and the pods of a lab file, then start each pod's command.
            Running it again adds what is missing.

            Example:
              trellis lab up -f examples/shop/lab.yaml
              trellis --node n2 lab up -f examples/shop/lab.yaml --pod-cidr 10.200.1.0/24 --etcd http://127.0.0.1:2379
            """);
        cmd.Options.Add(file);
        cmd.Options.Add(podCidr);
        cmd.Options.Add(etcd);
        cmd.Options.Add(cluster);
        cmd.SetAction((r, ct) => Global.Run(async () =>
        {
            var f = r.GetValue(file)!;
            if (!f.Exists) throw new LabException($"lab file {f} does not exist");
            var spec = LabRunner.Load(f.ToString());
            var runner = new LabRunner(new LabOptions
            {
                Node = r.GetValue(Global.Node)!,
                PodCidr = r.GetValue(podCidr)!,
                Etcd = r.GetValue(etcd),
                Cluster = r.GetValue(cluster)!,
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

    private static Command HostExec()
    {
        var command = new Argument<string[]>("command") { Description = "Command and arguments (after --)", Arity = ArgumentArity.OneOrMore };
        var cmd = new Command("host-exec", """
            Run a command on the lab's node itself (its network namespace, inside the node's cgroup so service
            addresses are load-balanced for it as for pods). Exits with the command's exit code.

            Example:
              trellis lab host-exec -- curl -s http://10.200.0.1:30080/
            """);
        cmd.Arguments.Add(command);
        cmd.SetAction(r => Global.Run(() => Task.FromResult(LabRunner.ExecHost(r.GetValue(Global.Node)!, r.GetValue(command)!))));
        return cmd;
    }

    private static Command Delete()
    {
        var pod = new Argument<string>("pod") { Description = "Pod name" };
        var ns = new Option<string>("--namespace", "-n") { Description = "Pod namespace", DefaultValueFactory = _ => "default" };
        var grace = new Option<double>("--grace-period") { Description = "Seconds the pod keeps running as a terminating backend before it is stopped", DefaultValueFactory = _ => 0 };
        var cmd = new Command("delete", """
            Delete one pod. With --grace-period it turns terminating first: services send it no new connections while
            its open ones continue, then it is stopped and removed (as Kubernetes deletes a pod).

            Example:
              trellis lab delete backend-2 -n shop --grace-period 30
            """);
        cmd.Arguments.Add(pod);
        cmd.Options.Add(ns);
        cmd.Options.Add(grace);
        cmd.SetAction((r, ct) => Global.Run(async () =>
        {
            var seconds = r.GetValue(grace);
            if (seconds < 0 || double.IsNaN(seconds))
                throw new LabException($"--grace-period must be 0 or more seconds, not {seconds}");
            var runner = new LabRunner(new LabOptions { Node = r.GetValue(Global.Node)!, TrellisCommand = Global.SelfCommand(), Progress = Console.WriteLine });
            await runner.DeletePodAsync(r.GetValue(ns)!, r.GetValue(pod)!, TimeSpan.FromSeconds(seconds), ct);
            return 0;
        }));
        return cmd;
    }
}
