// Run (as root; python3, bash, bpftool from scripts/install-deps.sh):
//   dotnet run -c Release --project bench/Trellis.Bench.ControlPlane [--reps 10] [--cli-reps 3] [--pods 100,1000]
//     [--markdown FILE] [--quick] [--node bench-cp] [--pod-cidr 10.220.0.0/21] [--trellis PATH]
// CI smoke run: dotnet run -c Release --project bench/Trellis.Bench.ControlPlane -- --quick
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Trellis.Api;
using Trellis.Bench.Common;
using Trellis.Bench.ControlPlane;
using Trellis.Lab;

// Control-plane figures of issue 7, measured with real pods and real packets in a one-node lab (node bench-cp):
//   1. policy change -> enforcement: a client pod sends a steady UDP stream (one datagram per ~ms, logged with its
//      send time) to a server pod, which logs every datagram it receives; a policy on the server's ingress is applied
//      alternately in a version that allows the stream's port and one that does not. Figure: from the start of the
//      apply (API call, or the `trellis policy apply` process) to the send time of the first datagram with the new
//      verdict (the first one received after a change to allow; the first one lost for good after a change to deny);
//      the policy selecting the server only, then (same rule) every endpoint of the namespace.
//   2. pod creation -> first allowed packet: a new pod (the lab's own creation path, LabRunner.UpAsync with one pod)
//      whose command sends a datagram to the server every ~ms from the start, each stamped with its send time; figure:
//      from the start of the creation to the send time of the first datagram the server received. Once with a label
//      set whose identity exists already, once with a new identity that the server's policy must learn first.
//   3. memory: the agent's RSS (and the proxy's, the BPF maps' and the state store's size) with 0 endpoints, the 3 of
//      the test pods, and then with the lab filled to 100 and 1,000 endpoints by pods that are namespaces with no
//      process (their command is `true`), created through the same lab path; the creation rate is a figure too.
// The same figures 1 and 2 are taken again at each size. Nothing is asserted about time: the bench reports figures,
// and aborts only when a measurement cannot be made (the stream does not flow, the agent refuses a request...); a probe
// pod that is never allowed is reported, not fatal.
const string Ns = "bench";
const string TogglePolicy = "bench-toggle";

if (args.Contains("--help") || args.Contains("-h"))
{
    Console.WriteLine("""
        Usage: dotnet run -c Release --project bench/Trellis.Bench.ControlPlane [-- options]   (as root)
          --reps N              repetitions of each timed figure per lab size (default 10; --quick: 2)
          --cli-reps N          policy changes through the `trellis policy apply` process, per verdict and size
                                (default 3; --quick: 1)
          --pods LIST           lab sizes (endpoints) to fill up to and measure at, comma-separated (default 100,1000;
                                --quick: 20). The 3 test pods count; fillers are pods with no process.
          --quick               CI smoke run: --reps 2 --cli-reps 1 --pods 20, markdown to bench/results/control-plane-quick.md
          --markdown FILE       write the report there too (default bench/results/control-plane.md)
          --node NAME           lab node (default bench-cp); a lab left on it by an interrupted run is taken down first
          --pod-cidr CIDR       the node's pod CIDR (default 10.220.0.0/21: room for 2,045 pods)
          --pods-per-identity N filler pods sharing one label set, hence one identity (default 10); each group gets its
                                own CiliumNetworkPolicy (ingress from the client pod on TCP 8080)
          --batch N             filler pods per `lab up` call (default 100)
          --interval-us N       the client stream's interval (default 1000): the resolution of figure 1
          --trellis PATH        the trellis CLI (default: ./trellis of this checkout)
        """);
    return 0;
}

bool quick = args.Contains("--quick");
int reps, cliReps, perIdentity, batchSize, intervalUs;
List<int> sizes;
try
{
    reps = IntOpt("--reps", quick ? 2 : 10);
    cliReps = IntOpt("--cli-reps", quick ? 1 : 3, allowZero: true);
    perIdentity = IntOpt("--pods-per-identity", 10);
    batchSize = IntOpt("--batch", 100);
    intervalUs = IntOpt("--interval-us", 1000);
    sizes = (Opt("--pods") ?? (quick ? "20" : "100,1000")).Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
        .Select(s => int.TryParse(s, out var n) && n > 3 ? n : throw new ArgumentException($"--pods takes sizes above 3 (the test pods), not '{s}'"))
        .Order().ToList();
}
catch (ArgumentException e)
{
    return Fail(e.Message);
}
var node = Opt("--node") ?? "bench-cp";
var podCidr = Opt("--pod-cidr") ?? "10.220.0.0/21";
var repo = BenchArgs.RepoRoot()
    ?? throw new BenchException("cannot find the repository root (Trellis.slnx) above the current directory; pass --trellis PATH and --markdown FILE");
