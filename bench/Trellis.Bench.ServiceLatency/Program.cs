// Run (as root, nginx and wrk installed by scripts/install-deps.sh):
//   dotnet run -c Release --project bench/Trellis.Bench.ServiceLatency [--rounds 5] [--duration 4] [--markdown FILE]
//     [--nginx-workers 1] [--cpu N | --no-pin] [--cases ka1,ka16,close1,close16] [--bpf-stats] [--node bench-svc] [--trellis PATH]
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Trellis.Api;
using Trellis.Bench.ServiceLatency;
using Trellis.Lab;

// Request rate, latency and connection setup through a ClusterIP service versus straight to the pod (issue 4:
// within 5% of direct). A one-node lab runs nginx in pod `server` and wrk in pod `client`; `trellis lab exec`
// puts wrk into the client pod's netns and cgroup, so its connect() to the ClusterIP passes the socket load
// balancer (bpf/sock.c) exactly as a pod's would. Direct and ClusterIP runs alternate (ABBA) for N rounds so
// the noise of a small shared machine hits both; a run with socket errors or bad responses aborts the bench.
const string Ns = "bench";
const string ClusterIp = "10.96.50.50";
const double UserHz = 100; // the unit of /proc/PID/stat times (USER_HZ, 100 on every Linux architecture .NET runs on)

if (args.Contains("--help") || args.Contains("-h"))
{
    Console.WriteLine("""
        Usage: dotnet run -c Release --project bench/Trellis.Bench.ServiceLatency [options]   (as root)
          --rounds N          direct/ClusterIP pairs per case (default 5)
          --duration S        seconds per wrk run (default 4)
          --markdown FILE     also write the report as markdown to FILE
          --nginx-workers N   nginx worker processes in the server pod (default 1)
          --cpu N             pin nginx and wrk to CPU N (default: the last CPU); see docs/performance.md for why
          --no-pin            let the scheduler place nginx and wrk
          --compare WHAT      service (default): direct vs ClusterIP; events: direct with flow events off vs on
          --cases LIST        only these cases, comma-separated: ka1, ka16 (keep-alive, 1/16 connections),
                              close1, close16 (Connection: close); default all
          --bpf-stats         enable kernel.bpf_stats_enabled during the runs and report the socket programs' ns/run
                              (adds a little overhead to every BPF program, direct and ClusterIP alike)
          --node NAME         lab node name (default bench-svc)
          --trellis PATH      the trellis CLI (default: ./trellis of this checkout)
          --parse-wrk FILE    only parse a saved wrk output and print the figures (debugging)
        """);
    return 0;
}
if (Opt("--parse-wrk") is { } savedWrk)
{
    try
    {
        Console.WriteLine(WrkOutput.Parse(File.ReadAllText(savedWrk)));
        return 0;
    }
    catch (WrkException e)
    {
        Console.Error.WriteLine($"error: {e.Message}");
        return 1;
    }
}

int rounds, duration, nginxWorkers, cpu;
try
{
    (rounds, duration, nginxWorkers) = (IntOpt("--rounds", 5), IntOpt("--duration", 4), IntOpt("--nginx-workers", 1));
    cpu = Opt("--cpu") is { } cpuArg ? int.TryParse(cpuArg, out var n) && n >= 0 && n < Environment.ProcessorCount ? n
        : throw new ArgumentException($"--cpu needs a CPU number below {Environment.ProcessorCount}, not '{cpuArg}'") : Environment.ProcessorCount - 1;
}
catch (ArgumentException e)
{
    return Fail(e.Message);
}
var node = Opt("--node") ?? "bench-svc";
var markdownFile = Opt("--markdown");
bool bpfStats = args.Contains("--bpf-stats");
// --compare events: the same direct runs with the node's flow events off (baseline) and on, to measure what
// observability costs (issue 5: within 5%).
var compare = Opt("--compare") ?? "service";
if (compare is not ("service" or "events"))
    return Fail($"--compare takes service (ClusterIP vs direct, the default) or events (flow events on vs off), not '{compare}'");
