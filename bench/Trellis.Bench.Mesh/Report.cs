using System.Globalization;
using System.Text;
using Trellis.Bench.Common;
using static Trellis.Bench.Common.Figures;

namespace Trellis.Bench.Mesh;

/// <summary>The results: a markdown table (min / median / max per figure and scenario, and the ratio to the
/// baseline as the median of paired ratios), the targets of issue 7, the raw runs as CSV and a PNG chart.</summary>
internal sealed class Report(Options o, MeshBench bench, string loadBefore, string loadAfter)
{
    readonly List<Run> runs = bench.Runs;
    readonly Scenario baseline = Scenario.Baseline;

    /// <summary>CPU per unit of work of one run: µs per request, or ms per GiB for a TCP run.</summary>
    public static string PerRequest(long ticks, Run r) =>
        r.Case.Tcp ? r.Bytes <= 0 ? "-" : $"{ticks / ProcFs.UserHz * 1e3 / (r.Bytes / 1073741824.0):0} ms"
        : CpuPerRequest(ticks, r.Requests);

    IEnumerable<Run> Of(Scenario s, Case c) => runs.Where(r => r.Scenario == s && r.Case == c);

    /// <summary>Median over rounds of X(round) / baseline(round): the runs of one round ran minutes apart at most,
    /// so a drift of the machine's load cancels out of each pair.</summary>
    double Paired(Scenario s, Case c, Func<Run, double> value, Scenario? against = null)
    {
        var reference = Of(against ?? baseline, c).ToDictionary(r => r.Round);
        return Median(Of(s, c).Where(r => reference.ContainsKey(r.Round)).Select(r => value(r) / value(reference[r.Round])));
    }

    static string Ratio(double r) => double.IsFinite(r) ? $"{r:0.00}x" : "-";

    string Spread(Scenario s, Case c, Func<Run, double> value, Func<double, string> fmt)
    {
        var v = Of(s, c).Select(value).Order().ToList();
        return v.Count == 0 ? "-" : $"{fmt(v[0])} / **{fmt(Median(v))}** / {fmt(v[^1])}";
    }

    static string Rate(double v) => v.ToString("N0", CultureInfo.InvariantCulture);
    static string Gbps(double bps) => $"{bps / 1e9:0.00}";