var trellis = Opt("--trellis") ?? Path.Combine(repo, "trellis");
var markdownFile = Opt("--markdown") ?? Path.Combine(repo, "bench", "results", quick ? "control-plane-quick.md" : "control-plane.md");

if (!Environment.IsPrivilegedProcess)
    return Fail("run as root: the lab creates network namespaces, veths, cgroups and BPF programs");
foreach (var tool in new[] { "python3", "bash", "bpftool", "setsid", "ip", "nsenter" })
    if (Processes.Which(tool) is null)
        return Fail($"'{tool}' is not installed; run scripts/install-deps.sh (as root)");

using var signals = new SignalCancellation();
var ct = signals.Token;

var work = Path.Combine(Path.GetTempPath(), $"trellis-bench-cp-{Environment.ProcessId}");
Directory.CreateDirectory(work);
var traffic = new Traffic(work);
var rng = new Random(7);
var total = Stopwatch.StartNew();

// Results: timed figures by (size label, figure), memory snapshots, filler batches, counters of odd events.
var figures = new Dictionary<(string Stage, string Figure), List<double>>();
var stageOrder = new List<string>();
var memory = new List<MemorySnapshot>();
var batches = new List<FillBatch>();
var notes = new List<string>();
int probesNeverAllowed = 0, probesFirstLost = 0, probesTotal = 0, streamLost = 0;
double agentStartMs = 0;
var loadStart = Host.LoadAverage();