bool compareEvents = compare == "events";
var onlyCases = Opt("--cases")?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
if (onlyCases?.Except(["ka1", "ka16", "close1", "close16"]).FirstOrDefault() is { } unknownCase)
    return Fail($"unknown case '{unknownCase}' in --cases (ka1, ka16, close1, close16)");
// Client and server on one CPU: on a small VM a wakeup across vCPUs costs tens of microseconds, so free placement
// makes one-connection figures jump between two modes (measured: ~12k vs ~39k req/s for the same run), which hides
// a 5% difference. On one CPU the runs are CPU-bound, so any extra cost per connection shows in the request rate.
string[] pin = args.Contains("--no-pin") ? [] : ["taskset", "-c", cpu.ToString(CultureInfo.InvariantCulture)];
var repo = FindRepoRoot();
var trellis = Opt("--trellis") ?? Path.Combine(repo, "trellis");

if (!Environment.IsPrivilegedProcess)
    return Fail("run as root: the lab creates network namespaces, veths, cgroups and BPF programs");
foreach (var tool in new[] { "nginx", "wrk", "curl", "setsid", "bpftool", "taskset" })
    if (Which(tool) is null)
        return Fail($"'{tool}' is not installed; run scripts/install-deps.sh (as root)");

using var cts = new CancellationTokenSource();
using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
using var sighup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, OnSignal);
var ct = cts.Token;

var work = Path.Combine(Path.GetTempPath(), $"trellis-bench-svc-{Environment.ProcessId}");
Directory.CreateDirectory(work);
var labFile = Path.Combine(work, "lab.yaml");
File.WriteAllText(Path.Combine(work, "nginx.conf"), NginxConf(work, nginxWorkers));
File.WriteAllText(labFile, LabYaml(work));

