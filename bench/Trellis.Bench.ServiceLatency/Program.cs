// Run (as root, nginx and wrk installed by scripts/install-deps.sh):
//   dotnet run -c Release --project bench/Trellis.Bench.ServiceLatency [--rounds 5] [--duration 4] [--markdown FILE]
//     [--nginx-workers 1] [--cpu N | --no-pin] [--cases ka1,ka16,close1,close16] [--bpf-stats] [--node bench-svc] [--trellis PATH]
//     [--compare service|events|l7 [--sidecars]]
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Trellis.Api;
using Trellis.Bench.Common;
using static Trellis.Bench.Common.Figures;
using Trellis.Lab;

// Request rate, latency and connection setup through a ClusterIP service versus straight to the pod (issue 4:
// within 5% of direct). A one-node lab runs nginx in pod `server` and wrk in pod `client`; `trellis lab exec`
// puts wrk into the client pod's netns and cgroup, so its connect() to the ClusterIP passes the socket load
// balancer (bpf/sock.c) exactly as a pod's would. Direct and ClusterIP runs alternate (ABBA) for N rounds so
// the noise of a small shared machine hits both; a run with socket errors or bad responses aborts the bench.
// --compare events and --compare l7 reuse the same lab and runs for other pairs (see where they are set up).
const string Ns = "bench";
const string ClusterIp = "10.96.50.50";
const int ProxiedPort = 8081; // --compare l7: the server port the client's egress policy sends through the L7 proxy
const int SidecarPort = 8082; // --compare l7 --sidecars: the server pod's HAProxy sidecar (-> nginx on 127.0.0.1:8080)
const int ClientSidecarPort = 15080; // ... and the client pod's HAProxy sidecar on 127.0.0.1, which wrk talks to