var labUp = false;
try
{
    if (File.Exists(Naming.NetnsPath(Naming.NodeNetns(node))) || File.Exists(Path.Combine(AgentPaths.RunDir(node), "agent.pid")))
    {
        Say($"removing a lab left over on node {node}");
        LabDown();
    }
    File.WriteAllText(Path.Combine(work, "server.py"), Scripts.Server);
    File.WriteAllText(Path.Combine(work, "client.py"), Scripts.Client);
    var lab0 = Path.Combine(work, "lab0.yaml");
    File.WriteAllText(lab0, $"# Written by bench/Trellis.Bench.ControlPlane.\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {Ns}}}\n");

    // The node and its agent, started as a user would (the CLI), with no pod yet.
    Say($"bringing up node {node} (pod CIDR {podCidr}) with no pods");
    labUp = true;
    var sw = Stopwatch.StartNew();
    RunTrellis("lab", "up", "-f", lab0, "--node", node, "--pod-cidr", podCidr);
    agentStartMs = sw.Elapsed.TotalMilliseconds;
    using var agent = new AgentClient(AgentPaths.Socket(node), TimeSpan.FromMinutes(5));
    var runner = new LabRunner(new LabOptions { Node = node, PodCidr = podCidr, TrellisCommand = [trellis] });

    await Task.Delay(3000, ct);
    memory.Add(await MeasureMemoryAsync("0 (agent just started)"));

    // The server first (the others need its address), then the policies, then the client and the anchor (a pod with
    // no process that keeps the probes' shared identity, app=probe, alive between probes).
    await CreatePodsAsync([PodYaml("server", "app: server", ["python3", "-u", Path.Combine(work, "server.py"), work,
        Scripts.StreamPort.ToString(CultureInfo.InvariantCulture), Scripts.ProbePort.ToString(CultureInfo.InvariantCulture)])]);
    var serverIp = (await agent.EndpointsAsync(ct)).Single(e => e.Namespace == Ns && e.Pod == "server").Ip;
    await WaitForFileAsync(Path.Combine(work, "server.ready"), TimeSpan.FromSeconds(20), "the server pod's python3 did not start (see its log " + Naming.PodLog(node, Ns, "server") + ")");
    foreach (var allow in new[] { true, false })
        foreach (var wide in new[] { true, false })
            File.WriteAllText(ToggleFile(allow, wide), ToggleYaml(allow, wide));
    await agent.ApplyPolicyAsync("probes.yaml", ProbesPolicyYaml(), ct);
    await ApplyToggleAsync(allow: true, wide: false);
    await CreatePodsAsync([
        PodYaml("client", "app: client", ["python3", "-u", Path.Combine(work, "client.py"), work, serverIp,
            Scripts.StreamPort.ToString(CultureInfo.InvariantCulture), intervalUs.ToString(CultureInfo.InvariantCulture)]),
        PodYaml("anchor", "app: probe", ["true"]),
    ]);
    await CheckStreamAsync();
    Say($"server {serverIp}: the client's stream (UDP {Scripts.StreamPort}) flows; policy {Ns}/{TogglePolicy} allows it");

    await RunStageAsync((await agent.EndpointsAsync(ct)).Count);
    int fillers = 0, policiesApplied = 0;
    foreach (var size in sizes)
    {
        await FillToAsync(size);
        await RunStageAsync(size);
    }
    // Once more after all that activity (drops reported as flows fill the flow store, policies came and went).
    memory.Add((await MeasureMemoryAsync($"{sizes[^1]:N0}, after the runs")) with { AfterRuns = true });

    var report = Report();
    Console.WriteLine();
    Console.WriteLine(report);
    Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(markdownFile))!);
    File.WriteAllText(markdownFile, report);
    Say($"wrote {markdownFile} (bench ran {total.Elapsed.TotalSeconds:0} s before the lab went down)");
    return 0;

    // --- stages ---

    async Task RunStageAsync(int endpoints)
    {
        var stage = $"{endpoints:N0} endpoints";
        stageOrder.Add(stage);
        Say($"--- {stage} ---");
        await Task.Delay(3000, ct);
        memory.Add(await MeasureMemoryAsync(endpoints.ToString("N0", CultureInfo.InvariantCulture)));

        // 1. Policy change -> enforcement, the stream running. First the toggled policy selects the server only (one
        //    endpoint's map changes), through the API and through the CLI; then the same policy selecting every endpoint
        //    of the namespace (every endpoint's map changes; the server's is only one of them). Always ends allowed, and
        //    with the policy selecting the server only again.
        File.WriteAllText(Path.Combine(work, "stream.on"), "");
        await Task.Delay(300, ct);
        long? deniedSince = null;
        foreach (var (count, cli, wide) in new[] { (reps, false, false), (cliReps, true, false), (reps, false, true) })
        {
            if (count == 0) continue;
            if (wide) await ApplyToggleAsync(allow: true, wide: true); // the change of selection itself is not measured
            for (int i = 0; i < count; i++)
                foreach (var allow in new[] { false, true })
                {
                    var (startNs, enforcedNs) = await ToggleAsync(stage, allow, cli, wide);
                    if (!allow) deniedSince = enforcedNs;
                    else if (deniedSince is { } d) traffic.MarkDenied(d, startNs);
                }
            if (wide) await ApplyToggleAsync(allow: true, wide: false);
        }
        File.Delete(Path.Combine(work, "stream.on"));

        // 2. Pod creation -> first allowed packet, alternating an existing and a new identity.
        for (int i = 0; i < reps; i++)
            foreach (var newIdentity in new[] { false, true })
                await ProbeAsync(stage, $"p{endpoints}-{i}-{(newIdentity ? "n" : "e")}", newIdentity);

        // 3. The agent's share of a pod creation (re-PUT of an existing endpoint: same work minus IPAM and identity
        //    allocation) and a listing (what `lab up` reads first).
        var anchor = (await agent.EndpointsAsync(ct)).Single(e => e.Namespace == Ns && e.Pod == "anchor");
        var put = new CreateEndpointRequest(anchor.Namespace, anchor.Pod, anchor.Labels, anchor.Ip, anchor.Ifname, anchor.NetnsPath, anchor.CgroupPath, []);
        for (int i = 0; i < reps; i++)
        {
            await Task.Delay(rng.Next(50, 150), ct);
            var t = Stopwatch.StartNew();
            await agent.PutEndpointAsync(put, ct);
            Add(stage, "agent: PUT /v1/endpoints (re-put of an existing endpoint)", t.Elapsed.TotalMilliseconds);
            t.Restart();
            var list = await agent.EndpointsAsync(ct);
            Add(stage, "agent: GET /v1/endpoints (list all)", t.Elapsed.TotalMilliseconds);
            if (list.Count != endpoints)
                throw new BenchException($"the agent lists {list.Count} endpoints, expected {endpoints}");
        }
        Say($"{stage}: done ({total.Elapsed.TotalSeconds:0} s so far, load {Host.LoadAverage()})");
    }

    async Task ApplyToggleAsync(bool allow, bool wide) =>
        await agent.ApplyPolicyAsync(ToggleFile(allow, wide), ToggleYaml(allow, wide), ct);

    async Task<(long StartNs, long EnforcedNs)> ToggleAsync(string stage, bool allow, bool cli, bool wide)
    {
        await Task.Delay(rng.Next(150, 400), ct); // not in step with the agent's timers (1 s device scan...)
        var mark = traffic.Mark();
        var file = ToggleFile(allow, wide);
        var yaml = ToggleYaml(allow, wide);
        var t0 = NowNs();
        var sw = Stopwatch.StartNew();
        if (cli) RunTrellis("policy", "apply", "-f", file, "--node", node);
        else await agent.ApplyPolicyAsync(file, yaml, ct);
        var rtt = sw.Elapsed.TotalMilliseconds;
        var t1 = NowNs();
        long? at = null;
        int lost = 0;
        while (at is null)
        {
            await Task.Delay(20, ct);
            traffic.Pump();
            var now = NowNs();
            if (allow) at = traffic.FirstAllowedSince(t0, mark);
            else if (now > t1 + 300_000_000) (at, lost) = traffic.FirstDeniedSince(t0, mark, now - 300_000_000, 200_000_000);
            if (at is null && now > t1 + 20_000_000_000)
                throw new BenchException($"{stage}: 20 s after the call that applied the {(allow ? "allowing" : "denying")} policy the stream still does not show it " +
                    $"(datagrams sent {traffic.Sent.Count}, received {traffic.Received.Count}); see {work}/client.log and server.log");
        }
        streamLost += lost;
        var how = $"policy selecting {(wide ? "every endpoint" : "the server only")}, {(cli ? "CLI" : "API")}";
        var verdict = allow ? "allowed" : "dropped";
        var ms = (at.Value - t0) / 1e6;
        Add(stage, $"{how}: apply -> first packet {verdict}", ms);
        Add(stage, cli ? $"{how}: `trellis policy apply` wall time" : $"{how}: POST /v1/policies round trip", rtt);
        Add(stage, $"{how}: first new verdict minus answer (< 0: before)", (at.Value - t1) / 1e6);
        await Task.Delay(100, ct); // the client flushes its log every 20 ms: let the datagram before the first new verdict arrive in it
        traffic.Pump();
        if (traffic.GapBefore(at.Value) is { } gap)
            Add(stage, "stream: gap between the last datagram with the old verdict and the first with the new (resolution)", gap / 1e6);
        Say($"{stage}  {how,-42} {(allow ? "allow" : "deny "),-5}  apply->first {verdict} {ms,7:0.0} ms  round trip {rtt,7:0.0} ms");
        return (t0, at.Value);
    }

    async Task ProbeAsync(string stage, string name, bool newIdentity)
    {
        await Task.Delay(rng.Next(100, 300), ct);
        var labels = newIdentity ? $"app: probe, probe: {name}" : "app: probe";
        var lab = LoadLab([PodYaml(name, labels, ["bash", "-c", Scripts.Probe(name, serverIp, work)])], $"{name}.yaml");
        traffic.Pump();
        var t0 = NowNs();
        var sw = Stopwatch.StartNew();
        await runner.UpAsync(lab, ct);
        var call = sw.Elapsed.TotalMilliseconds;
        var t1 = NowNs();
        probesTotal++;
        (int Seq, long SendNs, long RecvNs) first = default;
        while (!traffic.Probes.TryGetValue(name, out first))
        {
            await Task.Delay(10, ct);
            traffic.Pump();
            if (sw.Elapsed > TimeSpan.FromSeconds(15)) break;
        }
        var kind = newIdentity ? "new identity" : "identity exists";
        if (first.SendNs == 0)
        {
            probesNeverAllowed++;
            notes.Add($"{stage}: probe {name} ({kind}) got no datagram through within 15 s (see {Naming.PodLog(node, Ns, name)})");
            Say($"{stage}  probe {name}: no datagram allowed within 15 s");
        }
        else
        {
            if (first.Seq > 0)
            {
                probesFirstLost++;
                notes.Add($"{stage}: probe {name} ({kind}): its first {first.Seq} datagram(s) did not arrive; the first that did was sent " +
                    $"{(first.SendNs - t1) / 1e6:0.0} ms after the creation call returned");
            }
            var ms = (first.SendNs - t0) / 1e6;
            Add(stage, $"pod ({kind}): create -> first allowed packet", ms);
            Add(stage, $"pod ({kind}): creation call (LabRunner.UpAsync, 1 pod)", call);
            Add(stage, $"pod ({kind}): first allowed packet minus call return (< 0: before)", (first.SendNs - t1) / 1e6);
            Say($"{stage}  probe {name,-16} create->first allowed {ms,7:0.0} ms  (creation call {call,6:0.0} ms, first seq {first.Seq})");
        }
        await runner.DeletePodAsync(Ns, name, TimeSpan.Zero, ct);
    }

    // Fills the lab with pods that are namespaces with no process, in batches through the lab's own path; every
    // --pods-per-identity of them share a label set (one identity) selected by one policy of their own.
    async Task FillToAsync(int size)
    {
        var have = (await agent.EndpointsAsync(ct)).Count;
        if (have >= size) return;
        int groups = (fillers + size - have + perIdentity - 1) / perIdentity;
        if (groups > policiesApplied)
        {
            var docs = Enumerable.Range(policiesApplied, groups - policiesApplied).Select(FillerPolicyYaml);
            var t = Stopwatch.StartNew();
            await agent.ApplyPolicyAsync("fillers.yaml", string.Join("---\n", docs), ct);
            Say($"applied {groups - policiesApplied} filler policies ({groups} in all) in {t.Elapsed.TotalMilliseconds:0} ms");
            policiesApplied = groups;
        }
        Say($"filling the lab from {have} to {size} endpoints ({batchSize} pods per lab up)");
        while (have < size)
        {
            int n = Math.Min(batchSize, size - have);
            var pods = Enumerable.Range(fillers, n).Select(i => PodYaml($"fill-{i}", $"app: fill-{i / perIdentity}", ["true"])).ToList();
            var lab = LoadLab(pods, $"fill-{fillers}.yaml");
            var cpu0 = ProcFs.CpuTicks(AgentPid());
            var t = Stopwatch.StartNew();
            await runner.UpAsync(lab, ct);
            var s = t.Elapsed.TotalSeconds;
            var cpu = ProcFs.CpuTicks(AgentPid()) - cpu0;
            batches.Add(new FillBatch(have, have + n, s, cpu / 100.0));
            Say($"  {have,5} -> {have + n,5} endpoints: {s,6:0.0} s, {n / s,5:0.0} pods/s, agent CPU {cpu * 10.0 / n,6:0.0} ms per pod");
            have += n;
            fillers += n;
        }
    }

    async Task CreatePodsAsync(IReadOnlyList<string> podYamls) => await runner.UpAsync(LoadLab(podYamls, $"pods-{Guid.NewGuid():N}.yaml"), ct);

    // A lab file holding the pods (and the namespace, which LabRunner.Load wants to see defined), loaded the way `lab up`
    // loads it. The namespace exists already, so it is left out of what UpAsync does (it would PUT it again).
    LabFile LoadLab(IReadOnlyList<string> podYamls, string fileName)
    {
        var path = Path.Combine(work, fileName);
        File.WriteAllText(path, $"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {Ns}}}\n---\n" + string.Join("---\n", podYamls));
        return LabRunner.Load(path) with { Namespaces = [] };
    }

    async Task CheckStreamAsync()
    {
        File.WriteAllText(Path.Combine(work, "stream.on"), "");
        var mark = traffic.Mark();
        var t0 = NowNs();
        var sw = Stopwatch.StartNew();
        while (traffic.FirstAllowedSince(t0, mark) is null)
        {
            if (sw.Elapsed > TimeSpan.FromSeconds(20))
                throw new BenchException($"the client's stream does not reach the server (sent {traffic.Sent.Count}, received {traffic.Received.Count}); " +
                    $"see {Naming.PodLog(node, Ns, "client")}, {Naming.PodLog(node, Ns, "server")} and '{trellis} observe --node {node}'");
            await Task.Delay(50, ct);
            traffic.Pump();
        }
        File.Delete(Path.Combine(work, "stream.on"));
    }

    async Task<MemorySnapshot> MeasureMemoryAsync(string label)
    {
        // Idle CPU over 5 s first (nothing else happens in the lab meanwhile), then the memory figures.
        var pid = AgentPid();
        var c0 = ProcFs.CpuTicks(pid);
        await Task.Delay(5000, ct);
        var idleCpu = (ProcFs.CpuTicks(pid) - c0) / 100.0 / 5 * 100;
        var status = ProcFs.Status(pid);
        var proxy = ProcFs.LivePid(BenchLab.ProxyPidFile(node)) is { } ppid ? ProcFs.Status(ppid) : [];
        var endpoints = (await agent.EndpointsAsync(ct)).Count;
        var bpf = BpfMemory();
        var stateDir = AgentPaths.StateDir(node);
        var files = Directory.Exists(stateDir) ? Directory.EnumerateFiles(stateDir, "*", SearchOption.AllDirectories).Select(f => new FileInfo(f).Length).ToList() : [];
        var m = new MemorySnapshot(label, endpoints, status.GetValueOrDefault("VmRSS"), status.GetValueOrDefault("RssAnon"), status.GetValueOrDefault("RssFile"),
            status.GetValueOrDefault("VmHWM"), (int)status.GetValueOrDefault("Threads"), proxy.GetValueOrDefault("VmRSS"), bpf, files.Count, files.Sum(), idleCpu, Host.LoadAverage());
        Say($"memory at {label}: {m.Endpoints} endpoints, agent RSS {Mib(m.RssKb)} (anon {Mib(m.AnonKb)}, file {Mib(m.FileKb)}, peak {Mib(m.HwmKb)}), " +
            $"proxy {Mib(m.ProxyRssKb)}, BPF maps {bpf.SharedBytes / 1048576.0:0.0} MiB shared + {bpf.InnerBytes / 1024.0:0.0} KiB in {bpf.InnerMaps} policy maps, " +
            $"ipcache {bpf.IpcacheBytes / 1024.0:0.0} KiB, state {m.StateFiles} files / {m.StateBytes / 1024.0:0} KiB, agent idle CPU {idleCpu:0.0}%");
        return m;
    }

    // Memory of the node's BPF maps as the kernel accounts it (bytes_memlock, which since Linux 6.4 is each map type's
    // own estimate of its memory: full size for preallocated hash/LRU/array maps, per entry for LPM tries): the pinned
    // maps, and the per-endpoint policy maps (inner maps of trellis_policy, which are not pinned).
    BpfMemory BpfMemory()
    {
        var root = AgentPaths.PinRoot(node);
        long shared = 0, ipcache = 0;
        foreach (var f in Directory.EnumerateFiles(root))
        {
            var r = Processes.Run("bpftool", ["-j", "map", "show", "pinned", f], TimeSpan.FromSeconds(30), ct);
            if (r.Code != 0) continue; // not a map
            var m = JsonDocument.Parse(r.Out).RootElement;
            var bytes = m.GetProperty("bytes_memlock").GetInt64();
            shared += bytes;
            if (Path.GetFileName(f) == "trellis_ipcache") ipcache = bytes;
        }
        var dump = Processes.Run("bpftool", ["-j", "map", "dump", "pinned", Path.Combine(root, "trellis_policy")], TimeSpan.FromSeconds(60), ct);
        if (dump.Code != 0) throw new BenchException($"bpftool map dump of trellis_policy failed: {dump.Err}");
        var inner = new HashSet<long>();
        foreach (var e in JsonDocument.Parse(dump.Out).RootElement.EnumerateArray())
        {
            var v = e.GetProperty("value");
            inner.Add(v.ValueKind == JsonValueKind.Number ? v.GetInt64()
                : v.EnumerateArray().Select((b, i) => Convert.ToInt64(b.GetString(), 16) << (8 * i)).Sum()); // little-endian bytes
        }
        var all = Processes.Run("bpftool", ["-j", "map", "show"], TimeSpan.FromSeconds(60), ct);
        if (all.Code != 0) throw new BenchException($"bpftool map show failed: {all.Err}");
        long innerBytes = 0;
        int found = 0;
        foreach (var m in JsonDocument.Parse(all.Out).RootElement.EnumerateArray())
            if (inner.Contains(m.GetProperty("id").GetInt64()))
            {
                innerBytes += m.GetProperty("bytes_memlock").GetInt64();
                found++;
            }
        return new BpfMemory(shared, ipcache, found, innerBytes);
    }

    // --- report ---

    string Report()
    {
        var sb = new StringBuilder();
        sb.AppendLine($"Machine: {Host.Describe()}; load average {loadStart} at the start, {Host.LoadAverage()} at the end; commit {Commit()}.");
        sb.AppendLine($"Lab node `{node}`, pod CIDR {podCidr}; {reps} repetitions per figure and size ({cliReps} through the CLI per verdict), " +
            $"client stream every {intervalUs} µs; fillers: {perIdentity} pods per identity, one CiliumNetworkPolicy per identity, {batchSize} pods per `lab up` call; " +
            $"bench wall time {total.Elapsed.TotalSeconds:0} s (without taking the lab down); agent start (`trellis lab up` of an empty lab) {agentStartMs:0} ms.");
        sb.AppendLine();
        sb.AppendLine("| figure (ms: min / **median** / max) | " + string.Join(" | ", stageOrder) + " |");
        sb.AppendLine("|---|" + string.Concat(stageOrder.Select(_ => "---|")));
        var groups = figures.Keys.Select(k => Group(k.Figure)).Distinct().ToList();
        foreach (var figure in figures.Keys.Select(k => k.Figure).Distinct().OrderBy(f => groups.IndexOf(Group(f))).ThenBy(Rank))
            sb.AppendLine($"| {figure} | " + string.Join(" | ", stageOrder.Select(s => Summary(figures.GetValueOrDefault((s, figure))))) + " |");
        sb.AppendLine();
        sb.AppendLine("Policy: one CiliumNetworkPolicy is applied alternately allowing and not allowing the client's UDP stream to the server " +
            "(one datagram per interval from one socket, each stamped with its send time), selecting the server only (one endpoint's map " +
            "changes) or every endpoint of the namespace (every endpoint's map changes, the server's among them). The figure runs from the " +
            "start of the apply (API call, or starting the `trellis policy apply` process) to the send time of the first datagram with the new " +
            "verdict (allowed: the first one the server received; dropped: the first one after the last received, with all later ones lost); " +
            "its resolution is the stream's interval. \"Minus answer\": that moment minus the moment the call returned. Pod: from the start of " +
            "LabRunner.UpAsync (what `trellis lab up -f` does, without starting the CLI process) for one new pod whose command sends a " +
            "datagram to the server every ~1 ms from its start, to the send time of the first datagram the server received; the new pod's " +
            "labels map to an existing identity, or to a new one that the server's policy (which allows app=probe) must learn first.");
        sb.AppendLine();
        sb.AppendLine("| endpoints | agent VmRSS | RssAnon | RssFile | VmHWM | agent threads | agent idle CPU | proxy VmRSS | BPF maps, pinned (memlock) | of which ipcache | per-endpoint policy maps (memlock) | state store | load |");
        sb.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        foreach (var m in memory)
            sb.AppendLine($"| {m.Label} | {Mib(m.RssKb)} | {Mib(m.AnonKb)} | {Mib(m.FileKb)} | {Mib(m.HwmKb)} | {m.Threads} | {m.IdleCpuPercent:0.0}% | {Mib(m.ProxyRssKb)} | " +
                $"{m.Bpf.SharedBytes / 1048576.0:0.0} MiB | {m.Bpf.IpcacheBytes / 1024.0:0.0} KiB | {m.Bpf.InnerBytes / 1024.0:0.0} KiB in {m.Bpf.InnerMaps} maps | " +
                $"{m.StateFiles} files, {m.StateBytes / 1024.0:0} KiB | {m.Load} |");
        var stages = memory.Where(m => !m.AfterRuns).ToList();
        if (stages.Count >= 3)
        {
            var (a, b) = (stages[^2], stages[^1]);
            var n = b.Endpoints - a.Endpoints;
            if (n > 0)
                sb.AppendLine($"\nMarginal cost of one more endpoint between {a.Endpoints:N0} and {b.Endpoints:N0}: agent RSS {(b.RssKb - a.RssKb) / (double)n:0.0} KiB " +
                    $"(anonymous {(b.AnonKb - a.AnonKb) / (double)n:0.0} KiB), BPF maps {(b.Bpf.SharedBytes + b.Bpf.InnerBytes - a.Bpf.SharedBytes - a.Bpf.InnerBytes) / 1024.0 / n:0.00} KiB " +
                    $"(memlock), state store {(b.StateBytes - a.StateBytes) / 1024.0 / n:0.00} KiB on disk in {(b.StateFiles - a.StateFiles) / (double)n:0.0} files.");
        }
        sb.AppendLine();
        sb.AppendLine("RSS from /proc/PID/status of the agent (/run/trellis/NODE/agent.pid) after 5 s idle (idle CPU: utime+stime over those 5 s); " +
            "it includes garbage the .NET GC has not collected yet (workstation, non-concurrent GC). BPF: bytes_memlock of `bpftool map show` " +
            "(the kernel's own estimate per map: full size for preallocated maps, per entry for LPM tries; the per-map structures are not counted).");
        if (batches.Count > 0)
        {
            sb.AppendLine();
            sb.AppendLine("| pods created (lab path, no process) | wall time | pods/s | agent CPU per pod |");
            sb.AppendLine("|---|---|---|---|");
            foreach (var b in batches)
                sb.AppendLine($"| {b.From:N0} -> {b.To:N0} | {b.Seconds:0.0} s | {(b.To - b.From) / b.Seconds:0.0} | {b.AgentCpuSeconds * 1000 / (b.To - b.From):0.0} ms |");
            var all = batches.Sum(b => b.Seconds);
            sb.AppendLine($"| all {batches.Sum(b => b.To - b.From):N0} | {all:0.0} s | {batches.Sum(b => b.To - b.From) / all:0.0} | {batches.Sum(b => b.AgentCpuSeconds) * 1000 / batches.Sum(b => b.To - b.From):0.0} ms |");
        }
        sb.AppendLine();
        sb.AppendLine($"Checks: stream datagrams received although sent after a drop was judged: {traffic.LateReceipts}; stream datagrams lost before a " +
            $"change to deny took effect (not policy): {streamLost}; probes whose first datagram(s) did not arrive: {probesFirstLost} of {probesTotal}; " +
            $"probes never allowed: {probesNeverAllowed}.");
        foreach (var n in notes)
            sb.AppendLine($"* {n}");
        return sb.ToString();
    }
}
catch (OperationCanceledException) when (ct.IsCancellationRequested)
{
    Console.Error.WriteLine("interrupted");
    return 130;
}
catch (Exception e) when (e is BenchException or LabException or AgentUnavailableException or AgentRequestException or HttpRequestException
    or Trellis.Policy.ManifestException)
{
    return Fail(e.Message);
}
finally
{
    if (labUp)
    {
        Say($"taking the lab down (node {node})");
        var down = Stopwatch.StartNew();
        LabDown();
        Say($"lab down in {down.Elapsed.TotalSeconds:0.0} s");
    }
    try { Directory.Delete(work, recursive: true); }
    catch (IOException) { }
}

