using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using System.Text;
using Trellis.Api;
using Trellis.Lab;

namespace Trellis.Integration.Infrastructure;

/// <summary>A one-node lab owned by one test: a node named after the test (so tests run side by side and
/// again after a crash), brought up through <see cref="LabRunner"/> and always taken down on dispose.</summary>
public sealed class TestLab : IAsyncDisposable
{
    /// <summary>The `trellis` apphost next to the tests (the CLI project is referenced for it).</summary>
    public static string TrellisExe { get; } = Path.Combine(AppContext.BaseDirectory, "trellis");

    public string Node { get; }
    public string PodCidr { get; }
    public string LabFilePath { get; }
    public string Dir { get; }
    /// <summary>etcd client URLs the node's agent joins a cluster with (null: single node, embedded store).</summary>
    public string? Etcd { get; private init; }
    public string Cluster { get; private init; } = "default";
    /// <summary>A client of the lab's agent; replaced after every `lab up`, so no pooled connection to a killed agent is reused.</summary>
    public AgentClient Agent { get; private set; }
    private readonly List<IDisposable> _owned = [];

    private TestLab(string node, string dir, string labFile)
    {
        Node = node;
        Dir = dir;
        LabFilePath = labFile;
        // A CIDR of its own per node: flows and addresses of parallel labs can never be confused.
        var h = SHA256.HashData(Encoding.UTF8.GetBytes(node));
        PodCidr = $"10.{100 + h[0] % 100}.{h[1]}.0/24";
        Agent = NewClient(node);
    }

