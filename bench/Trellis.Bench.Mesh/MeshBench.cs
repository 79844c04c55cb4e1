using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Trellis.Api;
using Trellis.Bench.Common;
using Trellis.Lab;

namespace Trellis.Bench.Mesh;

/// <summary>Where a command runs: a network namespace and, optionally, a cgroup v2 directory it joins first (a lab
/// pod's, so the node's socket programs see it exactly as they see the pod's own processes).</summary>
internal sealed record Place(string Name, string Netns, string? Cgroup);

/// <summary>What one path needs to be measured: the wrk URL, the iperf3 address, and who sends.</summary>
internal sealed record Target(Place From, string Url, string TcpHost, int TcpPort);

/// <summary>Memory of one process at one moment (KiB; -1 unknown).</summary>
internal sealed record MemorySample(string Process, string When, long RssKb, long HwmKb, long PssKb);

/// <summary>The marginal memory of one more pod: the agent's RSS and the node's BPF map memory before and after
/// adding <see cref="Pods"/> pods.</summary>
internal sealed record PodMemory(int Pods, long AgentRssBeforeKb, long AgentRssAfterKb, long MapBytesBefore, long MapBytesAfter,
    int MapsBefore, int MapsAfter, long ProxyRssBeforeKb, long ProxyRssAfterKb)
{
    public double AgentPerPodBytes => (AgentRssAfterKb - AgentRssBeforeKb) * 1024.0 / Pods;
    public double MapsPerPodBytes => (double)(MapBytesAfter - MapBytesBefore) / Pods;
}

/// <summary>The whole benchmark: sets up the lab, the no-mesh baseline and the proxies, runs every case in every
/// scenario for N rounds (scenario order rotating per round), then measures memory. Everything it creates is
/// removed by <see cref="Cleanup"/>, which Program calls on success, failure and Ctrl-C alike.</summary>
internal sealed class MeshBench(Options o, CancellationToken ct)
{
    const string Ns = "bench";
    const string ClusterIp = "10.96.50.60";
    // Server pod ports. 8081 is the same nginx as 8080, but the client's egress policy has HTTP rules on it, so the
    // datapath hands its connections to the node's L7 proxy. 8083 and 5203 have no listener at all: only the
    // sidecars' interception makes them answer, so a run that bypassed the sidecars fails instead of measuring
    // the wrong path.
    const int HttpPort = 8080, L7Port = 8081, SidecarHttpPort = 8083, IperfPort = 5201, SidecarIperfPort = 5203;
    // The node-local HAProxy, on the node's router address (in the node's network namespace).
    const int NodeHttpPort = 18080, NodeTcpPort = 15201;
    // The sidecars' listeners (Istio's numbers where it has them: 15001 outbound, 15006 inbound).
    const int OutboundHttp = 15001, OutboundTcp = 15002, InboundHttp = 15006, InboundTcp = 15007;
    const string NftTable = "trellis_bench_sidecar";
    // The baseline's addresses: the lab's pod plumbing copied into a /24 of its own.
    const string BaseRouterIp = "10.201.0.1", BaseClientIp = "10.201.0.2", BaseServerIp = "10.201.0.3";
    const string GatewayIp = "169.254.1.1";
    // iperf3 -s listens with -4, an AF_INET socket like nginx's, as the committed figures were measured. Its default
    // dual-stack [::] listener accepts IPv4 connections on AF_INET6 sockets (v4-mapped), which socket acceleration
    // spliced only on the client side until bpf/sock.c took v4-mapped sockets too (every byte crossed TC then).

    readonly string work = Path.Combine(Path.GetTempPath(), $"trellis-bench-mesh-{Environment.ProcessId}");
    string Node => o.Node;
    string[] Pin => o.Cpu is { } c ? ["taskset", "-c", c.ToString(CultureInfo.InvariantCulture)] : [];

    // What Cleanup must undo.
    bool labUp, baselineUp, sidecarsUp;
    string? bpfStatsBefore; // kernel.bpf_stats_enabled as found, restored at the end (--bpf-stats)

    AgentClient? agent;
    string serverIp = "", routerIp = "";
    Place labClient = null!, labServer = null!, nodeHost = null!, baseClient = null!;
    int haproxyUid;
    string? accelUnavailable; // why scenario 3 cannot run (null: it can)
    bool accelOn;
    string sockOpsSeen = "";
    int proxyPid;

    public List<Run> Runs { get; } = [];
    public List<MemorySample> Memory { get; } = [];
    public PodMemory? Pods { get; private set; }
    public List<Scenario> Scenarios { get; private set; } = [];
    public string TrellisVersion { get; private set; } = "";
    public string? AccelUnavailable => accelUnavailable;

    static void Say(string s) => Console.Error.WriteLine(s);

