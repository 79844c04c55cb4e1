using System.Diagnostics;
using Trellis.Api;
using Trellis.Policy;

namespace Trellis.Lab;

public sealed record LabOptions
{
    public string Node { get; init; } = AgentPaths.DefaultNode;
    public string PodCidr { get; init; } = "10.200.0.0/24";
    /// <summary>How to start `trellis agent` (the CLI passes itself).</summary>
    public required IReadOnlyList<string> TrellisCommand { get; init; }
    /// <summary>etcd client URLs (comma-separated) the node's agent joins a cluster with; null = single node.</summary>
    public string? Etcd { get; init; }
    public string Cluster { get; init; } = "default";
    public TimeSpan AgentStartTimeout { get; init; } = TimeSpan.FromSeconds(30);
    public Action<string>? Progress { get; init; }
}

public sealed record LabFile(string Path, IReadOnlyList<NamespaceResource> Namespaces, IReadOnlyList<PodResource> Pods,
    IReadOnlyList<PolicyResource> Policies, string Text, IReadOnlyList<ServiceResource>? Services = null,
    IReadOnlyList<EndpointSliceResource>? EndpointSlices = null);

/// <summary>Brings a one-node lab up and down: the node is a network namespace running the agent; each pod
/// is a network namespace with a veth into the node, an address from the agent's IPAM and its own cgroup.</summary>
public sealed class LabRunner(LabOptions options)
{
    private const string GatewayIp = "169.254.1.1"; // the pod's next hop: the host side of its veth (static ARP)

    private void Say(string s) => options.Progress?.Invoke(s);

    public static LabFile Load(string path)
    {
        string text;
        try { text = File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new LabException($"cannot read lab file {path}: {e.Message}");
        }
        var resources = ManifestParser.Parse(text, path);
        var namespaces = resources.OfType<NamespaceResource>().ToList();
        var pods = resources.OfType<PodResource>().ToList();
        var known = namespaces.Select(n => n.Name).Append("default").ToHashSet();
        foreach (var p in pods.Where(p => !known.Contains(p.Namespace!)))
            throw new ManifestException(path, p.Location.Line, p.Location.Column, "metadata.namespace",
                $"namespace '{p.Namespace}' is not defined in this file (add a Namespace resource)");
        var dup = pods.GroupBy(p => (p.Namespace, p.Name)).FirstOrDefault(g => g.Count() > 1);
        if (dup is not null)
        {
            var second = dup.Skip(1).First();
            throw new ManifestException(path, second.Location.Line, second.Location.Column, "metadata.name",
                $"pod {dup.Key.Namespace}/{dup.Key.Name} is defined twice");
        }
        foreach (var svc in resources.Where(r => r is ServiceResource or EndpointSliceResource).Where(s => !known.Contains(s.Namespace!)))
            throw new ManifestException(path, svc.Location.Line, svc.Location.Column, "metadata.namespace",
                $"namespace '{svc.Namespace}' is not defined in this file (add a Namespace resource)");
        return new LabFile(path, namespaces, pods, resources.OfType<PolicyResource>().ToList(), text, resources.OfType<ServiceResource>().ToList(),
            resources.OfType<EndpointSliceResource>().ToList());
    }

    public string SocketPath => AgentPaths.Socket(options.Node);