    public string Markdown()
    {
        var sb = new StringBuilder();
        var http = o.Cases.Where(c => !c.Tcp).ToList();
        var tcp = o.Cases.FirstOrDefault(c => c.Tcp);
        var scenarios = bench.Scenarios;
        sb.AppendLine($"Machine: {Host.Describe()}. Tools: {Tools()}. Trellis {bench.TrellisVersion}.");
        sb.AppendLine($"{o.Rounds} round(s) x {o.Duration} s per run{(o.WarmUp ? " after a 1 s warm-up of every path" : "")}, scenario order rotating by one per round; " +
            (o.Cpu is { } cpu ? $"nginx, iperf3, wrk and the iperf3 client pinned to CPU {cpu}, the agent and the proxies not pinned" : "nothing pinned") +
            $"; load average before / after: {loadBefore} / {loadAfter}.");
        if (o.Quick)
            sb.AppendLine("**--quick: a smoke run (one 1 s run per figure, no warm-up). These figures mean nothing.**");
        sb.AppendLine();
        sb.AppendLine("Cells: min / **median** / max over the rounds. \"x baseline\": median over the rounds of the scenario's figure divided by the " +
            "baseline's of the same round (for latency, above 1 is slower).");
        if (bench.AccelUnavailable is { } why)
            sb.AppendLine($"Scenario 3 (Trellis + socket acceleration) was not run: {why}.");
        else if (scenarios.Any(s => s.Kind == Kind.Accel))
            sb.AppendLine($"Socket acceleration: switched on (`trellis config --socket-acceleration on`) for its runs only; {bench.SockOpsSeen}.");

        foreach (var c in http)
        {
            sb.AppendLine();
            sb.AppendLine($"**{c.Label}**");
            sb.AppendLine();
            sb.AppendLine("| scenario | requests/s | x baseline | latency p50 | x baseline | latency p99 | x baseline |");
            sb.AppendLine("|---|---|---|---|---|---|---|");
            foreach (var s in scenarios)
                sb.AppendLine($"| {s.Name} | {Spread(s, c, r => r.RequestsPerSec, Rate)} | {(s == baseline ? "1" : Ratio(Paired(s, c, r => r.RequestsPerSec)))} " +
                    $"| {Spread(s, c, r => r.P50Us, Us)} | {(s == baseline ? "1" : Ratio(Paired(s, c, r => r.P50Us)))} " +
                    $"| {Spread(s, c, r => r.P99Us, Us)} | {(s == baseline ? "1" : Ratio(Paired(s, c, r => r.P99Us)))} |");
        }
        if (tcp is not null)
        {
            sb.AppendLine();
            sb.AppendLine($"**{tcp.Label}** (iperf3 -t {o.Duration}, client pod to server pod, received throughput)");
            sb.AppendLine();
            sb.AppendLine("| scenario | Gbit/s | x baseline | proxies' CPU per GiB |");
            sb.AppendLine("|---|---|---|---|");
            foreach (var s in scenarios)
                sb.AppendLine(s.Supports(tcp)
                    ? $"| {s.Name} | {Spread(s, tcp, r => r.BitsPerSecond, Gbps)} | {(s == baseline ? "1" : Ratio(Paired(s, tcp, r => r.BitsPerSecond)))} | {CpuPer(s, tcp, u => u.NodeProxy + u.Sidecars)} |"
                    : $"| {s.Name} | n/a: the L7 proxy speaks HTTP only (flows without HTTP rules never reach it: that is the L3/L4 row) | | |");
        }

        sb.AppendLine();
        sb.AppendLine("**Packets through Trellis's TC programs** (the agent's forwarded-packets counter over all rounds, per request; TCP: per MiB)");
        sb.AppendLine();
        sb.AppendLine("| scenario | " + string.Join(" | ", o.Cases.Select(c => c.Key)) + " |");
        sb.AppendLine("|---|" + string.Concat(o.Cases.Select(_ => "---|")));
        foreach (var s in scenarios.Where(s => s != baseline))
            sb.AppendLine($"| {s.Name} | " + string.Join(" | ", o.Cases.Select(c => Packets(s, c))) + " |");
        sb.AppendLine();
        sb.AppendLine("Each packet is counted at every TC program it passes that forwards it (the client's and the server's veth). " +
            "With socket acceleration only handshakes and closes cross them; through the proxies the hops inside the node show too.");

        if (o.BpfStats)
            BpfStatsSection(sb, scenarios);

        sb.AppendLine();
        sb.AppendLine("**CPU time of the mesh's processes per request** (utime + stime from /proc/PID/stat over all rounds' runs, divided by " +
            "the requests wrk completed; in brackets the share of one CPU over the runs' wall time)");
        sb.AppendLine();
        sb.AppendLine("| scenario | " + string.Join(" | ", http.Select(c => c.Key)) + " |");
        sb.AppendLine("|---|" + string.Concat(http.Select(_ => "---|")));
        foreach (var s in scenarios)
            sb.AppendLine($"| {s.Name} | " + string.Join(" | ", http.Select(c => CpuBreakdown(s, c))) + " |");
        sb.AppendLine();
        sb.AppendLine("agent = trellis agent (flow events, API); proxy = trellis-proxy (L7) or the node HAProxy; sidecars = both HAProxy sidecars. " +
            "The agent runs in every scenario; in the baseline's row it is idle background work, the floor of that column. " +
            "Kernel work (TC and socket programs, the TCP stack, softirq) is charged to whichever process was running, mostly nginx and wrk, " +
            "and is not in these columns: it shows in the request rate, as everything but the proxies runs on one CPU.");

        sb.AppendLine();
        sb.AppendLine("**Memory**");
        sb.AppendLine();
        sb.AppendLine("| process | when | RSS | peak RSS | PSS |");
        sb.AppendLine("|---|---|---|---|---|");
        foreach (var m in bench.Memory)
            sb.AppendLine($"| {m.Process} | {m.When} | {Mib(m.RssKb)} | {Mib(m.HwmKb)} | {Mib(m.PssKb)} |");
        if (bench.Pods is { } p)
        {
            sb.AppendLine();
            sb.AppendLine($"Marginal memory of one more pod, from adding {p.Pods} pods (`sleep infinity`, labelled like the client, so its " +
                "egress policy with the HTTP rule selects each; the pod's own netns, veth and process are not counted):");
            sb.AppendLine();
            sb.AppendLine("| | before | after | per added pod |");
            sb.AppendLine("|---|---|---|---|");
            sb.AppendLine($"| agent RSS (median of 5 samples) | {Mib(p.AgentRssBeforeKb)} | {Mib(p.AgentRssAfterKb)} | {Kb(p.AgentPerPodBytes)} |");
            sb.AppendLine($"| node BPF maps (bytes_memlock; {p.MapsBefore} -> {p.MapsAfter} maps incl. per-endpoint policy maps) | {Mib(p.MapBytesBefore / 1024)} | {Mib(p.MapBytesAfter / 1024)} | {Kb(p.MapsPerPodBytes)} |");
            if (p.ProxyRssBeforeKb >= 0)
                sb.AppendLine($"| trellis-proxy RSS (for reference: its rule file lists the new endpoints) | {Mib(p.ProxyRssBeforeKb)} | {Mib(p.ProxyRssAfterKb)} | {Kb((p.ProxyRssAfterKb - p.ProxyRssBeforeKb) * 1024.0 / p.Pods)} |");
            sb.AppendLine($"| **Trellis per pod (agent + maps)** | | | **{Kb(p.AgentPerPodBytes + p.MapsPerPodBytes)}** |");
            if (bench.Memory.Where(m => m.Process.StartsWith("HAProxy sidecar", StringComparison.Ordinal)).ToList() is { Count: > 0 } sc)
                sb.AppendLine($"| one more HAProxy sidecar (RSS; PSS), this minimal config | | | {string.Join(", ", sc.Select(m => $"{Mib(m.RssKb)}; {Mib(m.PssKb)}"))} |");
        }

        sb.AppendLine();
        sb.AppendLine("**Targets (issue 7)**");
        sb.AppendLine();
        foreach (var line in Targets())
            sb.AppendLine($"- {line}");
        return sb.ToString();
    }

