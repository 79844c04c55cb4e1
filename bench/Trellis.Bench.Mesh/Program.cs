// Run (as root; nginx, wrk, iperf3, haproxy, nftables and gnuplot come from scripts/install-deps.sh):
//   dotnet run -c Release --project bench/Trellis.Bench.Mesh -- [--rounds 5] [--duration 3] [--quick] [--markdown FILE]
//     [--cases ka1,ka16,ka64,close16,tcp] [--scenarios baseline,l4,accel,l7,sidecars,node-haproxy] [--pods 20]
//     [--cpu N | --no-pin] [--no-warmup] [--bpf-stats] [--node bench-mesh] [--trellis PATH]
//   dotnet run -c Release --project bench/Trellis.Bench.Mesh -- --chart-from bench/results/mesh.csv --duration 3   (redraw only)
using Trellis.Api;
using Trellis.Bench.Common;
using Trellis.Bench.Mesh;
using Trellis.Lab;

// Issue 7: what the mesh costs on the data path, against no mesh at all and against the proxies a user could run
// instead. One node, one client pod (wrk, iperf3) and one server pod (nginx, iperf3 -s); every scenario runs on
// them (the baseline on a copy of their plumbing without Trellis, see MeshBench.SetUpBaseline), interleaved per
// round so the noise of a small shared machine hits all of them. Every run is checked to have taken its path
// (translated connects, L7 records, HAProxy counters); a run with socket errors or non-2xx answers stops the bench.
Options options;
try
{
    if (Options.Parse(args) is not { } parsed) return 0;
    options = parsed;
}
catch (ArgumentException e)
{
    Console.Error.WriteLine($"error: {e.Message}");
    return 2;
}

if (options.ChartFrom is { } csvIn)
{
    try
    {
        var runs = Report.ReadCsv(csvIn);
        var scenarios = Scenario.All.Where(s => runs.Any(r => r.Scenario == s)).ToList();
        var pngOut = Path.ChangeExtension(csvIn, ".png");
        Report.DrawChart(options, scenarios, runs, pngOut, Path.GetDirectoryName(pngOut)!, CancellationToken.None);
        foreach (var f in new[] { "rps.dat", "p99.dat", "chart.gp" })
            File.Delete(Path.Combine(Path.GetDirectoryName(pngOut)!, f));
        Console.Error.WriteLine($"wrote {pngOut}");
        return 0;
    }
    catch (Exception e) when (e is BenchException or IOException or FormatException or InvalidOperationException)
    {
        Console.Error.WriteLine($"error: {e.Message}");
        return 1;
    }
}

// A signal unwinds through the finally that removes the lab, the baseline and the proxies.
using var signals = new SignalCancellation();

var bench = new MeshBench(options, signals.Token);
var started = DateTime.UtcNow;
var loadBefore = Host.LoadAverage();
try
{
    await bench.RunAsync();
    var report = new Report(options, bench, loadBefore, Host.LoadAverage());
    var markdown = report.Markdown();
    Directory.CreateDirectory(Path.GetDirectoryName(options.Markdown)!);
    File.WriteAllText(options.Markdown, markdown);
    var png = Path.ChangeExtension(options.Markdown, ".png");
    var csv = Path.ChangeExtension(options.Markdown, ".csv");
    File.WriteAllText(csv, report.Csv());
    report.Chart(png, bench.WorkDir, signals.Token);
    Console.WriteLine();
    Console.WriteLine(markdown);
    Console.Error.WriteLine($"wrote {options.Markdown}, {png} and {csv} (the runs) in {(DateTime.UtcNow - started).TotalSeconds:0} s");
    return 0;
}
catch (OperationCanceledException) when (signals.IsCancellationRequested)
{
    Console.Error.WriteLine("interrupted");
    return 130;
}
catch (Exception e) when (e is BenchException or LabException or AgentUnavailableException or AgentRequestException or HttpRequestException or IOException)
{
    Console.Error.WriteLine($"error: {e.Message}");
    return 1;
}
catch (Exception e)
{
    // A bug of the bench itself (or a tool's output it cannot read): the whole story, and still the cleanup below.
    Console.Error.WriteLine($"error: unexpected: {e}");
    return 1;
}
finally
{
    bench.Cleanup();
}
