using System.Diagnostics;
using System.Globalization;

namespace Trellis.Bench.Common;

/// <summary>The machine a bench ran on, for the report: every figure is read in this context.</summary>
public static class Host
{
    /// <summary>"2 vCPU (model), 8 GiB, Linux 6.1.0-..., .NET 10.0.x".</summary>
    public static string Describe()
    {
        var cpu = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "unknown CPU";
        var memKb = File.ReadLines("/proc/meminfo").First(l => l.StartsWith("MemTotal:", StringComparison.Ordinal)).Split(' ', StringSplitOptions.RemoveEmptyEntries)[1];
        return $"{Environment.ProcessorCount} vCPU ({cpu}), {long.Parse(memKb, CultureInfo.InvariantCulture) / 1024 / 1024} GiB, Linux {File.ReadAllText("/proc/sys/kernel/osrelease").Trim()}, .NET {Environment.Version}";
    }

    /// <summary>The 1, 5 and 15 minute load averages: on a shared machine, the context every figure must be read in.</summary>
    public static string LoadAverage() => string.Join(" ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3));

    /// <summary>The first line a tool prints for <paramref name="flag"/>, without the banner around the version:
    /// "nginx version: nginx/1.22.1" -> "nginx/1.22.1", "wrk 4.1.0 [epoll] Copyright ..." -> "wrk 4.1.0 [epoll]",
    /// "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/" -> "HAProxy version 2.6.12-1+deb12u4 2026/10/17".</summary>
    public static string ToolVersion(string tool, string flag)
    {
        var psi = new ProcessStartInfo(tool) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(flag);
        using var p = Process.Start(psi)!;
        var text = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
        p.WaitForExit();
        var first = text.Split('\n', StringSplitOptions.RemoveEmptyEntries).FirstOrDefault() ?? tool;
        return first.Replace("nginx version: ", "").Split(" Copyright", 2)[0].Split(" - http", 2)[0].Trim();
    }
}