string? statsBefore = null;
var labUp = false;
try
{
    // A lab left by an interrupted earlier run would make `lab up` keep its old pods.
    if (File.Exists(Naming.NetnsPath(Naming.NodeNetns(node))))
    {
        Say($"removing a lab left over on node {node}");
        LabDown();
    }
    Say($"bringing up the lab (node {node}, {labFile})");
    labUp = true;
    RunTrellis("lab", "up", "-f", labFile, "--node", node);

    using var agent = new AgentClient(AgentPaths.Socket(node), TimeSpan.FromSeconds(20));
    var endpoints = await agent.EndpointsAsync(ct);
    var serverIp = endpoints.SingleOrDefault(e => e.Namespace == Ns && e.Pod == "server")?.Ip
        ?? throw new BenchException("the agent does not list pod bench/server");
    var direct = $"http://{serverIp}:8080/";
    var service = $"http://{ClusterIp}/";

    // nginx is up when a direct request answers; then the ClusterIP must answer the same through the socket LB.
    await WaitForAsync(direct);
    var before = (await agent.StatusAsync(ct)).ServiceConnectsTranslated;
    var body = Exec(TimeSpan.FromSeconds(10), "curl", "-sS", "--max-time", "3", service);
    if (body.Code != 0 || body.Out != "ok\n")
        throw new BenchException($"the ClusterIP {ClusterIp}:80 does not reach nginx from the client pod (curl exit {body.Code}: {body.Out}{body.Err}); " +
            $"is the socket load balancer attached? see '{trellis} status --node {node}' and '{trellis} service list --node {node}'");
    if ((await agent.StatusAsync(ct)).ServiceConnectsTranslated <= before)
        throw new BenchException("curl to the ClusterIP answered but the agent counted no translated connect: the request did not go through the socket load balancer");
    Say($"server {serverIp}:8080 answers directly and through ClusterIP {ClusterIp}:80");

    if (bpfStats)
    {
        statsBefore = File.ReadAllText("/proc/sys/kernel/bpf_stats_enabled").Trim();
        File.WriteAllText("/proc/sys/kernel/bpf_stats_enabled", "1");
    }

    var cases = new[]
    {
        new Case("ka1", "keep-alive, 1 connection", 1, 1, false),
        new Case("ka16", "keep-alive, 16 connections", 2, 16, false),
        new Case("close1", "new connection per request, 1 connection", 1, 1, true),
        new Case("close16", "new connection per request, 16 connections", 2, 16, true),
    }.Where(c => onlyCases is null || onlyCases.Contains(c.Key)).ToArray();
    var targets = compareEvents
        ? new[] { new Target("events off", direct, false, false, FlowEvents: false), new Target("events on", direct, false, true, FlowEvents: true) }
        : new[] { new Target("direct", direct, false, false), new Target("ClusterIP", service, true, true) };

    // Warm-up (not recorded): nginx, the CPU caches, conntrack and the LB maps see traffic before the first figure.
    foreach (var c in cases)
        foreach (var t in targets)
            await RunWrkAsync(-1, c, t, 1, agent);

    var results = new List<Run>();
    for (int r = 0; r < rounds; r++)
        foreach (var c in cases)
        {
            // ABBA: the first of a pair runs on a slightly different machine state than the second; alternating the
            // order per round keeps that from favouring one side.
            var order = r % 2 == 0 ? targets : new[] { targets[1], targets[0] };
            foreach (var t in order)
            {
                var run = await RunWrkAsync(r, c, t, duration, agent);
                results.Add(run);
                Say($"round {r + 1}/{rounds}  {c.Name,-44} {t.Name,-9} {run.Wrk.RequestsPerSec,10:N0} req/s  p50 {Us(run.Wrk.P50Us),9}  p99 {Us(run.Wrk.P99Us),9}" +
                    (t.Service ? $"  ({run.Translated:N0} connects translated)" : "") +
                    (run.Programs.TryGetValue("sock4_connect", out var sc) && sc.Runs > 0 ? $"  sock4_connect {(double)sc.Ns / sc.Runs:0} ns/run" : ""));
            }
        }

    var report = Report(cases, results, serverIp);
    Console.WriteLine();
    Console.WriteLine(report);
    if (markdownFile is not null)
    {
        File.WriteAllText(markdownFile, report);
        Say($"wrote {markdownFile}");
    }
    return 0;
}
catch (OperationCanceledException) when (ct.IsCancellationRequested)
{
    Console.Error.WriteLine("interrupted");
    return 130;
}
catch (Exception e) when (e is BenchException or WrkException or AgentUnavailableException or AgentRequestException or HttpRequestException)
{
    return Fail(e.Message);
}
finally
{
    if (statsBefore is not null)
        File.WriteAllText("/proc/sys/kernel/bpf_stats_enabled", statsBefore);
    if (labUp)
    {
        Say($"taking the lab down (node {node})");
        LabDown();
    }
    try { Directory.Delete(work, recursive: true); }
    catch (IOException) { }
}

// --- one measured run ---

async Task<Run> RunWrkAsync(int round, Case c, Target t, int seconds, AgentClient agent)
{
    if (t.FlowEvents is { } on)
        RunTrellis("config", "--flow-events", on ? "on" : "off", "--node", node);
    var s0 = await agent.StatusAsync(ct);
    var progs0 = bpfStats ? ProgramStats(s0) : [];
    var cpu0 = AgentCpuTicks();
    var wall = Stopwatch.StartNew();
    var wrkArgs = new List<string>(pin) { "wrk", "-t", c.Threads.ToString(), "-c", c.Connections.ToString(), "-d", $"{seconds}s", "--timeout", "5s", "--latency" };
    if (c.CloseEach) wrkArgs.AddRange(["-H", "Connection: close"]);
    wrkArgs.Add(t.Url);
    var r = Exec(TimeSpan.FromSeconds(seconds + 60), [.. wrkArgs]);
    if (r.Code != 0)
        throw new BenchException($"wrk failed ({c.Name}, {t.Name}, exit {r.Code}): {r.Err}{r.Out}");
    WrkResult w;
    try { w = WrkOutput.Parse(r.Out); }
    catch (WrkException e)
    {
        throw new WrkException($"{c.Name}, {t.Name}: {e.Message}; wrk printed:{Environment.NewLine}{r.Out}{r.Err}");
    }
    var cpu1 = AgentCpuTicks();
    var wallS = wall.Elapsed.TotalSeconds;
    var s1 = await agent.StatusAsync(ct);
    var translated = (long)(s1.ServiceConnectsTranslated - s0.ServiceConnectsTranslated);
    // Proof that each side took the path it claims: direct connects never hit the LB; ClusterIP ones all do
    // (one connect per connection, and with Connection: close one per request).
    if (!t.Service && translated != 0)
        throw new BenchException($"{translated} connects were translated during a direct run ({c.Name}): something else used the service");
    if (t.Service && translated < (c.CloseEach ? w.Requests : c.Connections))
        throw new BenchException($"only {translated} connects were translated during a ClusterIP run ({c.Name}, {w.Requests} requests): wrk bypassed the socket load balancer");
    var progs1 = bpfStats ? ProgramStats(s1) : [];
    var progDelta = progs1.Where(p => progs0.ContainsKey(p.Key))
        .ToDictionary(p => p.Key, p => (Ns: p.Value.Ns - progs0[p.Key].Ns, Runs: p.Value.Runs - progs0[p.Key].Runs));
    return new Run(round, c, t, w, translated, (cpu1 - cpu0) / UserHz / wallS * 100, progDelta);
}

