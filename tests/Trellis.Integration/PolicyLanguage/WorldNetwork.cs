using System.Diagnostics;
using Trellis.Integration.Infrastructure;
using Trellis.Lab;

namespace Trellis.Integration.PolicyLanguage;

/// <summary>A network namespace outside the cluster, wired to the lab's node with a veth: the node side is
/// 192.0.2.1/24, the world holds the given addresses and routes back through the node. Servers started here
/// are killed and the namespace deleted on dispose.</summary>
public sealed class WorldNetwork : IDisposable
{
    public const string NodeSide = "192.0.2.1";
    private readonly List<Process> _servers = [];
    public string Netns { get; }
    public string NetnsPath => Naming.NetnsPath(Netns);

    private WorldNetwork(string netns) => Netns = netns;

    public static WorldNetwork Create(TestLab lab, params string[] addresses)
    {
        var world = new WorldNetwork($"{lab.Node}-world");
        try
        {
            var node = Naming.NodeNetns(lab.Node);
            world.Remove(); // leftovers of an interrupted run
            Ip("netns", "add", world.Netns);
            Ip("-n", node, "link", "add", "world0", "type", "veth", "peer", "name", "eth0", "netns", world.Netns);
            Ip("-n", node, "addr", "add", $"{NodeSide}/24", "dev", "world0");
            Ip("-n", node, "link", "set", "world0", "up");
            Ip("-n", world.Netns, "link", "set", "lo", "up");
            foreach (var a in addresses) Ip("-n", world.Netns, "addr", "add", $"{a}/24", "dev", "eth0");
            Ip("-n", world.Netns, "link", "set", "eth0", "up");
            Ip("-n", world.Netns, "route", "add", "default", "via", NodeSide);
        }
        catch
        {
            world.Dispose();
            throw;
        }
        return world;
    }

    /// <summary>A TCP echo server on every address of the world.</summary>
    public async Task ServeTcpAsync(int port)
    {
        var psi = new ProcessStartInfo("nsenter") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { $"--net={NetnsPath}", "--", "socat", $"TCP-LISTEN:{port},fork,reuseaddr", "EXEC:cat" }) psi.ArgumentList.Add(a);
        _servers.Add(Process.Start(psi)!);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (DateTime.UtcNow < deadline)
        {
            var r = await Probes.NetnsExecAsync(NetnsPath, TimeSpan.FromSeconds(5), "ss", "-H", "-ltn", $"sport = :{port}");
            if (r.Ok && r.Stdout.Trim().Length > 0) return;
            await Task.Delay(100);
        }
        throw new Xunit.Sdk.XunitException($"the world's echo server on {port} does not listen after 10 s");
    }

    /// <summary>Connects from the world to <paramref name="ip"/>, with <paramref name="source"/> as the source address.</summary>
    public Task<ExecResult> ConnectAsync(string source, string ip, int port) =>
        Probes.NetnsExecAsync(NetnsPath, TimeSpan.FromSeconds(6), "socat", "-T1", "/dev/null", $"TCP:{ip}:{port},bind={source},connect-timeout=1");

    private static void Ip(params string[] args)
    {
        var psi = new ProcessStartInfo("ip") { UseShellExecute = false, RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"ip {string.Join(' ', args)} failed: {err.Trim()}");
    }

    private void Remove()
    {
        if (File.Exists(NetnsPath))
            try { Ip("netns", "del", Netns); }
            catch (InvalidOperationException) { }
    }

    public void Dispose()
    {
        foreach (var s in _servers)
        {
            try
            {
                if (!s.HasExited) s.Kill(entireProcessTree: true);
                s.WaitForExit(2000);
            }
            catch (InvalidOperationException) { }
            s.Dispose();
        }
        Remove(); // the veth goes with it; the node side would go with the node anyway
    }
}