// --- lab files ---

static string PodYaml(string name, string labels, IReadOnlyList<string> command) =>
    "apiVersion: v1\nkind: Pod\n" +
    $"metadata: {{name: {name}, namespace: {Ns}, labels: {{{labels}}}}}\n" +
    $"spec:\n  containers: [{{name: c, command: [{string.Join(", ", command.Select(c => JsonSerializer.Serialize(c)))}]}}]\n";

// The toggled policy: the server's ingress from the client, on the stream's port (allow) or on another port (so the
// stream falls under the server's default deny). Both keep the server's ingress enforced: only the map changes.
// With wide, the same rule selects every endpoint of the namespace, so every endpoint's map changes.
static string ToggleYaml(bool allow, bool wide) =>
    $"# Written by bench/Trellis.Bench.ControlPlane: {(allow ? "allows" : "does not allow")} the client's stream.\n" +
    IngressPolicy(TogglePolicy, wide ? null : "server", "client", allow ? Scripts.StreamPort : Scripts.DeniedPort, "UDP");

string ToggleFile(bool allow, bool wide) => Path.Combine(work, $"toggle-{(allow ? "allow" : "deny")}{(wide ? "-wide" : "")}.yaml");

static string ProbesPolicyYaml() => IngressPolicy("bench-probes", "server", "probe", Scripts.ProbePort, "UDP");