// --- report ---

string Report(Case[] cases, List<Run> runs, string serverIp)
{
    var sb = new StringBuilder();
    var (A, B) = compareEvents ? ("events off", "events on") : ("direct", "ClusterIP");
    sb.AppendLine($"Machine: {Machine()}; tools: {Version("nginx", "-v")}, {Version("wrk", "-v")}.");
    sb.AppendLine($"{rounds} rounds x {cases.Length} cases x ({A}, {B}), {duration} s per wrk run, nginx {nginxWorkers} worker(s), " +
        (pin.Length > 0 ? $"nginx and wrk pinned to CPU {cpu}, " : "nginx and wrk placed by the scheduler, ") +
        $"direct = http://{serverIp}:8080/, ClusterIP = http://{ClusterIp}/ (port 80 -> 8080, one backend){(bpfStats ? ", kernel.bpf_stats_enabled=1" : "")}.");
    sb.AppendLine();
    sb.AppendLine($"| case | figure | {A} min / median / max | {B} min / median / max | {B} / {A}: ratio of medians | median of paired ratios |");
    sb.AppendLine("|---|---|---|---|---|---|");
    foreach (var c in cases)
    {
        var d = runs.Where(r => r.Case == c && !r.Target.Compared).ToList();
        var s = runs.Where(r => r.Case == c && r.Target.Compared).ToList();
        var label = $"{c.Name} (wrk -t{c.Threads} -c{c.Connections}{(c.CloseEach ? ", Connection: close" : "")})";
        Row(label, "requests/s", d, s, r => r.Wrk.RequestsPerSec, v => v.ToString("N0", CultureInfo.InvariantCulture));
        Row("", "latency p50", d, s, r => r.Wrk.P50Us, Us);
        Row("", "latency p99", d, s, r => r.Wrk.P99Us, Us);
        if (c.Connections == 1)
            Row("", "time per request (1 / rate)", d, s, r => 1e6 / r.Wrk.RequestsPerSec, Us);
    }
    sb.AppendLine();
    sb.AppendLine($"Paired ratio: {B} / {A} of the two runs of one round, which ran back to back (order alternating per round). " +
        "wrk's latency is measured from the request's first byte, so it excludes the TCP handshake; with Connection: close the " +
        "handshake shows in the request rate and time per request.");
    var cpuPct = runs.Select(r => r.AgentCpuPercent).Order().ToList();
    sb.AppendLine($"Agent CPU during the runs (flow events, API): median {Median(cpuPct):0.0}%, max {cpuPct[^1]:0.0}% of one CPU. " +
        $"Connects translated by the socket load balancer: {runs.Sum(r => r.Translated):N0} during ClusterIP runs, 0 during direct runs.");
    if (bpfStats)
    {
        // Per program, all cases together: average cost per invocation and invocations per request.
        sb.AppendLine();
        sb.AppendLine($"| BPF program (kernel.bpf_stats_enabled) | {A}: ns/run, runs/request | {B}: ns/run, runs/request |");
        sb.AppendLine("|---|---|---|");
        foreach (var name in runs.SelectMany(r => r.Programs.Keys).Distinct().Order(StringComparer.Ordinal))
            sb.AppendLine($"| {name} | {Cost(false, name)} | {Cost(true, name)} |");
    }
    return sb.ToString();

    string Cost(bool service, string name)
    {
        var sel = runs.Where(r => r.Target.Compared == service && r.Programs.ContainsKey(name)).ToList();
        ulong ns = sel.Aggregate(0UL, (a, r) => a + r.Programs[name].Ns), n = sel.Aggregate(0UL, (a, r) => a + r.Programs[name].Runs);
        long requests = sel.Sum(r => r.Wrk.Requests);
        return n == 0 ? "-" : $"{(double)ns / n:0} ns, {(double)n / requests:0.00}";
    }

    void Row(string label, string figure, List<Run> direct, List<Run> service, Func<Run, double> value, Func<double, string> fmt)
    {
        var d = direct.Select(value).Order().ToList();
        var s = service.Select(value).Order().ToList();
        var paired = service.Select(sr => value(sr) / value(direct.Single(dr => dr.Round == sr.Round))).Order().ToList();
        double md = Median(d), ms = Median(s);
        sb.AppendLine($"| {label} | {figure} | {fmt(d[0])} / **{fmt(md)}** / {fmt(d[^1])} | {fmt(s[0])} / **{fmt(ms)}** / {fmt(s[^1])} | " +
            $"{Ratio(ms / md)} | {Ratio(Median(paired))} |");
    }

    static string Ratio(double r) => double.IsFinite(r) ? $"{r:0.000} ({(r - 1) * 100:+0.0;-0.0;0.0}%)" : "-";
}