    public async Task UpAsync(LabFile lab, CancellationToken ct = default)
    {
        RequireRoot();
        EnsureNode();
        await EnsureAgentAsync(ct);
        using var agent = new AgentClient(SocketPath);
        foreach (var ns in lab.Namespaces)
            await agent.PutNamespaceAsync(new NamespaceRequest(ns.Name, ns.Labels.ToDictionary()), ct);
        var existing = (await agent.EndpointsAsync(ct)).Select(e => $"{e.Namespace}/{e.Pod}").ToHashSet();
        foreach (var pod in lab.Pods)
        {
            if (existing.Contains($"{pod.Namespace}/{pod.Name}") && File.Exists(Naming.NetnsPath(Naming.PodNetns(options.Node, pod.Namespace!, pod.Name))))
            {
                Say($"pod {pod.Namespace}/{pod.Name} already up");
                continue;
            }
            await CreatePodAsync(agent, pod, ct);
        }
        var serviceDocs = (lab.Services ?? []).Cast<Resource>().Concat(lab.EndpointSlices ?? []).ToList();
        if (serviceDocs.Count > 0)
        {
            // The agent takes only Services and EndpointSlices from this text, so send just their documents.
            var docs = serviceDocs.Select(s => ManifestText.DocumentAt(lab.Text, s.Location.Line));
            foreach (var s in await agent.ApplyServicesAsync(lab.Path, string.Join("\n---\n", docs), ct))
                Say($"service {s.Namespace}/{s.Name}: {s.ClusterIp}");
        }
        if (lab.Policies.Count > 0)
        {
            var r = await agent.ApplyPolicyAsync(lab.Path, string.Join("\n---\n", lab.Policies.Select(p => ManifestText.DocumentAt(lab.Text, p.Location.Line))), ct);
            Say($"applied {string.Join(", ", r.Applied)}");
        }
    }

    private static void RequireRoot()
    {
        if (!Trellis.Bpf.BpfFs.IsRoot)
            throw new LabException("the lab needs root (it creates network namespaces, veths and cgroups); run it as root");
    }

    // --- node ---

    private void EnsureNode()
    {
        var netns = Naming.NodeNetns(options.Node);
        if (File.Exists(Naming.NetnsPath(netns))) return;
        Say($"creating node {options.Node} (netns {netns})");
        Shell.Ip("netns", "add", netns);
        Shell.IpNs(netns, "link", "set", "lo", "up");
        Sysctl(netns, "net.ipv4.ip_forward", "1");
        Sysctl(netns, "net.ipv6.conf.all.disable_ipv6", "1");
        Sysctl(netns, "net.ipv6.conf.default.disable_ipv6", "1");
        var router = RouterIp(options.PodCidr);
        Shell.IpNs(netns, "addr", "add", $"{router}/32", "dev", "lo");
    }

    internal static string RouterIp(string cidr)
    {
        var ip = System.Net.IPAddress.Parse(cidr.Split('/')[0]).GetAddressBytes();
        ip[3] += 1;
        return new System.Net.IPAddress(ip).ToString();
    }

    private static void Sysctl(string netns, string key, string value) =>
        Shell.Run("nsenter", [$"--net={Naming.NetnsPath(netns)}", "--", "sysctl", "-q", "-w", $"{key}={value}"]);

    private async Task EnsureAgentAsync(CancellationToken ct)
    {
        if (await AgentAnswersAsync(ct)) return;
        Directory.CreateDirectory(AgentPaths.RunDir(options.Node));
        var log = Path.Combine(AgentPaths.RunDir(options.Node), "agent.log");
        Say($"starting agent for node {options.Node} (log {log})");
        var hostNetns = Naming.NetnsPath(Naming.HostNetnsRef(options.Node));
        if (options.Etcd is not null && !File.Exists(hostNetns))
            Shell.Run("ip", ["netns", "attach", Naming.HostNetnsRef(options.Node), Environment.ProcessId.ToString()]);
        StartDetached(Naming.NetnsPath(Naming.NodeNetns(options.Node)), cgroup: null, log,
            [.. options.TrellisCommand, "agent", "--node", options.Node, "--pod-cidr", options.PodCidr,
                // The node's namespace has no network to the host: the agent reaches etcd through the host's namespace.
                .. options.Etcd is null ? Array.Empty<string>() : ["--etcd", options.Etcd, "--cluster", options.Cluster, "--etcd-netns", hostNetns]]);
        var deadline = DateTime.UtcNow + options.AgentStartTimeout;
        while (DateTime.UtcNow < deadline)
        {
            await Task.Delay(200, ct);
            if (await AgentAnswersAsync(ct)) return;
        }
        var tail = File.Exists(log) ? string.Join(Environment.NewLine, File.ReadLines(log).TakeLast(15)) : "(no log)";
        throw new LabException($"the agent for node {options.Node} did not come up within {options.AgentStartTimeout.TotalSeconds:0}s; its log ({log}) ends with:{Environment.NewLine}{tail}");
    }

