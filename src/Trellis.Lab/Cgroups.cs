using Trellis.Bpf;

namespace Trellis.Lab;

/// <summary>Per-pod cgroup v2 directories under &lt;cgroup2&gt;/trellis/&lt;node&gt;/&lt;ns&gt;/&lt;pod&gt;.</summary>
public static class Cgroups
{
    public static string Root() => BpfFs.EnsureCgroup2();

    public static string NodeDir(string node) => Path.Combine(Root(), "trellis", node);
    public static string PodDir(string node, string ns, string pod) => Path.Combine(NodeDir(node), ns, pod);
    /// <summary>Where host-namespace commands of the lab run ('lab host-exec'): inside the node's cgroup, so the
    /// socket load balancer serves them as it serves pods. "_host" is no namespace name (not a DNS label).</summary>
    public static string HostDir(string node) => Path.Combine(NodeDir(node), "_host");

    /// <summary>Kills every process in the cgroup tree (cgroup.kill) and removes the directories, deepest first.</summary>
    public static void KillAndRemove(string dir)
    {
        if (!Directory.Exists(dir)) return;
        var kill = Path.Combine(dir, "cgroup.kill");
        if (File.Exists(kill)) File.WriteAllText(kill, "1");
        var dirs = Directory.EnumerateDirectories(dir, "*", SearchOption.AllDirectories).Append(dir)
            .OrderByDescending(d => d.Length).ToList();
        var deadline = DateTime.UtcNow.AddSeconds(5);
        foreach (var d in dirs)
        {
            while (true)
            {
                try
                {
                    Directory.Delete(d);
                    break;
                }
                catch (IOException) when (DateTime.UtcNow < deadline)
                {
                    Thread.Sleep(50); // processes are still exiting
                }
                catch (DirectoryNotFoundException)
                {
                    break;
                }
            }
        }
    }
}