static double Median(List<double> sorted) =>
    sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[sorted.Count / 2 - 1] + sorted[sorted.Count / 2]) / 2;

static string Us(double us) => us < 1000 ? $"{us:0} µs" : us < 1e6 ? $"{us / 1000:0.00} ms" : $"{us / 1e6:0.00} s";

static string Machine()
{
    var cpu = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "unknown CPU";
    var memKb = File.ReadLines("/proc/meminfo").First(l => l.StartsWith("MemTotal:", StringComparison.Ordinal)).Split(' ', StringSplitOptions.RemoveEmptyEntries)[1];
    return $"{Environment.ProcessorCount} vCPU ({cpu}), {long.Parse(memKb, CultureInfo.InvariantCulture) / 1024 / 1024} GiB, Linux {File.ReadAllText("/proc/sys/kernel/osrelease").Trim()}, .NET {Environment.Version}";
}

static string Version(string tool, string flag)
{
    var psi = new ProcessStartInfo(tool) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
    psi.ArgumentList.Add(flag);
    using var p = Process.Start(psi)!;
    var text = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
    p.WaitForExit();
    // "nginx version: nginx/1.22.1" / "wrk 4.1.0 [epoll] Copyright ..."
    var first = text.Split('\n', StringSplitOptions.RemoveEmptyEntries).FirstOrDefault() ?? tool;
    return first.Replace("nginx version: ", "").Split(" Copyright", 2)[0].Trim();
}

// --- lab and processes ---

ProcResult Exec(TimeSpan timeout, params string[] command) =>
    RunProcess(trellis, ["lab", "exec", "--node", node, "-n", Ns, "client", "--", .. command], timeout, ct);

void RunTrellis(params string[] a)
{
    var r = RunProcess(trellis, a, TimeSpan.FromMinutes(5), ct);
    if (r.Code != 0)
        throw new BenchException($"{trellis} {string.Join(' ', a)} failed (exit {r.Code}):{Environment.NewLine}{r.Out}{r.Err}");
}