static string FillerPolicyYaml(int group) => IngressPolicy($"fill-{group}", $"fill-{group}", "client", 8080, "TCP");

static string IngressPolicy(string name, string? app, string fromApp, int port, string protocol) =>
    "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\n" +
    $"metadata: {{name: {name}, namespace: {Ns}}}\n" +
    "spec:\n" +
    (app is null ? "  endpointSelector: {}\n" : $"  endpointSelector: {{matchLabels: {{app: {app}}}}}\n") +
    "  ingress:\n" +
    $"    - fromEndpoints: [{{matchLabels: {{app: {fromApp}}}}}]\n" +
    $"      toPorts: [{{ports: [{{port: \"{port}\", protocol: {protocol}}}]}}]\n";

// --- helpers ---

void Add(string stage, string figure, double value)
{
    if (!figures.TryGetValue((stage, figure), out var list)) figures[(stage, figure)] = list = [];
    list.Add(value);
}

static string Group(string figure) => figure[..figure.IndexOf(':')];

// Within a group of figures: the end-to-end figure first, then the call's own time, then the difference.
static int Rank(string figure) =>
    figure.Contains("first packet dropped") || figure.Contains("create -> first") ? 0
    : figure.Contains("first packet allowed") ? 1
    : figure.Contains("round trip") || figure.Contains("wall time") || figure.Contains("creation call") ? 2
    : figure.Contains("minus") ? 3 : 4;