    private async Task<bool> AgentAnswersAsync(CancellationToken ct)
    {
        if (!File.Exists(SocketPath)) return false;
        using var c = new AgentClient(SocketPath, TimeSpan.FromSeconds(5));
        try
        {
            await c.StatusAsync(ct);
            return true;
        }
        catch (Exception e) when (e is AgentUnavailableException or HttpRequestException or TaskCanceledException)
        {
            return false;
        }
    }

    /// <summary>Starts a command in its own session (so it outlives us and the agent), inside a network
    /// namespace and optionally a cgroup, with output appended to <paramref name="log"/>.</summary>
    public static void StartDetached(string netnsPath, string? cgroup, string log, IReadOnlyList<string> command)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(log)!);
        // The shell joins the cgroup before exec, so the program's first instruction already runs inside it.
        const string script = """
            cg="$TRELLIS_CGROUP"; log="$TRELLIS_LOG"; unset TRELLIS_CGROUP TRELLIS_LOG
            if [ -n "$cg" ]; then echo $$ > "$cg/cgroup.procs" || exit 1; fi
            exec "$@" >>"$log" 2>&1 </dev/null
            """;
        var env = new Dictionary<string, string> { ["TRELLIS_CGROUP"] = cgroup ?? "", ["TRELLIS_LOG"] = log };
        Shell.Run("setsid", ["-f", "nsenter", $"--net={netnsPath}", "--", "/bin/sh", "-c", script, "sh", .. command], env: env);
    }

    // --- pods ---

    private async Task CreatePodAsync(AgentClient agent, PodResource pod, CancellationToken ct)
    {
        var node = Naming.NodeNetns(options.Node);
        var netns = Naming.PodNetns(options.Node, pod.Namespace!, pod.Name);
        var lxc = Naming.HostVeth(pod.Namespace!, pod.Name);
        var mac = Naming.HostMac(pod.Namespace!, pod.Name);
        var owner = $"{pod.Namespace}/{pod.Name}";
        Say($"creating pod {owner}");

        if (File.Exists(Naming.NetnsPath(netns))) Shell.Run("ip", ["netns", "del", netns], check: false);
        var ip = (await agent.AllocateIpAsync(owner, ct)).Ip;
        Shell.Ip("netns", "add", netns);
        Shell.IpNs(netns, "link", "set", "lo", "up");
        Sysctl(netns, "net.ipv6.conf.all.disable_ipv6", "1");
        Sysctl(netns, "net.ipv6.conf.default.disable_ipv6", "1");
        var podMac = Naming.PodMac(pod.Namespace!, pod.Name);
        Shell.IpNs(node, "link", "add", lxc, "address", mac, "type", "veth", "peer", "name", "eth0", "address", podMac, "netns", netns);
        Shell.IpNs(node, "link", "set", lxc, "up");
        Shell.IpNs(netns, "addr", "add", $"{ip}/32", "dev", "eth0");
        Shell.IpNs(netns, "link", "set", "eth0", "up");
        Shell.IpNs(netns, "route", "add", GatewayIp, "dev", "eth0", "scope", "link");
        Shell.IpNs(netns, "route", "add", "default", "via", GatewayIp, "dev", "eth0");
        Shell.IpNs(netns, "neigh", "replace", GatewayIp, "lladdr", mac, "dev", "eth0", "nud", "permanent");
        Shell.IpNs(node, "route", "replace", $"{ip}/32", "dev", lxc);

        var cg = Cgroups.PodDir(options.Node, pod.Namespace!, pod.Name);
        Directory.CreateDirectory(cg);

        var ports = pod.Containers.SelectMany(c => c.Ports)
            .Select(p => new ContainerPortDto(p.Name, p.Port, p.Protocol.ToString().ToUpperInvariant())).ToList();
        // The endpoint (and its policy) exists before the pod's program starts: no unpoliced first packet.
        await agent.PutEndpointAsync(new CreateEndpointRequest(pod.Namespace!, pod.Name, pod.Labels.ToDictionary(), ip, lxc,
            Naming.NetnsPath(netns), cg, ports, pod.ProxyVisibility, podMac, mac), ct);

        foreach (var c in pod.Containers.Where(c => c.Command.Count > 0))
            StartDetached(Naming.NetnsPath(netns), cg, Naming.PodLog(options.Node, pod.Namespace!, pod.Name), c.Command);
    }

    /// <summary>Runs a command inside a pod (its netns and cgroup), with our stdio. Returns its exit code.</summary>
    public static int Exec(string node, string ns, string pod, IReadOnlyList<string> command)
    {
        var netns = Naming.NetnsPath(Naming.PodNetns(node, ns, pod));
        if (!File.Exists(netns))
            throw new LabException($"pod '{pod}' not found in namespace '{ns}' on node {node} (see 'trellis endpoint list')");
        if (command.Count == 0)
            throw new LabException("no command given: trellis lab exec POD [-n NS] -- CMD [ARGS...]");
        var cg = Cgroups.PodDir(node, ns, pod);
        var psi = new ProcessStartInfo("nsenter") { UseShellExecute = false };
        foreach (var a in new[] { $"--net={netns}", "--", "/bin/sh", "-c", "[ -d \"$0\" ] && echo $$ > \"$0/cgroup.procs\"; exec \"$@\"", cg })
            psi.ArgumentList.Add(a);
        foreach (var a in command) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        p.WaitForExit();
        return p.ExitCode;
    }

    /// <summary>Runs a command in the node's network namespace (the host of the lab's pods), inside the node's
    /// cgroup. Returns its exit code.</summary>
    public static int ExecHost(string node, IReadOnlyList<string> command)
    {
        var netns = Naming.NetnsPath(Naming.NodeNetns(node));
        if (!File.Exists(netns))
            throw new LabException($"node {node} is not up (no network namespace {Naming.NodeNetns(node)}); run 'trellis lab up' first");
        if (command.Count == 0)
            throw new LabException("no command given: trellis lab host-exec -- CMD [ARGS...]");
        var cg = Cgroups.HostDir(node);
        Directory.CreateDirectory(cg);
        var psi = new ProcessStartInfo("nsenter") { UseShellExecute = false };
        foreach (var a in new[] { $"--net={netns}", "--", "/bin/sh", "-c", "echo $$ > \"$0/cgroup.procs\" && exec \"$@\"", cg })
            psi.ArgumentList.Add(a);
        foreach (var a in command) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        p.WaitForExit();
        return p.ExitCode;
    }

    /// <summary>Deletes one pod as Kubernetes does: it turns terminating at once (its service backends take no
    /// new connections, open ones continue), keeps running for the grace period, then is stopped and removed.</summary>
    public async Task DeletePodAsync(string ns, string pod, TimeSpan grace, CancellationToken ct = default)
    {
        RequireRoot();
        using var agent = new AgentClient(SocketPath);
        var netns = Naming.PodNetns(options.Node, ns, pod);
        var known = (await agent.EndpointsAsync(ct)).Any(e => e.Namespace == ns && e.Pod == pod);
        if (!known && !File.Exists(Naming.NetnsPath(netns)))
            throw new LabException($"pod '{pod}' not found in namespace '{ns}' on node {options.Node} (see 'trellis endpoint list')");
        if (known && grace > TimeSpan.Zero)
        {
            await agent.TerminateEndpointAsync(ns, pod, ct);
            Say($"pod {ns}/{pod} is terminating; stopping it in {grace.TotalSeconds:0.#}s");
            await Task.Delay(grace, ct);
        }
        Cgroups.KillAndRemove(Cgroups.PodDir(options.Node, ns, pod));
        if (known) await agent.DeleteEndpointAsync(ns, pod, ct);
        if (File.Exists(Naming.NetnsPath(netns))) Shell.Run("ip", ["netns", "del", netns], check: false);
        Say($"pod {ns}/{pod} deleted");
    }

    // --- down ---

    /// <summary>Removes everything the lab made for the node. Idempotent; works without a running agent.</summary>
    public static void Down(string node, Action<string>? progress = null)
    {
        RequireRoot();
        var cgRoot = Trellis.Bpf.BpfFs.FindCgroup2Mount();
        if (cgRoot is not null)
        {
            var dir = Path.Combine(cgRoot, "trellis", node);
            if (Directory.Exists(dir)) progress?.Invoke($"stopping pods of node {node}");
            Cgroups.KillAndRemove(dir);
        }
        StopAgent(node, progress);
        StopProxy(node, progress);
        var prefix = Naming.PodNetnsPrefix(node);
        if (Directory.Exists(Naming.NetnsDir))
            foreach (var f in Directory.EnumerateFiles(Naming.NetnsDir).Select(Path.GetFileName).Where(n => n!.StartsWith(prefix, StringComparison.Ordinal)))
                Shell.Run("ip", ["netns", "del", f!], check: false);
        if (File.Exists(Naming.NetnsPath(Naming.NodeNetns(node))))
        {
            progress?.Invoke($"removing node {node}");
            Shell.Run("ip", ["netns", "del", Naming.NodeNetns(node)], check: false);
        }
        foreach (var d in new[] { AgentPaths.PinRoot(node), AgentPaths.StateDir(node), AgentPaths.RunDir(node) })
            if (Directory.Exists(d)) Directory.Delete(d, recursive: true);
        // Shared parents go too once the last node is gone.
        RemoveIfEmpty(Path.GetDirectoryName(AgentPaths.PinRoot(node))!);
        if (cgRoot is not null) RemoveIfEmpty(Path.Combine(cgRoot, "trellis"));
    }

    private static void RemoveIfEmpty(string dir)
    {
        try
        {
            if (Directory.Exists(dir) && !Directory.EnumerateDirectories(dir).Any() && !Directory.EnumerateFiles(dir).Any(f => !IsCgroupControlFile(f)))
                Directory.Delete(dir);
        }
        catch (Exception e) when (e is DirectoryNotFoundException or IOException)
        {
            // Another lab going down (or coming up) at the same time removed it or put something in it: either is fine.
        }
    }

    // A cgroup directory always lists its interface files; it is empty when it has no child cgroups.
    private static bool IsCgroupControlFile(string f) => Path.GetFileName(f).Contains('.');

    private static void StopAgent(string node, Action<string>? progress) =>
        Stop(Path.Combine(AgentPaths.RunDir(node), "agent.pid"), "agent", argv => argv.Contains("agent") && argv.Contains(node), progress);

    /// <summary>The node's L7 proxy outlives the agent on purpose (it keeps enforcing while the agent restarts).</summary>
    private static void StopProxy(string node, Action<string>? progress) =>
        Stop(Path.Combine(AgentPaths.RunDir(node), "proxy.pid"), "L7 proxy",
            argv => argv.Any(a => a.EndsWith("trellis-proxy", StringComparison.Ordinal)) && argv.Contains(node), progress);

    /// <summary>SIGTERM, then SIGKILL after 5 s, to the process in <paramref name="pidFile"/> if its command line is
    /// still the one expected (a pid may have been reused).</summary>
    private static void Stop(string pidFile, string what, Func<string[], bool> isIt, Action<string>? progress)
    {
        if (!File.Exists(pidFile) || !int.TryParse(File.ReadAllText(pidFile).Trim(), out var pid)) return;
        Process proc;
        try { proc = Process.GetProcessById(pid); }
        catch (ArgumentException) { return; } // already gone
        using (proc)
        {
            try
            {
                if (!isIt(File.ReadAllText($"/proc/{pid}/cmdline").Split('\0'))) return;
            }
            catch (IOException) { return; }
            progress?.Invoke($"stopping {what} (pid {pid})");
            Shell.Run("kill", ["-TERM", pid.ToString()], check: false);
            if (!proc.WaitForExit(5000))
                proc.Kill();
            proc.WaitForExit(5000);
        }
    }
}
