using System.CommandLine;
using Spectre.Console;
using Trellis.Api;
using Trellis.Bpf;
using Trellis.Datapath;
using Trellis.Lab;
using Trellis.Policy;

namespace Trellis.Cli;

internal static class Global
{
    public static readonly Option<string> Node = new("--node")
    {
        Description = "The node (lab) to talk to; also $TRELLIS_NODE",
        Recursive = true,
        DefaultValueFactory = _ => Environment.GetEnvironmentVariable("TRELLIS_NODE") is { Length: > 0 } n ? n : AgentPaths.DefaultNode,
    };

    public static AgentClient Client(ParseResult r) => new(AgentPaths.Socket(r.GetValue(Node)!));

    /// <summary>Runs a command body, turning the errors users can cause into one line on stderr and exit 1.</summary>
    public static async Task<int> Run(Func<Task<int>> body)
    {
        try
        {
            return await body();
        }
        catch (Exception e) when (e is ManifestException or LabException or AgentRequestException or AgentUnavailableException
                                       or DatapathException or BpfException or Trellis.Agent.AgentException
                                       or Trellis.Agent.State.Etcd.EtcdException)
        {
            Console.Error.WriteLine($"Error: {e.Message}");
            return 1;
        }
        catch (HttpRequestException e)
        {
            Console.Error.WriteLine($"Error: talking to the agent failed: {e.Message}");
            return 1;
        }
        catch (UnauthorizedAccessException e)
        {
            Console.Error.WriteLine($"Error: {e.Message} (Trellis needs root)");
            return 1;
        }
        catch (OperationCanceledException)
        {
            return 130;
        }
    }

    public static IAnsiConsole Out { get; } = CreateOut();

    private static IAnsiConsole CreateOut()
    {
        var c = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(Console.Out),
            Ansi = Console.IsOutputRedirected ? AnsiSupport.No : AnsiSupport.Detect,
            ColorSystem = Console.IsOutputRedirected ? ColorSystemSupport.NoColors : ColorSystemSupport.Detect,
        });
        // Piped output has no terminal width; don't wrap tables and flow lines at 80 columns.
        if (Console.IsOutputRedirected) c.Profile.Width = 400;
        return c;
    }

    /// <summary>The `-o table|json` option list commands share.</summary>
    /// <summary>--etcd URL[,URL...]: checked when parsed, so a bad URL fails before anything starts.</summary>
    public static Option<string> EtcdOption(string description)
    {
        var o = new Option<string>("--etcd") { Description = description };
        o.Validators.Add(r =>
        {
            try { Trellis.Agent.State.Etcd.EtcdOptions.ParseEndpoints(r.GetValueOrDefault<string>() ?? ""); }
            catch (FormatException e) { r.AddError($"--etcd: {e.Message}"); }
        });
        return o;
    }

    public static Option<string> ClusterOption()
    {
        var o = new Option<string>("--cluster") { Description = "The cluster's name in etcd (with --etcd)", DefaultValueFactory = _ => "default" };
        o.Validators.Add(r =>
        {
            var v = r.GetValueOrDefault<string>() ?? "";
            if (!Trellis.Agent.State.Etcd.EtcdOptions.IsValidClusterName(v))
                r.AddError($"--cluster: '{v}' is not a valid cluster name (lowercase letters, digits and '-', at most 63)");
        });
        return o;
    }

    public static Option<string> OutputOption()
    {
        var o = new Option<string>("--output", "-o") { Description = "table or json", DefaultValueFactory = _ => "table" };
        o.AcceptOnlyFromAmong("table", "json");
        return o;
    }

    /// <summary>Prints <paramref name="value"/> as JSON when -o json was asked for; false means draw the table.</summary>
    public static bool PrintedJson<T>(ParseResult r, Option<string> output, T value)
    {
        if (r.GetValue(output) != "json") return false;
        Console.WriteLine(System.Text.Json.JsonSerializer.Serialize(value, AgentClient.Json));
        return true;
    }

    /// <summary>How to start this same program again (for `lab up` starting the agent).</summary>
    public static IReadOnlyList<string> SelfCommand()
    {
        var exe = Environment.ProcessPath ?? throw new InvalidOperationException("cannot tell where the trellis executable is");
        if (Path.GetFileNameWithoutExtension(exe) == "dotnet")
            return [exe, typeof(Global).Assembly.Location];
        return [exe];
    }
}
