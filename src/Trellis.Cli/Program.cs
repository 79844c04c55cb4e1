using System.CommandLine;
using Trellis.Cli;
using Trellis.Cli.Commands;

var root = new RootCommand("""
    Trellis: a sidecarless service mesh with an eBPF datapath.

    Examples:
      trellis lab up -f examples/shop/lab.yaml
      trellis policy apply -f examples/shop/policy.yaml
      trellis observe --last 20
    """);
root.Options.Add(Global.Node);
root.Subcommands.Add(AgentCommand.Create());
root.Subcommands.Add(LabCommands.Create());
root.Subcommands.Add(PolicyCommands.Create());
root.Subcommands.Add(ObserveCommand.Create());
root.Subcommands.Add(MonitorCommand.Create());
root.Subcommands.Add(MapCommand.Create());
root.Subcommands.Add(StatusCommands.CreateStatus());
root.Subcommands.Add(StatusCommands.CreateEndpoint());
root.Subcommands.Add(StatusCommands.CreateIdentity());
root.Subcommands.Add(ConfigCommands.Create());
root.Subcommands.Add(ServiceCommands.Create());
return await root.Parse(args).InvokeAsync();