void LabDown()
{
    // In its own session, so a Ctrl-C on the terminal (which signals the whole foreground group) cannot cut it short.
    var r = RunProcess("setsid", ["-w", trellis, "lab", "down", "--node", node], TimeSpan.FromMinutes(2), CancellationToken.None);
    if (r.Code != 0)
        Console.Error.WriteLine($"warning: '{trellis} lab down --node {node}' failed (exit {r.Code}): {r.Out}{r.Err}");
    if (File.Exists(Naming.NetnsPath(Naming.NodeNetns(node))))
        Console.Error.WriteLine($"warning: network namespace {Naming.NodeNetns(node)} is still there; run '{trellis} lab down --node {node}'");
}

async Task WaitForAsync(string url)
{
    var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
    ProcResult last;
    do
    {
        last = Exec(TimeSpan.FromSeconds(10), "curl", "-sS", "--max-time", "2", url);
        if (last.Code == 0 && last.Out == "ok\n") return;
        await Task.Delay(200, ct);
    } while (DateTime.UtcNow < deadline);
    var log = Naming.PodLog(node, Ns, "server");
    throw new BenchException($"nginx in pod {Ns}/server does not answer {url} (curl exit {last.Code}: {last.Out}{last.Err}); " +
        $"pod log {log}: {(File.Exists(log) ? File.ReadAllText(log) : "(none)")}");
}

// Run time and count of the node's BPF programs: the TC programs from the agent's status, the cgroup socket
// programs (which the status does not list) from bpftool on the node's cgroup. Counted only while
// kernel.bpf_stats_enabled is 1.
Dictionary<string, (ulong Ns, ulong Runs)> ProgramStats(StatusResponse status)
{
    var stats = status.Programs.ToDictionary(p => p.Name, p => (p.RunTimeNs, p.RunCount));
    var cgroup = Cgroups.NodeDir(node);
    var attached = RunProcess("bpftool", ["-j", "cgroup", "show", cgroup], TimeSpan.FromSeconds(20), ct);
    if (attached.Code != 0)
        throw new BenchException($"bpftool cgroup show {cgroup} failed: {attached.Err}");
    foreach (var prog in JsonDocument.Parse(attached.Out).RootElement.EnumerateArray())
    {
        var id = prog.GetProperty("id").GetUInt32();
        var info = RunProcess("bpftool", ["-j", "prog", "show", "id", id.ToString(CultureInfo.InvariantCulture)], TimeSpan.FromSeconds(20), ct);
        if (info.Code != 0)
            throw new BenchException($"bpftool prog show id {id} failed: {info.Err}");
        var p = JsonDocument.Parse(info.Out).RootElement;
        // bpftool leaves the counters out while they are zero.
        stats[p.GetProperty("name").GetString()!] = (p.TryGetProperty("run_time_ns", out var t) ? t.GetUInt64() : 0,
            p.TryGetProperty("run_cnt", out var c) ? c.GetUInt64() : 0);
    }
    return stats;
}

long AgentCpuTicks()
{
    // utime + stime (fields 14 and 15 of /proc/PID/stat, after the parenthesised command name).
    try
    {
        var pid = File.ReadAllText(Path.Combine(AgentPaths.RunDir(node), "agent.pid")).Trim();
        var stat = File.ReadAllText($"/proc/{pid}/stat");
        var f = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return long.Parse(f[11], CultureInfo.InvariantCulture) + long.Parse(f[12], CultureInfo.InvariantCulture);
    }
    catch (Exception e) when (e is IOException or FormatException or IndexOutOfRangeException)
    {
        return 0;
    }
}


static ProcResult RunProcess(string file, IReadOnlyList<string> arguments, TimeSpan timeout, CancellationToken ct)
{
    var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
    foreach (var a in arguments) psi.ArgumentList.Add(a);
    using var p = Process.Start(psi) ?? throw new BenchException($"cannot start {file}");
    var stdout = p.StandardOutput.ReadToEndAsync(CancellationToken.None);
    var stderr = p.StandardError.ReadToEndAsync(CancellationToken.None);
    using (ct.Register(() => { try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { } }))
    {
        if (!p.WaitForExit(timeout))
        {
            p.Kill(entireProcessTree: true);
            p.WaitForExit();
            throw new BenchException($"{file} {string.Join(' ', arguments)} did not finish within {timeout.TotalSeconds:0} s");
        }
        p.WaitForExit();
    }
    ct.ThrowIfCancellationRequested();
    return new ProcResult(p.ExitCode, stdout.Result, stderr.Result);
}