if (args.Contains("--help") || args.Contains("-h"))
{
    Console.WriteLine("""
        Usage: dotnet run -c Release --project bench/Trellis.Bench.ServiceLatency [options]   (as root)
          --rounds N          rounds per case (default 5); each runs every compared path once, the order
                              alternating per round
          --duration S        seconds per wrk run (default 4)
          --markdown FILE     also write the report as markdown to FILE
          --nginx-workers N   nginx worker processes in the server pod (default 1)
          --cpu N             pin nginx and wrk to CPU N (default: the last CPU); see docs/performance.md for why
          --no-pin            let the scheduler place nginx and wrk
          --compare WHAT      service (default): direct vs ClusterIP; events: direct with flow events off vs on;
                              accel: direct with same-node socket acceleration off vs on;
                              l7: direct (L4 policy) vs through the node's L7 proxy (an egress policy with
                              rules.http on a second nginx port), plus the proxy's CPU time per request and RSS
          --sidecars          with --compare l7: also run through two HAProxy sidecars (client pod -> server pod
                              -> nginx), i.e. the sidecar model's two proxy hops (needs haproxy: apt-get install haproxy)
          --cases LIST        only these cases, comma-separated: ka1, ka16 (keep-alive, 1/16 connections),
                              close1, close16 (Connection: close); default all
          --bpf-stats         enable kernel.bpf_stats_enabled during the runs and report the socket programs' ns/run
                              (adds a little overhead to every BPF program, direct and ClusterIP alike)
          --node NAME         lab node name (default bench-svc; bench-l7 with --compare l7)
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
var markdownFile = Opt("--markdown");
bool bpfStats = args.Contains("--bpf-stats");
// --compare events: the same direct runs with the node's flow events off (baseline) and on, to measure what
// observability costs (issue 5: within 5%).
// --compare l7: direct (L4 policy only) vs the same requests through the node's L7 proxy (issue 6), optionally
// also through two HAProxy sidecars (--sidecars).
// --compare accel: the same direct runs with same-node socket acceleration off (baseline) and on (issue 7: above
// the kernel TCP stack's rate).
var compare = Opt("--compare") ?? "service";
if (compare is not ("service" or "events" or "l7" or "accel"))
    return Fail($"--compare takes service (ClusterIP vs direct, the default), events (flow events on vs off), l7 (direct vs the node's L7 proxy) or accel (socket acceleration off vs on), not '{compare}'");
bool compareEvents = compare == "events";
bool compareAccel = compare == "accel";
bool compareL7 = compare == "l7";
bool sidecars = args.Contains("--sidecars");
if (sidecars && !compareL7)
    return Fail("--sidecars goes with --compare l7");
var node = Opt("--node") ?? (compareL7 ? "bench-l7" : "bench-svc");
var onlyCases = Opt("--cases")?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
if (onlyCases?.Except(["ka1", "ka16", "close1", "close16"]).FirstOrDefault() is { } unknownCase)
    return Fail($"unknown case '{unknownCase}' in --cases (ka1, ka16, close1, close16)");
// Client and server on one CPU: on a small VM a wakeup across vCPUs costs tens of microseconds, so free placement
// makes one-connection figures jump between two modes (measured: ~12k vs ~39k req/s for the same run), which hides
// a 5% difference. On one CPU the runs are CPU-bound, so any extra cost per connection shows in the request rate.
string[] pin = args.Contains("--no-pin") ? [] : ["taskset", "-c", cpu.ToString(CultureInfo.InvariantCulture)];
var repo = BenchArgs.RepoRoot()
    ?? throw new BenchException("cannot find the repository root (Trellis.slnx) above the current directory; pass --trellis PATH");
var trellis = Opt("--trellis") ?? Path.Combine(repo, "trellis");

if (!Environment.IsPrivilegedProcess)
    return Fail("run as root: the lab creates network namespaces, veths, cgroups and BPF programs");
foreach (var tool in new[] { "nginx", "wrk", "curl", "setsid", "bpftool", "taskset" })
    if (Processes.Which(tool) is null)
        return Fail($"'{tool}' is not installed; run scripts/install-deps.sh (as root)");
if (sidecars && Processes.Which("haproxy") is null)
    return Fail("'haproxy' is not installed (--sidecars); apt-get install -y haproxy");

using var signals = new SignalCancellation();
var ct = signals.Token;

var work = Path.Combine(Path.GetTempPath(), $"trellis-bench-svc-{Environment.ProcessId}");
Directory.CreateDirectory(work);
var labFile = Path.Combine(work, "lab.yaml");
File.WriteAllText(Path.Combine(work, "nginx.conf"), Nginx.Conf(
    "# Written by bench/Trellis.Bench.ServiceLatency: the smallest server that answers HTTP, no disk I/O per request.",
    work, nginxWorkers, 4096, compareL7 ? [8080, ProxiedPort] : [8080]));
File.WriteAllText(labFile, LabYaml(work));

string? statsBefore = null;
var labUp = false;
var memory = new List<(string Process, string When, long RssKb, long HwmKb)>();
int proxyLogLinesBefore = 0;
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

    var proxied = $"http://{serverIp}:{ProxiedPort}/";
    var viaSidecars = $"http://127.0.0.1:{ClientSidecarPort}/";
    if (compareL7)
    {
        // A second port of the same nginx server block, and one policy applied once, so the two sides alternate run
        // by run without re-applying anything: the client's egress is enforced for both, port 8080 by an L4-only
        // allow (datapath only), port 8081 by rules.http (every request checked by the proxy's regexes). Re-applying
        // a policy between runs would instead recompile and swap maps, rewrite the proxy's rule file and leave the
        // other mode's conntrack entries behind; the visibility annotation would send the port through the proxy
        // with allow-all rules (nothing evaluated), which is not what an L7 policy costs. Port 8082 (L4 only) is the
        // server pod's HAProxy sidecar with --sidecars.
        var policyFile = Path.Combine(work, "policy.yaml");
        File.WriteAllText(policyFile, L7PolicyYaml());
        RunTrellis("policy", "apply", "-f", policyFile, "--node", node);
        var http0 = ProxiedRequests();
        await WaitForAsync(proxied);
        if (ProxiedRequests() <= http0)
            throw new BenchException($"{proxied} answered but the agent counted no HTTP request from the L7 proxy ({BenchLab.MetricsUrl} in netns {Naming.NodeNetns(node)}): the request did not go through the proxy");
        if (ProxyPid() is not { } proxyPid)
            throw new BenchException($"no running L7 proxy in {ProxyPidFile()}; see /run/trellis/{node}/proxy.log");
        proxyLogLinesBefore = ProxyLogLines();
        Say($"server {serverIp}:{ProxiedPort} answers through the node's L7 proxy (pid {proxyPid}, egress policy with rules.http)");
        Remember("trellis-proxy (one per node)", "started, one request served", proxyPid);
        if (sidecars)
        {
            StartSidecars(serverIp);
            await WaitForAsync(viaSidecars);
            Say($"server answers through the HAProxy sidecars ({viaSidecars} in the client pod -> {serverIp}:{SidecarPort} in the server pod -> nginx)");
            foreach (var (name, pid) in SidecarPids())
                Remember(name, "started, one request served", pid);
        }
    }

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
    // The first target is the baseline every ratio is taken against.
    var targets = compareEvents
        ? new[] { new Target("events off", direct, FlowEvents: false), new Target("events on", direct, FlowEvents: true) }
        : compareAccel
        ? new[] { new Target("accel off", direct, SocketAcceleration: false), new Target("accel on", direct, SocketAcceleration: true) }
        : compareL7
        ? sidecars
            ? new[] { new Target("direct", direct), new Target("L7 proxy", proxied, Via: Hop.NodeProxy), new Target("sidecars", viaSidecars, Via: Hop.Sidecars) }
            : new[] { new Target("direct", direct), new Target("L7 proxy", proxied, Via: Hop.NodeProxy) }
        : new[] { new Target("direct", direct), new Target("ClusterIP", service, Service: true) };

    // Warm-up (not recorded): nginx, the CPU caches, conntrack and the LB maps see traffic before the first figure
    // (with --compare l7 also the proxy's JIT: tiered compilation settles within the first seconds).
    foreach (var c in cases)
        foreach (var t in targets)
            await RunWrkAsync(-1, c, t, compareL7 ? 2 : 1, agent);

    var results = new List<Run>();
    for (int r = 0; r < rounds; r++)
        foreach (var c in cases)
        {
            // ABBA: the first of a pair runs on a slightly different machine state than the second; alternating the
            // order per round keeps that from favouring one side (with three targets: ABC, CBA).
            var order = r % 2 == 0 ? targets : Enumerable.Reverse(targets).ToArray();
            foreach (var t in order)
            {
                var run = await RunWrkAsync(r, c, t, duration, agent);
                results.Add(run);
                Say($"round {r + 1}/{rounds}  {c.Name,-44} {t.Name,-9} {run.Wrk.RequestsPerSec,10:N0} req/s  p50 {Us(run.Wrk.P50Us),9}  p99 {Us(run.Wrk.P99Us),9}" +
                    (t.Service ? $"  ({run.Translated:N0} connects translated)" : "") +
                    (t.Via == Hop.NodeProxy ? $"  (proxy: {run.Proxied:N0} requests, {CpuPerRequest(run.ProxyTicks, run.Wrk.Requests)} CPU/request)" : "") +
                    (t.Via == Hop.Sidecars ? $"  (sidecars: {CpuPerRequest(run.SidecarTicks, run.Wrk.Requests)} CPU/request)" : "") +
                    (run.Programs.TryGetValue("sock4_connect", out var sc) && sc.Runs > 0 ? $"  sock4_connect {(double)sc.Ns / sc.Runs:0} ns/run" : ""));
            }
        }

    if (compareL7)
    {
        if (ProxyPid() is { } proxyPid)
            Remember("trellis-proxy (one per node)", "after the runs", proxyPid);
        foreach (var (name, pid) in SidecarPids())
            Remember(name, "after the runs", pid);
        if (AgentPid() is { } agentPid)
            Remember("trellis agent (for reference)", "after the runs", agentPid);
    }

    var report = Report(cases, targets, results, serverIp);
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
    if (t.SocketAcceleration is { } accelOn)
        RunTrellis("config", "--socket-acceleration", accelOn ? "on" : "off", "--node", node);
    var s0 = await agent.StatusAsync(ct);
    var progs0 = bpfStats ? ProgramStats(s0) : [];
    // --compare l7: the proxy's and the sidecars' CPU time, and the requests the agent saw from the proxy, on every
    // run (also the direct ones, which must show none).
    var proxyPid = compareL7 ? ProxyPid() : null;
    var sidecarPids = SidecarPids().Select(p => p.Pid).ToList();
    long proxyCpu0 = ProcFs.CpuTicks(proxyPid), sidecarCpu0 = sidecarPids.Sum(p => ProcFs.CpuTicks(p));
    var http0 = compareL7 ? SettledProxiedRequests() : 0;
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
    long proxyCpu1 = ProcFs.CpuTicks(proxyPid), sidecarCpu1 = sidecarPids.Sum(p => ProcFs.CpuTicks(p));
    var http1 = compareL7 ? SettledProxiedRequests() : 0;
    if (compareL7)
    {
        // A restarted proxy (the agent restarts it within 2 s when it dies) would hide failed requests behind the
        // retry of a new connection and make its CPU figure meaningless: report it, never average over it.
        if (ProxyPid() != proxyPid)
            throw new BenchException($"the L7 proxy changed during a run ({c.Name}, {t.Name}): pid {proxyPid} before, {ProxyPid()?.ToString(CultureInfo.InvariantCulture) ?? "none"} after; see /run/trellis/{node}/proxy.log");
        if (SidecarPids().Select(p => p.Pid).Except(sidecarPids).Any() || sidecarPids.Any(p => !File.Exists($"/proc/{p}/stat")))
            throw new BenchException($"a HAProxy sidecar died or changed during a run ({c.Name}, {t.Name}); see {work}/haproxy-*.log");
        // Proof that each side took the path it claims: through the proxy, every completed request was seen by the
        // agent as an L7 record (more may be: those in flight when wrk stopped); direct and sidecar runs, none.
        var seen = http1 - http0;
        if (t.Via == Hop.NodeProxy && seen < w.Requests)
            throw new BenchException($"wrk completed {w.Requests} requests through the L7 proxy ({c.Name}) but the agent counted {seen} HTTP records: " +
                "requests bypassed the proxy, or L7 records were lost (trellis_l7_records_lost_total, if this agent has it: " +
                $"{BenchLab.MetricValue(BenchLab.Metrics(node, ct), "trellis_l7_records_lost_total")?.ToString(CultureInfo.InvariantCulture) ?? "n/a"})");
        if (t.Via != Hop.NodeProxy && seen != 0)
            throw new BenchException($"the agent counted {seen} HTTP records from the L7 proxy during a {t.Name} run ({c.Name}): that path should not touch the proxy");
    }
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
    return new Run(round, c, t, w, translated, (cpu1 - cpu0) / ProcFs.UserHz / wallS * 100, progDelta,
        cpu1 - cpu0, proxyCpu1 - proxyCpu0, sidecarCpu1 - sidecarCpu0, http1 - http0, wallS);
}

// --- report ---

string Report(Case[] cases, Target[] targets, List<Run> runs, string serverIp)
{
    var sb = new StringBuilder();
    // The first target is the baseline; every other one gets its own columns and ratios against it.
    var baseline = targets[0];
    var others = targets[1..];
    var tools = $"{Host.ToolVersion("nginx", "-v")}, {Host.ToolVersion("wrk", "-v")}" + (sidecars ? $", {Host.ToolVersion("haproxy", "-v")}" : "");
    sb.AppendLine($"Machine: {Host.Describe()}; tools: {tools}.");
    var paths = compareL7
        ? $"direct = http://{serverIp}:8080/ (client egress allowed at L4), L7 proxy = http://{serverIp}:{ProxiedPort}/ (client egress " +
          "allowed with rules.http [{method: GET, path: \"/.*\"}]: the datapath hands the connection to the node's proxy, which checks every request)" +
          (sidecars ? $", sidecars = http://127.0.0.1:{ClientSidecarPort}/ (HAProxy in the client pod -> {serverIp}:{SidecarPort} HAProxy in the server pod -> nginx on 127.0.0.1:8080)" : "")
        : compareEvents || compareAccel ? $"both direct to http://{serverIp}:8080/"
        : $"direct = http://{serverIp}:8080/, ClusterIP = http://{ClusterIp}/ (port 80 -> 8080, one backend)";
    sb.AppendLine($"{rounds} rounds x {cases.Length} cases x ({string.Join(", ", targets.Select(t => t.Name))}), {duration} s per wrk run, nginx {nginxWorkers} worker(s), " +
        (pin.Length > 0 ? $"nginx and wrk pinned to CPU {cpu}" + (compareL7 ? " (the proxy and sidecars are not pinned)" : "") + ", " : "nginx and wrk placed by the scheduler, ") +
        $"{paths}{(bpfStats ? ", kernel.bpf_stats_enabled=1" : "")}.");
    sb.AppendLine();
    sb.Append($"| case | figure | {baseline.Name} min / median / max |");
    foreach (var o in others)
        sb.Append($" {o.Name} min / median / max | {o.Name} / {baseline.Name}: ratio of medians | median of paired ratios |");
    sb.AppendLine();
    sb.AppendLine("|---|---|---|" + string.Concat(others.Select(_ => "---|---|---|")));
    foreach (var c in cases)
    {
        var label = $"{c.Name} (wrk -t{c.Threads} -c{c.Connections}{(c.CloseEach ? ", Connection: close" : "")})";
        Row(c, label, "requests/s", r => r.Wrk.RequestsPerSec, v => v.ToString("N0", CultureInfo.InvariantCulture));
        Row(c, "", "latency p50", r => r.Wrk.P50Us, Us);
        Row(c, "", "latency p99", r => r.Wrk.P99Us, Us);
        if (c.Connections == 1)
            Row(c, "", "time per request (1 / rate)", r => 1e6 / r.Wrk.RequestsPerSec, Us);
    }
    sb.AppendLine();
    sb.AppendLine($"Paired ratio: X / {baseline.Name} of the runs of one round, which ran back to back (order alternating per round). " +
        "wrk's latency is measured from the request's first byte, so it excludes the TCP handshake; with Connection: close the " +
        "handshake shows in the request rate and time per request.");
    var cpuPct = runs.Select(r => r.AgentCpuPercent).Order().ToList();
    sb.AppendLine($"Agent CPU during the runs (flow events, API{(compareL7 ? ", L7 records" : "")}): median {Median(cpuPct):0.0}%, max {cpuPct[^1]:0.0}% of one CPU." +
        (compareL7 ? "" : $" Connects translated by the socket load balancer: {runs.Sum(r => r.Translated):N0} during ClusterIP runs, 0 during direct runs."));
    if (compareL7)
        L7Sections();
    if (bpfStats)
    {
        // Per program, all cases together: average cost per invocation and invocations per request.
        sb.AppendLine();
        sb.AppendLine("| BPF program (kernel.bpf_stats_enabled) |" + string.Concat(targets.Select(t => $" {t.Name}: ns/run, runs/request |")));
        sb.AppendLine("|---|" + string.Concat(targets.Select(_ => "---|")));
        foreach (var name in runs.SelectMany(r => r.Programs.Keys).Distinct().Order(StringComparer.Ordinal))
            sb.AppendLine($"| {name} |" + string.Concat(targets.Select(t => $" {Cost(t, name)} |")));
    }
    return sb.ToString();

    void L7Sections()
    {
        // CPU time per request of the processes on each path, summed over all rounds of a case (the counters tick
        // every 10 ms; a run of a few seconds through the proxy accumulates hundreds of ticks).
        sb.AppendLine();
        sb.AppendLine("| case | path | requests (all rounds) | node proxy: CPU per request, % of one CPU | agent: CPU per request, % of one CPU |" +
            (sidecars ? " sidecars (both HAProxy): CPU per request, % of one CPU |" : ""));
        sb.AppendLine("|---|---|---|---|---|" + (sidecars ? "---|" : ""));
        foreach (var c in cases)
            foreach (var t in targets)
            {
                var sel = runs.Where(r => r.Case == c && r.Target == t).ToList();
                long requests = sel.Sum(r => r.Wrk.Requests);
                double wallS = sel.Sum(r => r.WallSeconds);
                string Cpu(Func<Run, long> ticks) =>
                    $"{CpuPerRequest(sel.Sum(ticks), requests)}, {sel.Sum(ticks) / ProcFs.UserHz / wallS * 100:0.#}%";
                sb.AppendLine($"| {c.Name} | {t.Name} | {requests:N0} | {Cpu(r => r.ProxyTicks)} | {Cpu(r => r.AgentTicks)} |" +
                    (sidecars ? $" {Cpu(r => r.SidecarTicks)} |" : ""));
            }
        sb.AppendLine();
        sb.AppendLine("CPU time = utime + stime of the process (all its threads) from /proc/PID/stat over the wrk runs of all rounds, " +
            "per request wrk completed and as a share of one CPU over the runs' wall time. Kernel work done in softirq context is " +
            "charged to whichever process was running, and time a process spends spinning for work (.NET's thread pool does) counts " +
            "as CPU, so the figures are indicative. A process's idle background work is in every row: where few requests ran, the " +
            "per-request figure is mostly that (look at the % column). The agent's share through the proxy is one L7 record per " +
            "request (a datagram from the proxy, turned into a flow and metrics).");
        sb.AppendLine();
        sb.AppendLine("| process | when | RSS | peak RSS (VmHWM) |");
        sb.AppendLine("|---|---|---|---|");
        foreach (var m in memory)
            sb.AppendLine($"| {m.Process} | {m.When} | {Mb(m.RssKb)} | {Mb(m.HwmKb)} |");
        sb.AppendLine();
        sb.AppendLine("RSS = VmRSS of /proc/PID/status (the proxy: /run/trellis/NODE/proxy.pid): one proxy per node, whatever the number " +
            "of pods, where a sidecar mesh runs one proxy per pod.");
        var logLines = ProxyLogLines() - proxyLogLinesBefore;
        sb.AppendLine($"Lines the proxy wrote to its log during the runs: {logLines}" + (logLines > 0 ? $" (see /run/trellis/{node}/proxy.log)." : "."));
    }

    string Cost(Target t, string name)
    {
        var sel = runs.Where(r => r.Target == t && r.Programs.ContainsKey(name)).ToList();
        ulong ns = sel.Aggregate(0UL, (a, r) => a + r.Programs[name].Ns), n = sel.Aggregate(0UL, (a, r) => a + r.Programs[name].Runs);
        long requests = sel.Sum(r => r.Wrk.Requests);
        return n == 0 ? "-" : $"{(double)ns / n:0} ns, {(double)n / requests:0.00}";
    }

    void Row(Case c, string label, string figure, Func<Run, double> value, Func<double, string> fmt)
    {
        var baseRuns = runs.Where(r => r.Case == c && r.Target == baseline).ToList();
        var d = baseRuns.Select(value).Order().ToList();
        double md = Median(d);
        sb.Append($"| {label} | {figure} | {fmt(d[0])} / **{fmt(md)}** / {fmt(d[^1])} |");
        foreach (var o in others)
        {
            var sel = runs.Where(r => r.Case == c && r.Target == o).ToList();
            var s = sel.Select(value).Order().ToList();
            var paired = sel.Select(sr => value(sr) / value(baseRuns.Single(dr => dr.Round == sr.Round))).Order().ToList();
            double ms = Median(s);
            sb.Append($" {fmt(s[0])} / **{fmt(ms)}** / {fmt(s[^1])} | {Ratio(ms / md)} | {Ratio(Median(paired))} |");
        }
        sb.AppendLine();
    }

    static string Ratio(double r) => double.IsFinite(r) ? $"{r:0.000} ({(r - 1) * 100:+0.0;-0.0;0.0}%)" : "-";
    static string Mb(long kb) => kb < 0 ? "-" : $"{kb / 1024.0:0.0} MiB";
}

// --- lab and processes ---

ProcResult Exec(TimeSpan timeout, params string[] command) => ExecIn("client", timeout, command);

ProcResult ExecIn(string pod, TimeSpan timeout, params string[] command) =>
    Processes.Run(trellis, ["lab", "exec", "--node", node, "-n", Ns, pod, "--", .. command], timeout, ct);

void RunTrellis(params string[] a) => BenchLab.RunTrellis(trellis, a, TimeSpan.FromMinutes(5), ct);

void LabDown() => BenchLab.Down(trellis, node, TimeSpan.FromMinutes(2));

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
    var attached = Processes.Run("bpftool", ["-j", "cgroup", "show", cgroup], TimeSpan.FromSeconds(20), ct);
    if (attached.Code != 0)
        throw new BenchException($"bpftool cgroup show {cgroup} failed: {attached.Err}");
    foreach (var prog in JsonDocument.Parse(attached.Out).RootElement.EnumerateArray())
    {
        var id = prog.GetProperty("id").GetUInt32();
        var info = Processes.Run("bpftool", ["-j", "prog", "show", "id", id.ToString(CultureInfo.InvariantCulture)], TimeSpan.FromSeconds(20), ct);
        if (info.Code != 0)
            throw new BenchException($"bpftool prog show id {id} failed: {info.Err}");
        var p = JsonDocument.Parse(info.Out).RootElement;
        // bpftool leaves the counters out while they are zero.
        stats[p.GetProperty("name").GetString()!] = (p.TryGetProperty("run_time_ns", out var t) ? t.GetUInt64() : 0,
            p.TryGetProperty("run_cnt", out var c) ? c.GetUInt64() : 0);
    }
    return stats;
}

long AgentCpuTicks() => ProcFs.CpuTicks(AgentPid());

int? AgentPid() => ProcFs.ReadPid(BenchLab.AgentPidFile(node));

string ProxyPidFile() => BenchLab.ProxyPidFile(node);

/// <summary>The node's L7 proxy, when its pid file names a live process.</summary>
int? ProxyPid() => ProcFs.LivePid(ProxyPidFile());

int ProxyLogLines()
{
    var log = Path.Combine(AgentPaths.RunDir(node), "proxy.log");
    try { return File.Exists(log) ? File.ReadLines(log).Count() : 0; }
    catch (IOException) { return 0; }
}

// VmRSS and VmHWM (peak) of a process, for the memory table.
void Remember(string process, string when, int pid)
{
    var (rss, hwm, _) = ProcFs.Memory(pid);
    memory.Add((process, when, rss, hwm));
}

// HTTP requests to the server pod the agent has seen from the node's proxy (one L7 record each, any status), and the
// same once the count stops moving (the last records of a run arrive after wrk exits).
long ProxiedRequests() => BenchLab.ProxiedRequests(node, $"{Ns}/server", ct);
long SettledProxiedRequests() => BenchLab.SettledProxiedRequests(node, $"{Ns}/server", ct);

// --sidecars: HAProxy in the client pod (wrk -> 127.0.0.1:15080, where it applies the same L7 rule: GET, path /.*)
// and in the server pod (:8082 -> nginx on 127.0.0.1:8080), both in HTTP mode with keep-alive and connection reuse
// to their upstream (HAProxy's defaults), as a sidecar mesh's two proxies per request. wrk talks to its sidecar
// directly (no iptables redirect in the client pod); the hop between the pods passes the datapath with an L4 allow.
// Started with lab exec once the server's address is known, as daemons in the pods' netns and cgroups (lab down
// kills them with the pods).
void StartSidecars(string serverIp)
{
    foreach (var (pod, listen, upstream, rule) in new[]
    {
        ("server", $":{SidecarPort}", "127.0.0.1:8080", ""),
        ("client", $"127.0.0.1:{ClientSidecarPort}", $"{serverIp}:{SidecarPort}", "    http-request deny unless { method GET } { path_reg ^/.*$ }\n"),
    })
    {
        var cfg = Path.Combine(work, $"haproxy-{pod}.cfg");
        File.WriteAllText(cfg, $$"""
            # Written by bench/Trellis.Bench.ServiceLatency (--compare l7 --sidecars): the {{pod}} pod's sidecar.
            global
                maxconn 4096
            defaults
                mode http
                timeout connect 5s
                timeout client 60s
                timeout server 60s
            frontend in
                bind {{listen}}
            {{rule}}    default_backend app
            backend app
                server upstream {{upstream}}

            """);
        var pidFile = Path.Combine(work, $"haproxy-{pod}.pid");
        var log = Path.Combine(work, $"haproxy-{pod}.log");
        var r = ExecIn(pod, TimeSpan.FromSeconds(30), "/bin/sh", "-c", "exec haproxy -D -f \"$0\" -p \"$1\" </dev/null >>\"$2\" 2>&1", cfg, pidFile, log);
        if (r.Code != 0)
            throw new BenchException($"haproxy did not start in pod {Ns}/{pod} (exit {r.Code}): {(File.Exists(log) ? File.ReadAllText(log) : "")}{r.Err}");
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(5);
        while (ProcFs.ReadPid(pidFile) is null && DateTime.UtcNow < deadline)
            Thread.Sleep(50);
        if (ProcFs.ReadPid(pidFile) is null)
            throw new BenchException($"haproxy in pod {Ns}/{pod} wrote no pid file {pidFile}; log: {(File.Exists(log) ? File.ReadAllText(log) : "(none)")}");
    }
}

IEnumerable<(string Name, int Pid)> SidecarPids()
{
    if (!sidecars) yield break;
    foreach (var pod in new[] { "client", "server" })
        if (ProcFs.ReadPid(Path.Combine(work, $"haproxy-{pod}.pid")) is { } pid)
            yield return ($"HAProxy sidecar, {pod} pod", pid);
}


// --- files ---

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

// --compare l7: the client's egress policy (see where it is applied for why one policy with two ports).
static string L7PolicyYaml() => $$$"""
    # Written by bench/Trellis.Bench.ServiceLatency (--compare l7).
    apiVersion: cilium.io/v2
    kind: CiliumNetworkPolicy
    metadata: {name: bench-client-egress, namespace: {{{Ns}}}}
    spec:
      endpointSelector: {matchLabels: {app: client}}
      egress:
        - toEndpoints: [{matchLabels: {app: server}}]
          toPorts:
            - ports: [{port: "8080", protocol: TCP}, {port: "{{{SidecarPort}}}", protocol: TCP}]
        - toEndpoints: [{matchLabels: {app: server}}]
          toPorts:
            - ports: [{port: "{{{ProxiedPort}}}", protocol: TCP}]
              rules:
                http: [{method: GET, path: "/.*"}]

    """;

// --- arguments, helpers ---

string? Opt(string name) => BenchArgs.Opt(args, name);

int IntOpt(string name, int dflt) => BenchArgs.IntOpt(args, name, dflt);

static void Say(string s) => Console.Error.WriteLine(s);

static int Fail(string message)
{
    Console.Error.WriteLine($"error: {message}");
    return 1;
}

internal sealed record Case(string Key, string Name, int Threads, int Connections, bool CloseEach);
/// <param name="Service">Through the ClusterIP: every connect must be translated by the socket load balancer.</param>
/// <param name="FlowEvents">Set the node's flow events on/off before each run (null: leave as they are).</param>
/// <param name="Via">The proxies on the path (--compare l7).</param>
internal sealed record Target(string Name, string Url, bool Service = false, bool? FlowEvents = null, Hop Via = Hop.Direct,
    bool? SocketAcceleration = null);
internal enum Hop { Direct, NodeProxy, Sidecars }
/// <param name="AgentTicks">CPU time (USER_HZ ticks) of the agent, the node proxy and the sidecars during the run.</param>
/// <param name="Proxied">HTTP records the agent received from the node proxy during the run.</param>
internal sealed record Run(int Round, Case Case, Target Target, WrkResult Wrk, long Translated, double AgentCpuPercent,
    Dictionary<string, (ulong Ns, ulong Runs)> Programs, long AgentTicks = 0, long ProxyTicks = 0, long SidecarTicks = 0, long Proxied = 0, double WallSeconds = 0);