    public async Task RunAsync()
    {
        CheckTools();
        Directory.CreateDirectory(work);
        // Leftovers of an interrupted earlier run (SIGKILL gives no chance to clean up) would keep old pods.
        if (File.Exists(Naming.NetnsPath(Naming.NodeNetns(Node))))
        {
            Say($"removing a lab left over on node {Node}");
            LabDown();
        }
        BaselineDown();

        Say($"trellis CLI: {o.Trellis} (built first if its sources changed)");
        TrellisVersion = Processes.Check(o.Trellis, ["--version"], ct).Trim();
        // The version names the commit; say so when the checkout's wrapper built it from a tree with local changes.
        if (o.Trellis == Path.Combine(o.RepoRoot, "trellis") &&
            Processes.Run("git", ["-C", o.RepoRoot, "status", "--porcelain", "--", "src", "bpf"], TimeSpan.FromSeconds(30), ct) is { Code: 0, Out.Length: > 0 })
            TrellisVersion += " (with uncommitted changes in src/ or bpf/)";
        SetUpLab();
        agent = new AgentClient(AgentPaths.Socket(Node), TimeSpan.FromSeconds(20));
        var status = await agent.StatusAsync(ct);
        routerIp = status.RouterIp;
        serverIp = (await agent.EndpointsAsync(ct)).SingleOrDefault(e => e.Namespace == Ns && e.Pod == "server")?.Ip
            ?? throw new BenchException($"the agent does not list pod {Ns}/server");
        // Issue 7 measures Trellis with flow events on (the default); a node left with them off would flatter it.
        RunTrellis("config", "--flow-events", "on");
        SetUpBaseline();
        WriteProxyConfigs();
        StartNodeHaproxy();
        DetectAcceleration();
        Scenarios = o.Scenarios.Where(s => s.Kind != Kind.Accel || accelUnavailable is null).ToList();
        await ProbeAsync();
        if (o.BpfStats)
        {
            bpfStatsBefore = File.ReadAllText("/proc/sys/kernel/bpf_stats_enabled").Trim();
            File.WriteAllText("/proc/sys/kernel/bpf_stats_enabled", "1");
        }

        if (o.WarmUp)
        {
            // Not recorded: nginx, the caches, conntrack, the LB maps and the proxies (the L7 proxy's JIT settles within
            // the first seconds) see traffic before the first figure; every path's checks run once before the long part.
            Say("warm-up: 1 s per case and scenario");
            foreach (var c in o.Cases)
                foreach (var s in Scenarios.Where(s => s.Supports(c)))
                    await MeasureAsync(-1, c, s, 1);
        }

        for (int r = 0; r < o.Rounds; r++)
            foreach (var c in o.Cases)
            {
                // Rotating the order by one per round: on a shared machine the load drifts, and a scenario that always
                // ran first (or right after the expensive one) would carry that drift into its ratio.
                var order = Enumerable.Range(0, Scenarios.Count).Select(i => Scenarios[(i + r) % Scenarios.Count]).Where(s => s.Supports(c));
                foreach (var s in order)
                {
                    var run = await MeasureAsync(r, c, s, o.Duration);
                    Runs.Add(run);
                    Say($"round {r + 1}/{o.Rounds}  {c.Key,-7} {s.Name,-32} " + (c.Tcp
                        ? $"{run.BitsPerSecond / 1e9,8:0.00} Gbit/s"
                        : $"{run.RequestsPerSec,10:N0} req/s  p50 {Figures.Us(run.P50Us),9}  p99 {Figures.Us(run.P99Us),9}") +
                        (run.Cpu.Total - run.Cpu.Agent > 0 ? $"  proxies {Report.PerRequest(run.Cpu.Total - run.Cpu.Agent, run)} CPU/{(c.Tcp ? "GiB" : "request")}" : ""));
                }
            }

        RecordProcessMemory("after the runs");
        Pods = await MeasurePodMemoryAsync(o.ExtraPods);
    }

    // --- setup ---

    void CheckTools()
    {
        if (!Environment.IsPrivilegedProcess)
            throw new BenchException("run as root: the bench creates network namespaces, veths, cgroups, nftables rules and BPF programs");
        var tools = new List<string> { "ip", "nsenter", "setsid", "curl", "nginx", "wrk", "iperf3", "haproxy", "nft", "gnuplot", "bpftool" };
        if (o.Cpu is not null) tools.Add("taskset");
        var missing = tools.Where(t => Processes.Which(t, "/usr/sbin", "/sbin") is null).ToList();
        if (missing.Count > 0)
            throw new BenchException($"missing tools: {string.Join(", ", missing)}; run scripts/install-deps.sh (as root)");
        if (!File.Exists(o.Trellis))
            throw new BenchException($"no trellis CLI at {o.Trellis} (--trellis)");
        // The client sidecar's interception must not catch the sidecar's own upstream connections (Istio exempts its
        // proxy's uid 1337 the same way): HAProxy drops to the Debian package's user, and the rule skips that uid.
        var entry = File.ReadLines("/etc/passwd").Select(l => l.Split(':')).FirstOrDefault(f => f.Length > 3 && f[0] == "haproxy");
        if (entry is null || !int.TryParse(entry[2], out haproxyUid))
            throw new BenchException("no 'haproxy' user (the Debian haproxy package creates it): the sidecars run as that user so their own connections are not intercepted");
    }

    void SetUpLab()
    {
        var labDir = Path.Combine(work, "lab");
        Directory.CreateDirectory(labDir);
        File.WriteAllText(Path.Combine(labDir, "nginx.conf"), NginxConf(labDir));
        var labFile = Path.Combine(work, "lab.yaml");
        File.WriteAllText(labFile, LabYaml(labDir));
        Say($"bringing up the lab (node {Node}, {labFile})");
        labUp = true;
        RunTrellis("lab", "up", "-f", labFile);
        labClient = new Place("client pod", Naming.NetnsPath(Naming.PodNetns(Node, Ns, "client")), Cgroups.PodDir(Node, Ns, "client"));
        labServer = new Place("server pod", Naming.NetnsPath(Naming.PodNetns(Node, Ns, "server")), Cgroups.PodDir(Node, Ns, "server"));
        // Like 'trellis lab host-exec': the node's own processes run in the node's cgroup, as a host's processes
        // would be under the socket load balancer.
        Directory.CreateDirectory(Cgroups.HostDir(Node));
        nodeHost = new Place("node", Naming.NetnsPath(Naming.NodeNetns(Node)), Cgroups.HostDir(Node));
    }

    // The baseline copies what the lab (src/Trellis.Lab/LabRunner.cs) builds for a node and its pods: a router
    // namespace with forwarding on, each pod a namespace with a /32 address, a veth into the router, a static ARP
    // entry for the link-local gateway and a /32 route back. The same kernel, nginx, iperf3, wrk and CPU pinning;
    // the only difference is what Trellis adds: no TC programs on the veths, no cgroup socket programs, no agent.
    // (Detaching Trellis's programs from the lab's own pods instead would change the lab behind the agent's back, per
    // run and twice per run, and could not remove the socket programs, which are attached to the node's cgroup and
    // serve the other scenarios' pods too.)
    string BaseNetns(string name) => $"{Node}-base-{name}";
    string BaseCgroup(string pod) => Path.Combine(Cgroups.Root(), "trellis-bench", Node, pod);