// --- files ---

static string NginxConf(string dir, int workers) => $$"""
    # Written by bench/Trellis.Bench.ServiceLatency: the smallest server that answers HTTP, no disk I/O per request.
    worker_processes {{workers}};
    pid {{dir}}/nginx.pid;
    error_log {{dir}}/error.log warn;
    events { worker_connections 4096; }
    http {
        access_log off;
        client_body_temp_path {{dir}}/client_body;
        proxy_temp_path {{dir}}/proxy;
        fastcgi_temp_path {{dir}}/fastcgi;
        uwsgi_temp_path {{dir}}/uwsgi;
        scgi_temp_path {{dir}}/scgi;
        default_type text/plain;
        keepalive_requests 1000000000;
        keepalive_timeout 300s;
        server {
            listen 8080;
            location / { return 200 "ok\n"; }
        }
    }

    """;

string LabYaml(string dir) => $$$"""
    # Written by bench/Trellis.Bench.ServiceLatency.
    apiVersion: v1
    kind: Namespace
    metadata: {name: {{{Ns}}}}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: server, namespace: {{{Ns}}}, labels: {app: server}}
    spec:
      containers:
        - name: nginx
          command: [{{{string.Concat(pin.Select(p => $"\"{p}\", "))}}}"nginx", "-p", "{{{dir}}}/", "-e", "{{{dir}}}/error.log", "-c", "{{{dir}}}/nginx.conf", "-g", "daemon off;"]
          ports: [{name: http, containerPort: 8080}]
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: client, namespace: {{{Ns}}}, labels: {app: client}}
    spec:
      containers: [{name: c, command: ["sleep", "infinity"]}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: server, namespace: {{{Ns}}}}
    spec:
      selector: {app: server}
      clusterIP: {{{ClusterIp}}}
      ports: [{name: http, port: 80, targetPort: 8080}]

    """;

// --- arguments, helpers ---

void OnSignal(PosixSignalContext context)
{
    context.Cancel = true; // unwind through the finally that takes the lab down
    cts.Cancel();
}

string? Opt(string name)
{
    var i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
}

int IntOpt(string name, int dflt) =>
    Opt(name) is { } v ? int.TryParse(v, out var n) && n > 0 ? n : throw new ArgumentException($"{name} needs a positive integer, not '{v}'") : dflt;

static string FindRepoRoot()
{
    foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
        for (var d = new DirectoryInfo(start); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "Trellis.slnx")))
                return d.FullName;
    throw new BenchException("cannot find the repository root (Trellis.slnx) above the current directory; pass --trellis PATH");
}

static string? Which(string tool) =>
    (Environment.GetEnvironmentVariable("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin").Split(':')
        .Select(d => Path.Combine(d, tool)).FirstOrDefault(File.Exists);

static void Say(string s) => Console.Error.WriteLine(s);

static int Fail(string message)
{
    Console.Error.WriteLine($"error: {message}");
    return 1;
}

internal sealed record Case(string Key, string Name, int Threads, int Connections, bool CloseEach);
/// <param name="Compared">The side the ratios put over the baseline (ClusterIP; or flow events on).</param>
/// <param name="FlowEvents">Set the node's flow events on/off before each run (null: leave as they are).</param>
internal sealed record Target(string Name, string Url, bool Service, bool Compared, bool? FlowEvents = null);
internal sealed record Run(int Round, Case Case, Target Target, WrkResult Wrk, long Translated, double AgentCpuPercent,
    Dictionary<string, (ulong Ns, ulong Runs)> Programs);
internal sealed record ProcResult(int Code, string Out, string Err);
internal sealed class BenchException(string message) : Exception(message);
