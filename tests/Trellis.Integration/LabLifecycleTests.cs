using Trellis.Api;
using Trellis.Integration.Infrastructure;
using Trellis.Lab;
using static Trellis.Integration.Infrastructure.Labs;

namespace Trellis.Integration;

[Collection(LabCollectionA.Name)]
[Trait("Requires", "root")]
public sealed class LabLifecycleTests
{
    [Fact]
    public async Task Lab_down_removes_everything_and_running_it_twice_is_fine()
    {
        await using var lab = await ShopAsync();
        var node = lab.Node;
        var serverIp = await lab.IpAsync("shop", "server");
        var conn = lab.Pod("shop", "client").OpenEcho(serverIp, TcpEcho); // a live connection and a client process
        await conn.AssertWorksAsync("before lab down");
        var agentPid = lab.AgentPid();
        var cgroup = Cgroups.NodeDir(node);
        var podPids = Directory.EnumerateFiles(cgroup, "cgroup.procs", SearchOption.AllDirectories)
            .SelectMany(File.ReadLines).Select(int.Parse).ToList();
        Assert.True(podPids.Count >= 7, $"the pods' servers run in the node's cgroup ({podPids.Count} processes)");
        Assert.NotEmpty(NetnsOf(node));
        Assert.True(Directory.Exists(AgentPaths.PinRoot(node)));

        var first = await TrellisCli.RunAsync("lab", "down", "--node", node);
        Assert.True(first.Ok, $"lab down: {first}");
        var second = await TrellisCli.RunAsync("lab", "down", "--node", node);
        Assert.True(second.Ok, $"second lab down: {second}");
        Assert.Contains($"node {node} is down", second.Stdout);

        Assert.Empty(NetnsOf(node));
        Assert.False(Directory.Exists(AgentPaths.PinRoot(node)), $"{AgentPaths.PinRoot(node)} is removed");
        Assert.False(Directory.Exists(cgroup), $"{cgroup} is removed");
        Assert.False(Directory.Exists(AgentPaths.RunDir(node)), $"{AgentPaths.RunDir(node)} is removed");
        Assert.False(Directory.Exists(AgentPaths.StateDir(node)), $"{AgentPaths.StateDir(node)} is removed");
        Assert.False(Processes.IsRunning(agentPid), $"agent {agentPid} is gone");
        Assert.DoesNotContain(podPids, Processes.IsRunning);
        Assert.Empty(AgentProcessesOf(node));
    }

    private static List<string> NetnsOf(string node) =>
        Directory.Exists(Naming.NetnsDir)
            ? Directory.EnumerateFiles(Naming.NetnsDir).Select(f => Path.GetFileName(f))
                .Where(n => n == Naming.NodeNetns(node) || n.StartsWith(Naming.PodNetnsPrefix(node), StringComparison.Ordinal)).ToList()
            : [];

    private static List<int> AgentProcessesOf(string node)
    {
        var found = new List<int>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out var pid)) continue;
            try
            {
                var argv = File.ReadAllText(Path.Combine(dir, "cmdline")).Split('\0');
                if (argv.Contains("agent") && argv.Contains(node) && Processes.IsRunning(pid)) found.Add(pid);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        }
        return found;
    }
}