    /// <summary>--bpf-stats: what the node's programs cost per request (TCP: per MiB), by program, over all rounds.</summary>
    void BpfStatsSection(StringBuilder sb, IReadOnlyList<Scenario> scenarios)
    {
        sb.AppendLine();
        sb.AppendLine("**Trellis's TC programs** (kernel.bpf_stats_enabled, over all rounds: ns per run x runs per request (TCP: per MiB) = µs per " +
            "request (per MiB). The programs the agent's status lists, i.e. the TC programs on the pods' veths; the socket programs " +
            "(connect, sock_ops, sk_msg) are not in it)");
        sb.AppendLine();
        sb.AppendLine("| scenario | case | " + "programs |");
        sb.AppendLine("|---|---|---|");
        foreach (var s in scenarios.Where(s => s != baseline))
            foreach (var c in o.Cases.Where(s.Supports))
            {
                var sel = Of(s, c).Where(r => r.Programs is not null).ToList();
                double units = c.Tcp ? sel.Sum(r => (double)r.Bytes) / 1048576 : sel.Sum(r => (double)r.Requests);
                if (units <= 0) continue;
                var cells = sel.SelectMany(r => r.Programs!).GroupBy(p => p.Key)
                    .Select(g => (Name: g.Key, Ns: g.Aggregate(0.0, (a, p) => a + p.Value.Ns), Runs: g.Aggregate(0.0, (a, p) => a + p.Value.Runs)))
                    .Where(p => p.Runs > 0).OrderBy(p => p.Name, StringComparer.Ordinal)
                    .Select(p => $"{p.Name} {p.Ns / p.Runs:0} ns x {p.Runs / units:0.00} = {p.Ns / units / 1000:0.00} µs").ToList();
                var total = sel.SelectMany(r => r.Programs!).Sum(p => (double)p.Value.Ns) / units / 1000;
                sb.AppendLine($"| {s.Name} | {c.Key} | {(cells.Count == 0 ? "none ran" : string.Join("; ", cells) + $"; **total {total:0.00} µs**")} |");
            }
    }