    /// <summary>"it-" + 6 hex digits of the test's name: a short DNS label (netns and veth names stay short).</summary>
    public static string NodeNameFor(string test) =>
        "it-" + Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(test)))[..6];

    public static Task<TestLab> UpAsync(string labYaml, [CallerMemberName] string test = "", [CallerFilePath] string file = "") =>
        UpAsync(labYaml, NodeNameFor(Path.GetFileNameWithoutExtension(file) + "." + test), etcd: null, cluster: "default");

    /// <summary>One node of a multi-node lab: its agent joins <paramref name="cluster"/> in the etcd at
    /// <paramref name="etcd"/>; <paramref name="nodeTag"/> tells the test's nodes apart (node name and pod CIDR).</summary>
    public static Task<TestLab> UpInClusterAsync(string labYaml, string etcd, string cluster, string nodeTag,
        [CallerMemberName] string test = "", [CallerFilePath] string file = "") =>
        UpAsync(labYaml, NodeNameFor(Path.GetFileNameWithoutExtension(file) + "." + test + "." + nodeTag), etcd, cluster);

    private static async Task<TestLab> UpAsync(string labYaml, string node, string? etcd, string cluster)
    {
        RequireEnvironment();
        LabRunner.Down(node); // leftovers of an interrupted run
        var dir = Directory.CreateTempSubdirectory($"trellis-{node}-").FullName;
        var labFile = Path.Combine(dir, "lab.yaml");
        await File.WriteAllTextAsync(labFile, labYaml);
        var lab = new TestLab(node, dir, labFile) { Etcd = etcd, Cluster = cluster };
        try
        {
            await lab.ReUpAsync();
        }
        catch
        {
            await lab.DisposeAsync();
            throw;
        }
        return lab;
    }

    /// <summary>Runs `lab up` again with the same file (it adds what is missing and starts the agent if none runs).</summary>
    public async Task ReUpAsync(CancellationToken ct = default)
    {
        await new LabRunner(new LabOptions { Node = Node, PodCidr = PodCidr, TrellisCommand = [TrellisExe], Etcd = Etcd, Cluster = Cluster }).UpAsync(LabRunner.Load(LabFilePath), ct);
        var old = Agent;
        Agent = NewClient(Node);
        old.Dispose();
    }

    private static AgentClient NewClient(string node) => new(AgentPaths.Socket(node), TimeSpan.FromSeconds(30));

    public async Task<EndpointDto> EndpointAsync(string ns, string pod) =>
        (await Agent.EndpointsAsync()).SingleOrDefault(e => e.Namespace == ns && e.Pod == pod)
        ?? throw new InvalidOperationException($"no endpoint {ns}/{pod} on node {Node}");

    public async Task<string> IpAsync(string ns, string pod) => (await EndpointAsync(ns, pod)).Ip;

    public Pod Pod(string ns, string name) => new(this, ns, name);

    /// <summary>Applies policy YAML through the agent API (as `trellis policy apply` does).</summary>
    public async Task<ApplyPolicyResponse> ApplyPolicyAsync(string yaml, string fileName = "policy.yaml") =>
        await Agent.ApplyPolicyAsync(Path.Combine(Dir, fileName), yaml);

    public string WriteFile(string name, string text)
    {
        var path = Path.Combine(Dir, name);
        File.WriteAllText(path, text);
        return path;
    }

    /// <summary>Flows the agent keeps, oldest first.</summary>
    public async Task<List<FlowDto>> FlowsAsync(int last = 1000)
    {
        var flows = new List<FlowDto>();
        await foreach (var f in Agent.FlowsAsync(last, follow: false, verdict: null)) flows.Add(f);
        return flows;
    }

    /// <summary>Polls for a flow matching <paramref name="match"/>: the ring buffer reaches the agent asynchronously.</summary>
    public async Task<FlowDto> WaitForFlowAsync(Func<FlowDto, bool> match, string what, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(5));
        List<FlowDto> flows;
        do
        {
            flows = await FlowsAsync();
            if (flows.LastOrDefault(match) is { } f) return f;
            await Task.Delay(100);
        } while (DateTime.UtcNow < deadline);
        throw new Xunit.Sdk.XunitException($"no flow {what} on node {Node}; the agent has {flows.Count}:{Environment.NewLine}" +
            string.Join(Environment.NewLine, flows.TakeLast(30).Select(Describe)));
    }

    public static string Describe(FlowDto f) =>
        $"{f.Source.Namespace}/{f.Source.Pod} {f.Source.Ip}:{f.Source.Port} -> {f.Destination.Namespace}/{f.Destination.Pod} {f.Destination.Ip}:{f.Destination.Port} " +
        $"{f.Protocol} {f.Direction} {f.Verdict} {f.DropReason} reply={f.IsReply}";

    /// <summary>The agent's process id, from its pid file.</summary>
    public int AgentPid() => int.Parse(File.ReadAllText(Path.Combine(AgentPaths.RunDir(Node), "agent.pid")).Trim());

    public string AgentLogTail(int lines = 30)
    {
        var log = Path.Combine(AgentPaths.RunDir(Node), "agent.log");
        return File.Exists(log) ? string.Join(Environment.NewLine, File.ReadLines(log).TakeLast(lines)) : "(no agent log)";
    }

    internal T Own<T>(T d) where T : IDisposable
    {
        lock (_owned) _owned.Add(d);
        return d;
    }

    public ValueTask DisposeAsync()
    {
        lock (_owned)
            foreach (var d in _owned) d.Dispose();
        Agent.Dispose();
        LabRunner.Down(Node);
        try { Directory.Delete(Dir, recursive: true); }
        catch (IOException) { }
        return ValueTask.CompletedTask;
    }

    /// <summary>These tests need root, bpffs and cgroup2; CI has them, so their absence is a failure, not a skip.</summary>
    private static void RequireEnvironment()
    {
        if (!Trellis.Bpf.BpfFs.IsRoot)
            throw new InvalidOperationException("integration tests create network namespaces and load BPF programs: run them as root");
        if (!File.Exists(TrellisExe))
            throw new InvalidOperationException($"{TrellisExe} is missing: build the solution (dotnet build Trellis.slnx) so the CLI lands next to the tests");
        if (Trellis.Bpf.BpfFs.FindCgroup2Mount() is null || !Directory.Exists("/sys/fs/bpf"))
            throw new InvalidOperationException("cgroup2 or bpffs is not mounted: run scripts/install-deps.sh");
    }
}