static string Summary(List<double>? values)
{
    if (values is not { Count: > 0 }) return "";
    var s = values.Order().ToList();
    return $"{Ms(s[0])} / **{Ms(Figures.Median(s))}** / {Ms(s[^1])} ({s.Count})";
}

static string Ms(double ms) => Math.Abs(ms) >= 100 ? ms.ToString("0", CultureInfo.InvariantCulture) : ms.ToString("0.0", CultureInfo.InvariantCulture);
static string Mib(long kb) => kb <= 0 ? "-" : $"{kb / 1024.0:0.0} MiB";

static long NowNs() => (DateTime.UtcNow - DateTime.UnixEpoch).Ticks * 100;

async Task WaitForFileAsync(string path, TimeSpan timeout, string what)
{
    var sw = Stopwatch.StartNew();
    while (!File.Exists(path))
    {
        if (sw.Elapsed > timeout) throw new BenchException(what);
        await Task.Delay(50, ct);
    }
}

int AgentPid() => ProcFs.LivePid(BenchLab.AgentPidFile(node))
    ?? throw new BenchException($"no agent pid in {AgentPaths.RunDir(node)}/agent.pid: is the agent of node {node} running?");

string Commit()
{
    try
    {
        var head = Processes.Run("git", ["-C", repo, "rev-parse", "--short", "HEAD"], TimeSpan.FromSeconds(10), CancellationToken.None);
        if (head.Code != 0) return "unknown (not a git checkout)";
        var dirty = Processes.Run("git", ["-C", repo, "status", "--porcelain", "--untracked-files=no", "--", "src", "bpf"], TimeSpan.FromSeconds(10), CancellationToken.None);
        return head.Out.Trim() + (dirty.Out.Trim().Length > 0 ? " (with uncommitted changes in src/ or bpf/)" : "");
    }
    catch (BenchException) // git missing, or hanging
    {
        return "unknown";
    }
}

void RunTrellis(params string[] a) => BenchLab.RunTrellis(trellis, a, TimeSpan.FromMinutes(10), ct);

void LabDown() => BenchLab.Down(trellis, node, TimeSpan.FromMinutes(10));

string? Opt(string name) => BenchArgs.Opt(args, name);

int IntOpt(string name, int dflt, bool allowZero = false) => BenchArgs.IntOpt(args, name, dflt, allowZero);

static void Say(string s) => Console.Error.WriteLine($"[{DateTime.Now:HH:mm:ss}] {s}");

static int Fail(string message)
{
    Console.Error.WriteLine($"error: {message}");
    return 1;
}

internal sealed record BpfMemory(long SharedBytes, long IpcacheBytes, int InnerMaps, long InnerBytes);
internal sealed record MemorySnapshot(string Label, int Endpoints, long RssKb, long AnonKb, long FileKb, long HwmKb, int Threads, long ProxyRssKb,
    BpfMemory Bpf, int StateFiles, long StateBytes, double IdleCpuPercent, string Load)
{
    public bool AfterRuns { get; init; }
}
internal sealed record FillBatch(int From, int To, double Seconds, double AgentCpuSeconds);