    string Packets(Scenario s, Case c)
    {
        var sel = Of(s, c).ToList();
        if (sel.Count == 0) return "n/a";
        double per = c.Tcp ? sel.Sum(r => r.TcPackets) / (sel.Sum(r => (double)r.Bytes) / 1048576) : sel.Sum(r => (double)r.TcPackets) / sel.Sum(r => r.Requests);
        return per < 10 ? $"{per:0.00}" : $"{per:0}";
    }

    string CpuPer(Scenario s, Case c, Func<CpuUse, long> ticks)
    {
        var sel = Of(s, c).ToList();
        long t = sel.Sum(r => ticks(r.Cpu));
        double gib = sel.Sum(r => (double)r.Bytes) / 1073741824.0;
        return t == 0 ? "0" : gib <= 0 ? "-" : $"{t / ProcFs.UserHz * 1e3 / gib:0} ms";
    }

    string CpuBreakdown(Scenario s, Case c)
    {
        var sel = Of(s, c).ToList();
        long requests = sel.Sum(r => r.Requests);
        double wall = sel.Sum(r => r.WallSeconds);
        if (requests == 0 || wall <= 0) return "-";
        string Per(long ticks) => CpuPerRequest(ticks, requests);
        string Share(long ticks) => $"{ticks / ProcFs.UserHz / wall * 100:0.#}%";
        var agent = sel.Sum(r => r.Cpu.Agent);
        var proxy = sel.Sum(r => r.Cpu.NodeProxy);
        var sidecars = sel.Sum(r => r.Cpu.Sidecars);
        var parts = new List<string> { $"agent {Per(agent)} ({Share(agent)})" };
        if (s.Kind is Kind.L7 or Kind.NodeProxy) parts.Add($"proxy {Per(proxy)} ({Share(proxy)})");
        if (s.Kind == Kind.Sidecars) parts.Add($"sidecars {Per(sidecars)} ({Share(sidecars)})");
        return string.Join("; ", parts);
    }

    /// <summary>Issue 7's targets, each MET / NOT MET / NOT MEASURED with the figures it was judged on.</summary>
    public List<string> Targets()
    {
        var lines = new List<string>();
        var http = o.Cases.Where(c => !c.Tcp).ToList();
        var scenarios = bench.Scenarios;
        var l4 = scenarios.FirstOrDefault(s => s.Kind == Kind.L4);
        var accel = scenarios.FirstOrDefault(s => s.Kind == Kind.Accel);
        var sidecars = scenarios.FirstOrDefault(s => s.Kind == Kind.Sidecars);
        string List(Scenario s, Func<Run, double> v, Scenario? against = null) =>
            string.Join(", ", http.Select(c => $"{c.Key} {Ratio(Paired(s, c, v, against))}"));
        string Verdict(bool met) => met ? "**MET**" : "**NOT MET**";

        if (http.Count == 0)
            lines.Add("No HTTP case was run: the request-rate targets are not evaluated.");
        else if (l4 is null)
            lines.Add("Trellis L3/L4 vs baseline: NOT MEASURED (scenario l4 not selected).");
        else
        {
            lines.Add($"{Verdict(http.All(c => Paired(l4, c, r => r.RequestsPerSec) >= 0.95))} Trellis L3/L4 requests/s >= 0.95x baseline: {List(l4, r => r.RequestsPerSec)}.");
            lines.Add($"{Verdict(http.All(c => Paired(l4, c, r => r.P99Us) <= 1.10))} Trellis L3/L4 p99 <= 1.10x baseline: {List(l4, r => r.P99Us)}.");
        }
        if (accel is null)
            lines.Add($"**NOT MEASURED** socket acceleration above baseline: {bench.AccelUnavailable ?? "scenario accel not selected"}.");
        else if (http.Count > 0)
            lines.Add($"{Verdict(http.All(c => Paired(accel, c, r => r.RequestsPerSec) > 1.0))} with socket acceleration, requests/s above baseline: {List(accel, r => r.RequestsPerSec)}" +
                (l4 is not null ? $" (vs Trellis L3/L4: {List(accel, r => r.RequestsPerSec, l4)})" : "") + ".");
        if (sidecars is not null && http.Count > 0)
            lines.Add($"**REPORTED** sidecar model, requests/s: {List(sidecars, r => r.RequestsPerSec)} of baseline" +
                (l4 is not null ? $"; {List(sidecars, r => r.RequestsPerSec, l4)} of Trellis L3/L4; p99 {List(sidecars, r => r.P99Us, l4)} of Trellis L3/L4" : "") + ".");
        if (o.Cases.FirstOrDefault(c => c.Tcp) is { } tcp)
            lines.Add("TCP throughput (no target; for reading): " + string.Join(", ", scenarios.Where(s => s != baseline && s.Supports(tcp))
                .Select(s => $"{s.Short} {Ratio(Paired(s, tcp, r => r.BitsPerSecond))}")) + " of baseline.");
        if (bench.Pods is { } p)
        {
            var perPod = p.AgentPerPodBytes + p.MapsPerPodBytes;
            var sidecar = bench.Memory.Where(m => m.Process.StartsWith("HAProxy sidecar", StringComparison.Ordinal)).Select(m => m.RssKb).DefaultIfEmpty(-1).Max();
            lines.Add($"{Verdict(perPod < 1e6)} marginal memory per pod < 1 MB: {Kb(perPod)} per pod for Trellis (agent RSS {Kb(p.AgentPerPodBytes)} + BPF maps {Kb(p.MapsPerPodBytes)})" +
                (sidecar > 0 ? $" vs {Mib(sidecar)} RSS for one more HAProxy sidecar (an Envoy sidecar is commonly quoted at 50-100 MB)" : "") + ".");
        }
        return lines;
    }

