using System.Globalization;
using static Trellis.Bench.Common.BenchArgs;

namespace Trellis.Bench.Mesh;

/// <summary>The command line. Defaults are the documented run; --quick is the CI smoke run, which only proves the
/// harness works end to end (its figures mean nothing: one second per run, no warm-up).</summary>
internal sealed record Options
{
    public int Rounds { get; init; } = 5;
    public int Duration { get; init; } = 3;
    public bool Quick { get; init; }
    public bool WarmUp { get; init; } = true;
    public required string Markdown { get; init; }
    /// <summary>The CPU nginx, iperf3 and the load generators run on; null = placed by the scheduler.</summary>
    public int? Cpu { get; init; }
    public string Node { get; init; } = "bench-mesh";
    public required string Trellis { get; init; }
    public required string RepoRoot { get; init; }
    public required IReadOnlyList<Case> Cases { get; init; }
    public required IReadOnlyList<Scenario> Scenarios { get; init; }
    /// <summary>Pods added at the end to measure the marginal memory of one more pod.</summary>
    public int ExtraPods { get; init; } = 20;
    /// <summary>Count the node's BPF programs' run time (kernel.bpf_stats_enabled) and report it per request.</summary>
    public bool BpfStats { get; init; }
    /// <summary>Only redraw the chart from a CSV of an earlier run (next to it, .png).</summary>
    public string? ChartFrom { get; init; }

    public const string Usage = """
        Usage: dotnet run -c Release --project bench/Trellis.Bench.Mesh -- [options]   (as root)
          --rounds N         rounds (default 5); each runs every case in every scenario once, the scenario order
                             rotating by one per round
          --duration S       seconds per wrk / iperf3 run (default 3)
          --quick            CI smoke run: 1 round, 1 s runs, no warm-up, cases ka1 and tcp, 3 extra pods, markdown
                             to /tmp/trellis-bench-mesh-quick/mesh.md unless --markdown is given; checks that every
                             scenario works, its figures mean nothing
          --markdown FILE    the results table (default bench/results/mesh.md); the chart goes next to it (.png)
          --cases LIST       comma-separated: ka1, ka16, ka64 (HTTP keep-alive, 1/16/64 connections), close16 (a new
                             connection per request, 16 connections), tcp (iperf3, one stream); default all
          --scenarios LIST   comma-separated subset of baseline, l4, accel, l7, sidecars, node-haproxy (default all;
                             baseline is always run: every ratio is taken against it)
          --pods N           pods added at the end for the marginal memory per pod (default 20)
          --cpu N            pin nginx, iperf3, wrk and the iperf3 client to CPU N (default: the last CPU)
          --no-pin           let the scheduler place them
          --no-warmup        skip the unrecorded 1 s run of every case and scenario before the first round
          --bpf-stats        enable kernel.bpf_stats_enabled during the runs and report the time Trellis's programs
                             take per request (adds a little to every BPF program's cost, so the L3/L4 ratios drop)
          --chart-from CSV   only redraw the chart of an earlier run from its CSV (the PNG goes next to it); give the
                             run's --duration for the title
          --node NAME        lab node name (default bench-mesh)
          --trellis PATH     the trellis CLI (default: ./trellis of this checkout)
        """;

    /// <summary>Null when --help was asked for (and printed).</summary>
    public static Options? Parse(string[] args)
    {
        if (args.Contains("--help") || args.Contains("-h"))
        {
            Console.WriteLine(Usage);
            return null;
        }
        var known = new HashSet<string> { "--rounds", "--duration", "--quick", "--markdown", "--cases", "--scenarios", "--pods", "--cpu", "--no-pin", "--no-warmup", "--bpf-stats", "--chart-from", "--node", "--trellis" };
        var withValue = new HashSet<string> { "--rounds", "--duration", "--markdown", "--cases", "--scenarios", "--pods", "--cpu", "--chart-from", "--node", "--trellis" };
        for (int i = 0; i < args.Length; i++)
        {
            if (!known.Contains(args[i]))
                throw new ArgumentException($"unknown argument '{args[i]}' (see --help)");
            if (withValue.Contains(args[i]) && ++i >= args.Length)
                throw new ArgumentException($"{args[i - 1]} needs a value");
        }

        bool quick = args.Contains("--quick");
        var repo = RepoRoot() ?? throw new ArgumentException("cannot find the repository root (Trellis.slnx) above the current directory");
        var cases = Opt(args, "--cases") is { } cl
            ? cl.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(k => Case.All.FirstOrDefault(c => c.Key == k) ?? throw new ArgumentException($"unknown case '{k}' in --cases ({string.Join(", ", Case.All.Select(c => c.Key))})"))
                .ToList()
            : Case.All.Where(c => !quick || c.Key is "ka1" or "tcp").ToList();
        var scenarios = Opt(args, "--scenarios") is { } sl
            ? sl.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(k => Scenario.All.FirstOrDefault(s => s.Key == k) ?? throw new ArgumentException($"unknown scenario '{k}' in --scenarios ({string.Join(", ", Scenario.All.Select(s => s.Key))})"))
                .Prepend(Scenario.Baseline).Distinct().OrderBy(s => s.Kind).ToList()
            : Scenario.All.ToList();
        if (cases.Count == 0)
            throw new ArgumentException("--cases is empty");

        int? cpu = Environment.ProcessorCount - 1;
        if (args.Contains("--no-pin")) cpu = null;
        else if (Opt(args, "--cpu") is { } c)
            cpu = int.TryParse(c, NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n < Environment.ProcessorCount ? n
                : throw new ArgumentException($"--cpu needs a CPU number below {Environment.ProcessorCount}, not '{c}'");

        return new Options
        {
            Quick = quick,
            Rounds = IntOpt(args, "--rounds", quick ? 1 : 5),
            Duration = IntOpt(args, "--duration", quick ? 1 : 3),
            WarmUp = !quick && !args.Contains("--no-warmup"),
            BpfStats = args.Contains("--bpf-stats"),
            ChartFrom = Opt(args, "--chart-from") is { } chart ? Path.GetFullPath(chart) : null,
            ExtraPods = IntOpt(args, "--pods", quick ? 3 : 20),
            Markdown = Path.GetFullPath(Opt(args, "--markdown")
                ?? (quick ? "/tmp/trellis-bench-mesh-quick/mesh.md" : Path.Combine(repo, "bench", "results", "mesh.md"))),
            Cpu = cpu,
            Node = Opt(args, "--node") ?? "bench-mesh",
            Trellis = Opt(args, "--trellis") is { } t ? Path.GetFullPath(t) : Path.Combine(repo, "trellis"),
            RepoRoot = repo,
            Cases = cases,
            Scenarios = scenarios,
        };
    }
}