    void SetUpBaseline()
    {
        Say($"building the no-mesh baseline: namespaces {BaseNetns("router")}, {BaseNetns("client")}, {BaseNetns("server")}");
        baselineUp = true;
        var router = BaseNetns("router");
        Shell.Ip("netns", "add", router);
        Shell.IpNs(router, "link", "set", "lo", "up");
        Sysctl(router, "net.ipv4.ip_forward", "1");
        Sysctl(router, "net.ipv6.conf.all.disable_ipv6", "1");
        Sysctl(router, "net.ipv6.conf.default.disable_ipv6", "1");
        Shell.IpNs(router, "addr", "add", $"{BaseRouterIp}/32", "dev", "lo");
        foreach (var (pod, ip) in new[] { ("client", BaseClientIp), ("server", BaseServerIp) })
        {
            var netns = BaseNetns(pod);
            var veth = Naming.HostVeth("base", pod);
            var mac = Naming.HostMac("base", pod);
            Shell.Ip("netns", "add", netns);
            Shell.IpNs(netns, "link", "set", "lo", "up");
            Sysctl(netns, "net.ipv6.conf.all.disable_ipv6", "1");
            Sysctl(netns, "net.ipv6.conf.default.disable_ipv6", "1");
            Shell.IpNs(router, "link", "add", veth, "address", mac, "type", "veth", "peer", "name", "eth0", "netns", netns);
            Shell.IpNs(router, "link", "set", veth, "up");
            Shell.IpNs(netns, "addr", "add", $"{ip}/32", "dev", "eth0");
            Shell.IpNs(netns, "link", "set", "eth0", "up");
            Shell.IpNs(netns, "route", "add", GatewayIp, "dev", "eth0", "scope", "link");
            Shell.IpNs(netns, "route", "add", "default", "via", GatewayIp, "dev", "eth0");
            Shell.IpNs(netns, "neigh", "replace", GatewayIp, "lladdr", mac, "dev", "eth0", "nud", "permanent");
            Shell.IpNs(router, "route", "replace", $"{ip}/32", "dev", veth);
            Directory.CreateDirectory(BaseCgroup(pod));
        }
        baseClient = new Place("baseline client", Naming.NetnsPath(BaseNetns("client")), BaseCgroup("client"));
        var dir = Path.Combine(work, "base");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "nginx.conf"), NginxConf(dir));
        var serverNetns = Naming.NetnsPath(BaseNetns("server"));
        var log = Path.Combine(dir, "server.log");
        LabRunner.StartDetached(serverNetns, BaseCgroup("server"), log, [.. Pin, "nginx", "-p", $"{dir}/", "-e", $"{dir}/error.log", "-c", $"{dir}/nginx.conf", "-g", "daemon off;"]);
        LabRunner.StartDetached(serverNetns, BaseCgroup("server"), log, [.. Pin, "iperf3", "-s", "-4", "-p", IperfPort.ToString(CultureInfo.InvariantCulture)]);
    }

    static void Sysctl(string netns, string key, string value) =>
        Shell.Run("nsenter", [$"--net={Naming.NetnsPath(netns)}", "--", "sysctl", "-q", "-w", $"{key}={value}"]);

    void DetectAcceleration()
    {
        if (!o.Scenarios.Any(s => s.Kind == Kind.Accel)) return;
        // Same-node socket acceleration (sock_ops + sk_msg) is a node setting; until the CLI has it, scenario 3 is
        // skipped and the report says so, instead of silently measuring plain Trellis twice.
        var help = Processes.Run(o.Trellis, ["config", "--help"], TimeSpan.FromMinutes(2), ct);
        if (!(help.Out + help.Err).Contains("--socket-acceleration", StringComparison.Ordinal))
            accelUnavailable = "this trellis has no 'config --socket-acceleration' option yet";
        else if (Processes.Run(o.Trellis, ["config", "--socket-acceleration", "off", "--node", Node], TimeSpan.FromMinutes(1), ct) is { Code: not 0 } r)
            accelUnavailable = $"'trellis config --socket-acceleration off' failed (exit {r.Code}): {(r.Err + r.Out).Trim()}";
        if (accelUnavailable is not null)
            Console.WriteLine($"scenario 3 (Trellis + socket acceleration): not available: {accelUnavailable}; skipped");
    }

    /// <summary>Every path answers before anything is measured (nginx and iperf3 take a moment to start), and each
    /// goes where it claims: the ClusterIP through the socket load balancer, port 8081 through the L7 proxy.</summary>
    async Task ProbeAsync()
    {
        bool tcp = o.Cases.Any(c => c.Tcp);
        foreach (var s in Scenarios)
        {
            Enter(s);
            try
            {
                var t = TargetOf(s);
                var translated0 = (await agent!.StatusAsync(ct)).ServiceConnectsTranslated;
                var http0 = s.Kind == Kind.L7 ? ProxiedRequests() : 0;
                await WaitForHttpAsync(t.From, t.Url);
                if (tcp && s.Supports(Case.All.Single(c => c.Tcp)))
                    await WaitForIperfAsync(t.From, t.TcpHost, t.TcpPort);
                if (s.Kind is Kind.L4 or Kind.Accel && (await agent.StatusAsync(ct)).ServiceConnectsTranslated <= translated0)
                    throw new BenchException($"{t.Url} answered but the agent counted no translated connect: the request did not go through the socket load balancer");
                if (s.Kind == Kind.L7)
                {
                    // The proxy sends its records asynchronously: give the first one a moment to arrive.
                    for (var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(5); ProxiedRequests() <= http0 && DateTime.UtcNow < deadline;)
                        await Task.Delay(100, ct);
                    if (ProxiedRequests() <= http0)
                        throw new BenchException($"{t.Url} answered but the agent counted no HTTP request from the L7 proxy: the request did not go through the proxy");
                    proxyPid = ProxyPid() ?? throw new BenchException($"no running L7 proxy in {ProxyPidFile()}; see /run/trellis/{Node}/proxy.log");
                    RecordProcessMemory("after start and one request", proxy: true);
                }
                Say($"{s.Name}: {t.Url}" + (tcp && s.Supports(Case.All.Single(c => c.Tcp)) ? $", iperf3 to {t.TcpHost}:{t.TcpPort}" : "") + " answers");
            }
            finally
            {
                Leave(s);
            }
        }
    }

    async Task WaitForHttpAsync(Place from, string url)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        ProcResult last;
        do
        {
            last = In(from, TimeSpan.FromSeconds(10), "curl", "-sS", "--max-time", "2", url);
            if (last.Code == 0 && last.Out == "ok\n") return;
            await Task.Delay(200, ct);
        } while (DateTime.UtcNow < deadline);
        throw new BenchException($"{url} does not answer from the {from.Name} (curl exit {last.Code}: {last.Out}{last.Err})");
    }

    async Task WaitForIperfAsync(Place from, string host, int port)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        ProcResult last;
        do
        {
            last = In(from, TimeSpan.FromSeconds(20), "iperf3", "-c", host, "-p", port.ToString(CultureInfo.InvariantCulture), "-n", "64K", "-J", "--connect-timeout", "2000");
            if (last.Code == 0) return;
            await Task.Delay(300, ct);
        } while (DateTime.UtcNow < deadline);
        throw new BenchException($"iperf3 to {host}:{port} from the {from.Name} fails (exit {last.Code}): {last.Out}{last.Err}");
    }

    Target TargetOf(Scenario s) => s.Kind switch
    {
        Kind.Baseline => new(baseClient, $"http://{BaseServerIp}:{HttpPort}/", BaseServerIp, IperfPort),
        // Trellis L3/L4 goes through the ClusterIP, so the socket load balancer is on the path (once per connect).
        Kind.L4 or Kind.Accel => new(labClient, $"http://{ClusterIp}/", ClusterIp, IperfPort),
        Kind.L7 => new(labClient, $"http://{serverIp}:{L7Port}/", serverIp, 0),
        Kind.Sidecars => new(labClient, $"http://{serverIp}:{SidecarHttpPort}/", serverIp, SidecarIperfPort),
        Kind.NodeProxy => new(labClient, $"http://{routerIp}:{NodeHttpPort}/", routerIp, NodeTcpPort),
        _ => throw new ArgumentOutOfRangeException(nameof(s)),
    };

    /// <summary>Puts the node in the scenario's state: socket acceleration on, or the sidecars with their interception.</summary>
    void Enter(Scenario s)
    {
        if (s.Kind == Kind.Accel && !accelOn)
        {
            RunTrellis("config", "--socket-acceleration", "on");
            accelOn = true;
            // Not a failure if absent (the design may attach elsewhere), but the report says what was seen.
            var tree = Processes.Run("bpftool", ["cgroup", "tree", Cgroups.NodeDir(Node)], TimeSpan.FromSeconds(20), ct);
            sockOpsSeen = tree.Out.Contains("sock_ops", StringComparison.Ordinal) ? "a sock_ops program is attached under the node's cgroup"
                : "no sock_ops program seen under the node's cgroup (bpftool cgroup tree)";
        }
        if (s.Kind == Kind.Sidecars)
            StartSidecars();
    }

    /// <summary>Back to plain Trellis L3/L4, so no other scenario pays for what this one switched on.</summary>
    void Leave(Scenario s)
    {
        if (s.Kind == Kind.Accel && accelOn)
        {
            RunTrellis("config", "--socket-acceleration", "off");
            accelOn = false;
        }
        if (s.Kind == Kind.Sidecars)
            StopSidecars();
    }

    // --- the proxies ---

    string Cfg(string name) => Path.Combine(work, $"haproxy-{name}.cfg");
    string PidFile(string name) => Path.Combine(work, $"haproxy-{name}.pid");
    string StatsSocket(string name) => Path.Combine(work, $"haproxy-{name}.sock");

    // HAProxy 2.6 with its defaults (keep-alive both sides, upstream connection reuse, one thread per CPU), unpinned.
    // The HTTP frontends that stand for a mesh proxy check the same rule as the L7 scenario's policy (GET, path /.*),
    // so every HTTP path that parses requests also evaluates a rule.
    void WriteProxyConfigs()
    {
        const string rule = "    http-request deny unless { method GET } { path_reg ^/.*$ }\n";
        // Client sidecar: what the client pod sends to the server's ports 8083/5203 is redirected here (nftables,
        // below); "server 0.0.0.0:0" connects to the original destination (HAProxy reads SO_ORIGINAL_DST), as
        // Envoy's outbound listener with an ORIGINAL_DST cluster does.
        File.WriteAllText(Cfg("client"), HaproxyConf("client", "client sidecar",
            [("outbound_http", "http", $"127.0.0.1:{OutboundHttp}", "0.0.0.0:0", rule), ("outbound_tcp", "tcp", $"127.0.0.1:{OutboundTcp}", "0.0.0.0:0", "")]));
        // Server sidecar: inbound connections to 8083/5203 are redirected here; it hands them to the application
        // on localhost (nginx on 8080, iperf3 on 5201).
        File.WriteAllText(Cfg("server"), HaproxyConf("server", "server sidecar",
            [("inbound_http", "http", $":{InboundHttp}", $"127.0.0.1:{HttpPort}", ""), ("inbound_tcp", "tcp", $":{InboundTcp}", $"127.0.0.1:{IperfPort}", "")]));
        // Node-local proxy: the client addresses it explicitly (no interception), the cheapest userspace hop there is.
        File.WriteAllText(Cfg("node"), HaproxyConf("node", "node-local proxy",
            [("node_http", "http", $"{routerIp}:{NodeHttpPort}", $"{serverIp}:{HttpPort}", rule), ("node_tcp", "tcp", $"{routerIp}:{NodeTcpPort}", $"{serverIp}:{IperfPort}", "")]));
        File.WriteAllText(Path.Combine(work, "nft-client.conf"), $$"""
            # The client sidecar's interception (Istio's OUTPUT redirect, in nftables): the server's sidecar ports go
            # to the local HAProxy, except HAProxy's own connections (uid {{haproxyUid}}).
            table ip {{NftTable}}
            delete table ip {{NftTable}}
            table ip {{NftTable}} {
                chain output {
                    type nat hook output priority -100; policy accept;
                    ip daddr {{serverIp}} tcp dport {{SidecarHttpPort}} meta skuid != {{haproxyUid}} redirect to :{{OutboundHttp}}
                    ip daddr {{serverIp}} tcp dport {{SidecarIperfPort}} meta skuid != {{haproxyUid}} redirect to :{{OutboundTcp}}
                }
            }

            """);
        File.WriteAllText(Path.Combine(work, "nft-server.conf"), $$"""
            # The server sidecar's interception (Istio's PREROUTING redirect): inbound connections to its ports go to
            # the local HAProxy.
            table ip {{NftTable}}
            delete table ip {{NftTable}}
            table ip {{NftTable}} {
                chain prerouting {
                    type nat hook prerouting priority -100; policy accept;
                    tcp dport {{SidecarHttpPort}} redirect to :{{InboundHttp}}
                    tcp dport {{SidecarIperfPort}} redirect to :{{InboundTcp}}
                }
            }

            """);
    }

    string HaproxyConf(string name, string role, (string Name, string Mode, string Bind, string Server, string Rule)[] frontends) => $"""
        # Written by bench/Trellis.Bench.Mesh: the {role}.
        global
            user haproxy
            group haproxy
            maxconn 8192
            stats socket {StatsSocket(name)} mode 600 level admin
        defaults
            timeout connect 5s
            timeout client 60s
            timeout server 60s

        """ + string.Concat(frontends.Select(f => $"""
        frontend {f.Name}
            mode {f.Mode}
            bind {f.Bind}
        {f.Rule}    default_backend {f.Name}_upstream
        backend {f.Name}_upstream
            mode {f.Mode}
            server upstream {f.Server}

        """));

    void StartHaproxy(string name, Place place)
    {
        File.Delete(PidFile(name));
        File.Delete(StatsSocket(name));
        var log = Path.Combine(work, $"haproxy-{name}.log");
        // Daemon mode with stdio on a log file: a daemon holding our pipes would keep the call from returning.
        var r = In(place, TimeSpan.FromSeconds(30), "/bin/sh", "-c", "exec haproxy -D -f \"$0\" -p \"$1\" </dev/null >>\"$2\" 2>&1", Cfg(name), PidFile(name), log);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(5);
        while ((ProcFs.LivePid(PidFile(name)) is null || !File.Exists(StatsSocket(name))) && DateTime.UtcNow < deadline)
            Thread.Sleep(20);
        if (r.Code != 0 || ProcFs.LivePid(PidFile(name)) is null || !File.Exists(StatsSocket(name)))
            throw new BenchException($"haproxy ({name}) did not start in the {place.Name} (exit {r.Code}): {(File.Exists(log) ? File.ReadAllText(log) : "")}{r.Err}");
    }

    void StopHaproxy(string name)
    {
        if (ProcFs.LivePid(PidFile(name)) is not { } pid) return;
        try
        {
            using var p = Process.GetProcessById(pid);
            p.Kill(); // SIGKILL: its state is of no interest, and a soft stop would wait for idle connections
            p.WaitForExit(5000);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException) { }
        File.Delete(PidFile(name));
    }

    void StartNodeHaproxy()
    {
        if (!o.Scenarios.Any(s => s.Kind == Kind.NodeProxy)) return;
        StartHaproxy("node", nodeHost);
        Say($"node-local HAProxy (pid {ProcFs.LivePid(PidFile("node"))}) on {routerIp}:{NodeHttpPort} (HTTP) and :{NodeTcpPort} (TCP) -> {serverIp}");
    }

    // The sidecars and their nftables interception exist only during the sidecar scenario's runs: a NAT rule makes the
    // kernel track every connection of the pod (conntrack), which the other scenarios, run in the same pods, must not
    // pay; and fresh processes per run mean no upstream connection pooled in one run (and cut when the rules went
    // away) is reused in the next. Starting them is outside the measured time.
    void StartSidecars()
    {
        sidecarsUp = true;
        StartHaproxy("server", labServer);
        StartHaproxy("client", labClient);
        foreach (var (place, file) in new[] { (labServer, "nft-server.conf"), (labClient, "nft-client.conf") })
            if (In(place, TimeSpan.FromSeconds(20), "nft", "-f", Path.Combine(work, file)) is { Code: not 0 } r)
                throw new BenchException($"nft -f {file} failed in the {place.Name}: {r.Err}{r.Out}");
    }

    void StopSidecars()
    {
        if (!sidecarsUp) return;
        // The proxies go first, while the NAT rules (and so conntrack) still see their connections close. The other
        // order leaves their conntrack entries ESTABLISHED (for days) once the rules are gone and conntrack stops
        // looking; a later sidecar run whose connection reuses such a tuple then skips the NAT lookup and bypasses
        // the client sidecar (seen: 67 of 11,884 requests in a close16 run).
        StopHaproxy("client");
        StopHaproxy("server");
        Thread.Sleep(100); // the FIN/RST exchanges of the killed processes' sockets
        foreach (var place in new[] { labClient, labServer })
        {
            In(place, TimeSpan.FromSeconds(20), "nft", "delete", "table", "ip", NftTable);
            // Proof that the pod is back to no interception (and no NAT, so no conntrack) for the next scenario.
            var left = In(place, TimeSpan.FromSeconds(20), "nft", "list", "tables");
            if (left.Code != 0 || left.Out.Trim().Length > 0)
                throw new BenchException($"nftables tables left in the {place.Name} after the sidecar run: {left.Out}{left.Err}");
            // Only the intercepted ports matter: conntrack also picks up other scenarios' connections mid-stream (the
            // L7 proxy's pooled upstream connections, say), which no sidecar rule touches.
            var established = In(place, TimeSpan.FromSeconds(20), "cat", "/proc/net/nf_conntrack").Out.Split('\n')
                .Where(l => l.Contains(" ESTABLISHED ", StringComparison.Ordinal) && OriginalDport(l) is SidecarHttpPort or SidecarIperfPort).ToList();
            if (established.Count > 0)
                throw new BenchException($"{established.Count} conntrack entries left ESTABLISHED in the {place.Name} after the sidecar run " +
                    $"(a later sidecar run reusing their tuples would bypass the interception): {string.Join(Environment.NewLine, established.Take(5))}");
        }
        sidecarsUp = false;
    }

    /// <summary>The destination port of a /proc/net/nf_conntrack line's original direction (its first dport=).</summary>
    static int? OriginalDport(string line)
    {
        var i = line.IndexOf(" dport=", StringComparison.Ordinal);
        if (i < 0) return null;
        var v = line[(i + 7)..].Split(' ', 2)[0];
        return int.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out var port) ? port : null;
    }

    // --- one measured run ---

    async Task<Run> MeasureAsync(int round, Case c, Scenario s, int seconds)
    {
        Enter(s);
        try
        {
            var t = TargetOf(s);
            var lab = s.Kind != Kind.Baseline;
            var s0 = await agent!.StatusAsync(ct);
            var http0 = lab ? SettledProxiedRequests(s.Kind == Kind.L7) : 0;
            var node0 = NodeHaproxyStats();
            var sc0 = s.Kind == Kind.Sidecars ? SidecarStats() : null;
            var cpu0 = Ticks(s);
            var wall = Stopwatch.StartNew();
            Run run;
            if (c.Tcp)
            {
                var r = In(t.From, TimeSpan.FromSeconds(seconds + 60), [.. Pin, "iperf3", "-c", t.TcpHost, "-p", t.TcpPort.ToString(CultureInfo.InvariantCulture),
                    "-t", seconds.ToString(CultureInfo.InvariantCulture), "-J", "--connect-timeout", "5000"]);
                if (r.Code != 0)
                    throw new BenchException($"iperf3 failed ({c.Name}, {s.Name}, exit {r.Code}): {r.Out}{r.Err}");
                var (bps, bytes) = ToolOutput.ParseIperf(r.Out);
                var cpu1 = Ticks(s);
                run = new Run(round, c, s, wall.Elapsed.TotalSeconds, Delta(cpu0, cpu1), BitsPerSecond: bps, Bytes: bytes);
            }
            else
            {
                var args = new List<string>(Pin) { "wrk", "-t", c.Threads.ToString(CultureInfo.InvariantCulture), "-c", c.Connections.ToString(CultureInfo.InvariantCulture),
                    "-d", $"{seconds}s", "--timeout", "5s", "--latency" };
                if (c.CloseEach) args.AddRange(["-H", "Connection: close"]);
                args.Add(t.Url);
                var r = In(t.From, TimeSpan.FromSeconds(seconds + 60), [.. args]);
                if (r.Code != 0)
                    throw new BenchException($"wrk failed ({c.Name}, {s.Name}, exit {r.Code}): {r.Err}{r.Out}");
                WrkResult w;
                try { w = WrkOutput.Parse(r.Out); }
                catch (WrkException e) { throw new BenchException($"{c.Name}, {s.Name}: {e.Message}; wrk printed:{Environment.NewLine}{r.Out}{r.Err}"); }
                var cpu1 = Ticks(s);
                run = new Run(round, c, s, wall.Elapsed.TotalSeconds, Delta(cpu0, cpu1), w.RequestsPerSec, w.Requests, w.P50Us, w.P99Us);
            }
            if (s.Kind == Kind.Sidecars)
                foreach (var (name, pod) in new[] { ("client", "client"), ("server", "server") })
                    RecordMemory($"HAProxy sidecar, {pod} pod", "end of its last run", ProcFs.LivePid(PidFile(name)), replace: true);

            // Proof that each run took the path it claims, else its figures describe something else.
            var s1 = await agent.StatusAsync(ct);
            run = run with
            {
                TcPackets = (long)(s1.PacketsForwarded - s0.PacketsForwarded),
                Programs = o.BpfStats ? s1.Programs.Where(p => s0.Programs.Any(q => q.Name == p.Name)).ToDictionary(p => p.Name,
                    p => (p.RunTimeNs - s0.Programs.First(q => q.Name == p.Name).RunTimeNs, p.RunCount - s0.Programs.First(q => q.Name == p.Name).RunCount)) : null,
            };
            // Spliced sockets skip the TC programs: only handshakes and closes (a few packets per connection) may cross
            // them. Plain Trellis forwards several packets per request and ~16+ per MiB, so this tells the two apart.
            if (s.Kind == Kind.Accel && !c.CloseEach)
            {
                long limit = 20L * c.Connections + (c.Tcp ? run.Bytes / 1048576 : run.Requests / 100);
                if (run.TcPackets > limit)
                    throw new BenchException($"socket acceleration is on, but {run.TcPackets:N0} packets crossed the TC programs during {c.Name} " +
                        $"({(c.Tcp ? $"{run.Bytes / 1048576:N0} MiB" : $"{run.Requests:N0} requests")}; at most {limit:N0} expected): the connections were not spliced");
            }
            var translated = (long)(s1.ServiceConnectsTranslated - s0.ServiceConnectsTranslated);
            long minConnects = c.Tcp ? 2 : c.CloseEach ? run.Requests : c.Connections; // iperf3: control + data connection
            if (s.Kind is Kind.L4 or Kind.Accel && translated < minConnects)
                throw new BenchException($"only {translated} connects were translated during a ClusterIP run ({c.Name}, {s.Name}): the client bypassed the socket load balancer");
            if (s.Kind is not (Kind.L4 or Kind.Accel) && translated != 0)
                throw new BenchException($"{translated} connects were translated during a {s.Name} run ({c.Name}): something else used the service");
            if (lab)
            {
                var seen = SettledProxiedRequests(s.Kind == Kind.L7) - http0;
                if (s.Kind == Kind.L7 && seen < run.Requests)
                    throw new BenchException($"wrk completed {run.Requests} requests through the L7 proxy ({c.Name}) but the agent counted {seen} HTTP records: requests bypassed the proxy or records were lost");
                if (s.Kind != Kind.L7 && seen != 0)
                    throw new BenchException($"the agent counted {seen} HTTP records from the L7 proxy during a {s.Name} run ({c.Name}): that path must not touch it");
                if (s.Kind == Kind.L7 && ProxyPid() != proxyPid)
                    throw new BenchException($"the L7 proxy changed during a run ({c.Name}): pid {proxyPid} before, {ProxyPid()?.ToString(CultureInfo.InvariantCulture) ?? "none"} after; see /run/trellis/{Node}/proxy.log");
            }
            long expected = c.Tcp ? 2 : run.Requests;
            if (node0 is not null)
            {
                var (sessions, requests) = Diff(node0, NodeHaproxyStats()!, c.Tcp ? "node_tcp" : "node_http");
                var through = c.Tcp ? sessions : requests;
                if (s.Kind == Kind.NodeProxy && through < expected)
                    throw new BenchException($"the node HAProxy counted {through} {(c.Tcp ? "sessions" : "requests")} for {expected} expected ({c.Name}): the client bypassed it");
                if (s.Kind != Kind.NodeProxy && sessions != 0)
                    throw new BenchException($"the node HAProxy saw {sessions} sessions during a {s.Name} run ({c.Name})");
            }
            if (sc0 is not null)
            {
                var sc1 = SidecarStats();
                var counted = new[] { ("client", c.Tcp ? "outbound_tcp" : "outbound_http"), ("server", c.Tcp ? "inbound_tcp" : "inbound_http") }
                    .Select(x => (Side: x.Item1, Frontend: x.Item2, Count: Diff(sc0[x.Item1], sc1[x.Item1], x.Item2))).ToList();
                if (counted.FirstOrDefault(x => (c.Tcp ? x.Count.Sessions : x.Count.Requests) < expected) is { Side: not null } short_)
                    throw new BenchException($"the {short_.Side} sidecar counted {(c.Tcp ? short_.Count.Sessions : short_.Count.Requests)} {(c.Tcp ? "sessions" : "requests")} on {short_.Frontend} " +
                        $"for {expected} expected ({c.Name}): the interception did not catch all the traffic (sessions, requests: " +
                        string.Join("; ", counted.Select(x => $"{x.Side} {x.Count.Sessions}, {x.Count.Requests}")) + ")");
            }
            return run;
        }
        finally
        {
            Leave(s);
        }
    }

    static (long Sessions, long Requests) Diff(Dictionary<string, (long Sessions, long Requests)> a, Dictionary<string, (long Sessions, long Requests)> b, string frontend)
    {
        var x = a.GetValueOrDefault(frontend);
        var y = b.GetValueOrDefault(frontend);
        return (y.Sessions - x.Sessions, y.Requests - x.Requests);
    }

    Dictionary<string, (long, long)>? NodeHaproxyStats() =>
        Scenarios.Any(s => s.Kind == Kind.NodeProxy) ? ToolOutput.HaproxyFrontends(StatsSocket("node")) : null;

    Dictionary<string, Dictionary<string, (long Sessions, long Requests)>> SidecarStats() => new()
    {
        ["client"] = ToolOutput.HaproxyFrontends(StatsSocket("client")),
        ["server"] = ToolOutput.HaproxyFrontends(StatsSocket("server")),
    };

    /// <summary>CPU of the processes on the scenario's path. The agent is counted in every scenario, the baseline
    /// included (there it is idle background work, the floor the others are read against).</summary>
    CpuUse Ticks(Scenario s) => new(
        ProcFs.CpuTicks(AgentPid()),
        s.Kind switch { Kind.L7 => ProcFs.CpuTicks(ProxyPid()), Kind.NodeProxy => ProcFs.CpuTicks(ProcFs.LivePid(PidFile("node"))), _ => 0 },
        s.Kind == Kind.Sidecars ? ProcFs.CpuTicks(ProcFs.LivePid(PidFile("client"))) + ProcFs.CpuTicks(ProcFs.LivePid(PidFile("server"))) : 0);

    static CpuUse Delta(CpuUse a, CpuUse b) => new(b.Agent - a.Agent, b.NodeProxy - a.NodeProxy, b.Sidecars - a.Sidecars);

    // --- memory ---

    void RecordMemory(string process, string when, int? pid, bool replace = false)
    {
        var (rss, hwm, pss) = ProcFs.Memory(pid);
        if (replace) Memory.RemoveAll(m => m.Process == process && m.When == when);
        Memory.Add(new MemorySample(process, when, rss, hwm, pss));
    }

    void RecordProcessMemory(string when, bool proxy = false)
    {
        if (proxy)
        {
            RecordMemory("trellis-proxy (one per node)", when, ProxyPid());
            return;
        }
        RecordMemory("trellis agent (one per node)", when, AgentPid());
        if (Scenarios.Any(s => s.Kind == Kind.L7))
            RecordMemory("trellis-proxy (one per node)", when, ProxyPid());
        if (Scenarios.Any(s => s.Kind == Kind.NodeProxy))
            RecordMemory("node-local HAProxy (one per node)", when, ProcFs.LivePid(PidFile("node")));
    }

    /// <summary>Adds N pods (namespaces running `sleep infinity`, labelled like the client, so the client's policy,
    /// L7 rules included, selects each: one more replica of an existing workload) and divides what the agent's RSS
    /// and the node's BPF maps grew by N. The pods' own cost (netns, veth, the sleep process) is the same with any
    /// CNI or mesh and is not counted.</summary>
    async Task<PodMemory> MeasurePodMemoryAsync(int n)
    {
        var agentPid = AgentPid();
        var (mapsBefore, mapCountBefore) = NodeMapBytes();
        var agentBefore = SteadyRss(agentPid);
        var proxyBefore = ProcFs.Memory(ProxyPid()).RssKb;
        var file = Path.Combine(work, "pods.yaml");
        File.WriteAllText(file, string.Join("---\n", Enumerable.Range(1, n).Select(i => $$$"""
            apiVersion: v1
            kind: Pod
            metadata: {name: extra-{{{i:00}}}, namespace: {{{Ns}}}, labels: {app: client}}
            spec:
              containers: [{name: c, command: ["sleep", "infinity"]}]

            """).Prepend($"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {Ns}}}\n")));
        var before = (await agent!.EndpointsAsync(ct)).Count;
        Say($"adding {n} pods for the marginal memory per pod");
        RunTrellis("lab", "up", "-f", file);
        var after = (await agent.EndpointsAsync(ct)).Count;
        if (after - before != n)
            throw new BenchException($"the agent lists {after - before} new endpoints after adding {n} pods");
        await Task.Delay(TimeSpan.FromSeconds(2), ct); // policy maps and the proxy's rule file are written by then
        var (mapsAfter, mapCountAfter) = NodeMapBytes();
        var agentAfter = SteadyRss(agentPid);
        var proxyAfter = ProcFs.Memory(ProxyPid()).RssKb;
        if (AgentPid() != agentPid)
            throw new BenchException("the agent restarted while pods were added");
        return new PodMemory(n, agentBefore, agentAfter, mapsBefore, mapsAfter, mapCountBefore, mapCountAfter, proxyBefore, proxyAfter);
    }

    /// <summary>Median of a few RSS samples: a .NET process's RSS moves by itself (GC, thread stacks).</summary>
    static long SteadyRss(int? pid)
    {
        var samples = new List<long>();
        for (int i = 0; i < 5; i++)
        {
            samples.Add(ProcFs.Memory(pid).RssKb);
            Thread.Sleep(200);
        }
        samples.Sort();
        return samples[2];
    }

    /// <summary>Kernel memory of the node's BPF maps: every map pinned under the node's pin root, plus the inner maps
    /// their map-of-maps point at (one policy map per endpoint, one Maglev table per frontend). bytes_memlock is the
    /// kernel's own accounting of the map's memory (map_mem_usage since Linux 6.4, so it grows with entries of maps
    /// that allocate on demand).</summary>
    (long Bytes, int Maps) NodeMapBytes()
    {
        var ids = new HashSet<uint>();
        foreach (var pinned in Directory.EnumerateFiles(AgentPaths.PinRoot(Node)))
        {
            var show = Processes.Run("bpftool", ["-j", "map", "show", "pinned", pinned], TimeSpan.FromSeconds(20), ct);
            if (show.Code != 0) continue; // not a map
            ids.Add(JsonDocument.Parse(show.Out).RootElement.GetProperty("id").GetUInt32());
            var name = Path.GetFileName(pinned);
            if (name is not ("trellis_policy" or "trellis_lb4_maglev")) continue;
            var dump = Processes.Check("bpftool", ["-j", "map", "dump", "pinned", pinned], ct);
            foreach (var entry in JsonDocument.Parse(dump).RootElement.EnumerateArray())
            {
                var v = entry.GetProperty("value").EnumerateArray().Select(b => Convert.ToByte(b.GetString(), 16)).ToArray();
                if (v.Length == 4) ids.Add(BitConverter.ToUInt32(v));
            }
        }
        long bytes = 0;
        int maps = 0;
        foreach (var m in JsonDocument.Parse(Processes.Check("bpftool", ["-j", "map", "show"], ct)).RootElement.EnumerateArray())
            if (ids.Contains(m.GetProperty("id").GetUInt32()))
            {
                bytes += m.GetProperty("bytes_memlock").GetInt64();
                maps++;
            }
        return (bytes, maps);
    }

    // --- the lab's agent and proxy ---

    int? AgentPid() => ProcFs.LivePid(BenchLab.AgentPidFile(Node));
    string ProxyPidFile() => BenchLab.ProxyPidFile(Node);
    int? ProxyPid() => ProcFs.LivePid(ProxyPidFile());

    /// <summary>HTTP requests to the server pod the agent has seen from the node's proxy (one L7 record each, read
    /// from its Prometheus endpoint in the node's network namespace). With <paramref name="settle"/>, waits until the
    /// count stops moving: the proxy sends its records asynchronously, so the last ones arrive after wrk exits.</summary>
    long SettledProxiedRequests(bool settle) =>
        settle ? BenchLab.SettledProxiedRequests(Node, $"{Ns}/server", ct) : ProxiedRequests();

    long ProxiedRequests() => BenchLab.ProxiedRequests(Node, $"{Ns}/server", ct);

    // --- processes ---

    /// <summary>Runs a command in a place: its network namespace, after joining its cgroup (as 'trellis lab exec'
    /// does, without starting the CLI for every run).</summary>
    ProcResult In(Place p, TimeSpan timeout, params string[] command) =>
        Processes.Run("nsenter", [$"--net={p.Netns}", "--", "/bin/sh", "-c", "[ -z \"$0\" ] || echo $$ > \"$0/cgroup.procs\" || exit 126; exec \"$@\"", p.Cgroup ?? "", .. command], timeout, ct);

    void RunTrellis(params string[] a) => BenchLab.RunTrellis(o.Trellis, [.. a, "--node", Node], TimeSpan.FromMinutes(5), ct);

    // --- cleanup ---

    /// <summary>Removes everything the bench made, whatever state it got to. Never cancelled: a second Ctrl-C must
    /// not leave namespaces or processes behind.</summary>
    public void Cleanup()
    {
        void Try(string what, Action a)
        {
            try { a(); }
            catch (Exception e) { Console.Error.WriteLine($"warning: cleanup: {what}: {e.Message}"); }
        }
        if (sidecarsUp)
        {
            foreach (var place in new[] { labClient, labServer })
                Try("nftables rules", () => Processes.Run("nsenter", [$"--net={place.Netns}", "--", "nft", "delete", "table", "ip", NftTable], TimeSpan.FromSeconds(20), CancellationToken.None));
            Try("sidecars", () => { StopHaproxy("client"); StopHaproxy("server"); });
        }
        Try("node HAProxy", () => StopHaproxy("node"));
        if (bpfStatsBefore is not null)
            Try("kernel.bpf_stats_enabled", () => File.WriteAllText("/proc/sys/kernel/bpf_stats_enabled", bpfStatsBefore));
        agent?.Dispose();
        if (labUp)
        {
            Say($"taking the lab down (node {Node})");
            Try("lab down", LabDown);
        }
        if (baselineUp) Try("baseline", BaselineDown);
        Try("work directory", () => { if (Directory.Exists(work)) Directory.Delete(work, recursive: true); });
    }

    void LabDown() => BenchLab.Down(o.Trellis, Node, TimeSpan.FromMinutes(2));

    void BaselineDown()
    {
        var cg = Path.Combine(Cgroups.Root(), "trellis-bench", Node);
        Cgroups.KillAndRemove(cg); // nginx and iperf3 of the baseline server, and anything else left in there
        var parent = Path.GetDirectoryName(cg)!;
        if (Directory.Exists(parent) && !Directory.EnumerateDirectories(parent).Any())
            Directory.Delete(parent);
        foreach (var name in new[] { "client", "server", "router" })
            if (File.Exists(Naming.NetnsPath(BaseNetns(name))))
                Shell.Run("ip", ["netns", "del", BaseNetns(name)], check: false);
        baselineUp = false;
    }

    // --- files ---

    static string NginxConf(string dir) => Nginx.Conf(
        "# Written by bench/Trellis.Bench.Mesh: the smallest server that answers HTTP, no disk I/O per request; the\n" +
        "# same file (but for its directory) serves the lab's server pod and the baseline's.",
        dir, workers: 1, workerConnections: 8192, [HttpPort, L7Port]);

    string LabYaml(string dir)
    {
        string Command(params string[] c) => "[" + string.Join(", ", Pin.Concat(c).Select(a => JsonSerializer.Serialize(a))) + "]";
        return $$$"""
            # Written by bench/Trellis.Bench.Mesh.
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
                  command: {{{Command("nginx", "-p", $"{dir}/", "-e", $"{dir}/error.log", "-c", $"{dir}/nginx.conf", "-g", "daemon off;")}}}
                  ports: [{name: http, containerPort: {{{HttpPort}}}}]
                - name: iperf3
                  command: {{{Command("iperf3", "-s", "-4", "-p", IperfPort.ToString(CultureInfo.InvariantCulture))}}}
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
              ports:
                - {name: http, port: 80, targetPort: {{{HttpPort}}}}
                - {name: iperf, port: {{{IperfPort}}}, targetPort: {{{IperfPort}}}}
            ---
            # Both ends enforced, as in a default-deny namespace: the client's egress and the server's ingress allow
            # exactly the bench's ports at L4; port {{{L7Port}}} of the egress has an HTTP rule (every request goes through
            # the node's L7 proxy); the node (entity host) may be reached on the node HAProxy's ports and may reach
            # the server, as that proxy's upstream.
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata: {name: client-egress, namespace: {{{Ns}}}}
            spec:
              endpointSelector: {matchLabels: {app: client}}
              egress:
                - toEndpoints: [{matchLabels: {app: server}}]
                  toPorts:
                    - ports: [{port: "{{{HttpPort}}}", protocol: TCP}, {port: "{{{SidecarHttpPort}}}", protocol: TCP}, {port: "{{{IperfPort}}}", protocol: TCP}, {port: "{{{SidecarIperfPort}}}", protocol: TCP}]
                - toEndpoints: [{matchLabels: {app: server}}]
                  toPorts:
                    - ports: [{port: "{{{L7Port}}}", protocol: TCP}]
                      rules:
                        http: [{method: GET, path: "/.*"}]
                - toEntities: [host]
                  toPorts:
                    - ports: [{port: "{{{NodeHttpPort}}}", protocol: TCP}, {port: "{{{NodeTcpPort}}}", protocol: TCP}]
            ---
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata: {name: server-ingress, namespace: {{{Ns}}}}
            spec:
              endpointSelector: {matchLabels: {app: server}}
              ingress:
                - fromEndpoints: [{matchLabels: {app: client}}]
                  toPorts:
                    - ports: [{port: "{{{HttpPort}}}", protocol: TCP}, {port: "{{{L7Port}}}", protocol: TCP}, {port: "{{{SidecarHttpPort}}}", protocol: TCP}, {port: "{{{IperfPort}}}", protocol: TCP}, {port: "{{{SidecarIperfPort}}}", protocol: TCP}]
                - fromEntities: [host]
                  toPorts:
                    - ports: [{port: "{{{HttpPort}}}", protocol: TCP}, {port: "{{{IperfPort}}}", protocol: TCP}]

            """;
    }

    public string SockOpsSeen => sockOpsSeen;
    /// <summary>Scratch files (configs, logs, chart data); removed by <see cref="Cleanup"/>.</summary>
    public string WorkDir => work;
}