    static string Mib(long kb) => kb < 0 ? "-" : $"{kb / 1024.0:0.0} MiB";
    static string Kb(double bytes) => Math.Abs(bytes) < 1024 * 1024 ? $"{bytes / 1024:0.#} KiB" : $"{bytes / 1048576:0.00} MiB";

    // --- raw runs and chart ---

    public string Csv()
    {
        var sb = new StringBuilder("round,case,scenario,wall_s,requests_per_s,requests,p50_us,p99_us,bits_per_s,bytes,agent_ticks,proxy_ticks,sidecar_ticks,tc_packets\n");
        foreach (var r in runs)
            sb.AppendLine(string.Join(',', new object[] { r.Round + 1, r.Case.Key, r.Scenario.Key, r.WallSeconds.ToString("0.000", CultureInfo.InvariantCulture),
                r.RequestsPerSec.ToString("0.0", CultureInfo.InvariantCulture), r.Requests, r.P50Us.ToString(CultureInfo.InvariantCulture), r.P99Us.ToString(CultureInfo.InvariantCulture),
                r.BitsPerSecond.ToString("0", CultureInfo.InvariantCulture), r.Bytes, r.Cpu.Agent, r.Cpu.NodeProxy, r.Cpu.Sidecars, r.TcPackets }));
        return sb.ToString();
    }

    public void Chart(string png, string workDir, CancellationToken ct) => DrawChart(o, bench.Scenarios, runs, png, workDir, ct);

    /// <summary>Two panels, one cluster of bars per scenario and one bar per HTTP case: requests/s (linear) and p99
    /// (log scale: the proxies' tails are orders of magnitude above the kernel paths'); bar = median, whisker = min..max.</summary>
    public static void DrawChart(Options o, IReadOnlyList<Scenario> scenarios, IReadOnlyList<Run> runs, string png, string workDir, CancellationToken ct)
    {
        var http = o.Cases.Where(c => !c.Tcp && runs.Any(r => r.Case == c)).ToList();
        if (http.Count == 0) return;
        string Data(Func<Run, double> value) => string.Concat(scenarios.Select(s =>
            $"\"{s.Short}\" " + string.Join(' ', http.Select(c =>
            {
                var v = runs.Where(r => r.Scenario == s && r.Case == c).Select(value).Order().ToList();
                return v.Count == 0 ? "NaN NaN NaN" : string.Create(CultureInfo.InvariantCulture, $"{Median(v):0.###} {v[0]:0.###} {v[^1]:0.###}");
            })) + "\n"));
        var rps = Path.Combine(workDir, "rps.dat");
        var p99 = Path.Combine(workDir, "p99.dat");
        File.WriteAllText(rps, Data(r => r.RequestsPerSec));
        File.WriteAllText(p99, Data(r => r.P99Us));
        string Plot(string file) => "plot " + string.Join(", ", http.Select((c, i) =>
            $"'{file}' using {2 + 3 * i}:{3 + 3 * i}:{4 + 3 * i}{(i == 0 ? ":xtic(1)" : "")} title \"{c.Key}: {c.Name.Replace("HTTP ", "").Replace("connections", "conn.").Replace("connection", "conn.")}\""));
        var rounds = runs.Select(r => r.Round).Distinct().Count();
        var script = $"""
            set terminal pngcairo size 1200,1000 font "DejaVu Sans,11"
            set output '{png}'
            set multiplot layout 2,1 title "Mesh benchmark (issue 7): {rounds} round(s) x {o.Duration} s per run; bar = median, whisker = min..max{(o.Quick ? " (--quick: meaningless)" : "")}"
            set style data histogram
            set style histogram errorbars gap 2 lw 1
            set style fill solid 0.75 border -1
            set boxwidth 0.9
            set grid ytics
            set key outside top center horizontal noenhanced
            set xtics noenhanced
            set ylabel "requests/s"
            set yrange [0:*]
            set format y "%.0f"
            {Plot(rps)}
            set ylabel "latency p99 (µs, log scale)"
            set logscale y
            set yrange [*:*]
            set format y "%g"
            {Plot(p99)}
            unset multiplot

            """;
        var gp = Path.Combine(workDir, "chart.gp");
        File.WriteAllText(gp, script);
        var r = Processes.Run("gnuplot", [gp], TimeSpan.FromMinutes(1), ct);
        if (r.Code != 0 || !File.Exists(png))
            throw new BenchException($"gnuplot failed (exit {r.Code}): {r.Err}");
    }

    /// <summary>Runs back from the CSV <see cref="Csv"/> wrote (--chart-from: redraw a chart without running again).</summary>
    public static List<Run> ReadCsv(string file)
    {
        var lines = File.ReadAllLines(file);
        var header = lines[0].Split(',');
        int Col(string name) => Array.IndexOf(header, name) is >= 0 and var i ? i : throw new BenchException($"{file}: no column {name}");
        double D(string[] f, string name) => double.Parse(f[Col(name)], CultureInfo.InvariantCulture);
        long L(string[] f, string name) => long.Parse(f[Col(name)], CultureInfo.InvariantCulture);
        return lines.Skip(1).Where(l => l.Length > 0).Select(l => l.Split(',')).Select(f => new Run((int)L(f, "round") - 1,
            Case.All.Single(c => c.Key == f[Col("case")]), Scenario.All.Single(s => s.Key == f[Col("scenario")]), D(f, "wall_s"),
            new CpuUse(L(f, "agent_ticks"), L(f, "proxy_ticks"), L(f, "sidecar_ticks")), D(f, "requests_per_s"), L(f, "requests"),
            D(f, "p50_us"), D(f, "p99_us"), D(f, "bits_per_s"), L(f, "bytes"), L(f, "tc_packets"))).ToList();
    }

    // --- machine and tools ---

    static string Tools() => string.Join(", ", new[] { ("nginx", "-v"), ("wrk", "-v"), ("iperf3", "--version"), ("haproxy", "-v"), ("nft", "--version") }.Select(t => Version(t.Item1, t.Item2)));

    // Shorter than Host.ToolVersion: "wrk 4.1.0", "iperf 3.12", "HAProxy 2.6.12-1+deb12u4 2026/10/17", "nftables v1.0.6".
    static string Version(string tool, string flag) =>
        Host.ToolVersion(tool, flag).Replace("HAProxy version", "HAProxy").Split(" (", 2)[0].Split(" [", 2)[0].Trim();
}
