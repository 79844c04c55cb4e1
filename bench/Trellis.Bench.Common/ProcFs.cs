using System.Globalization;

namespace Trellis.Bench.Common;

/// <summary>What /proc says about the processes a bench watches (the agent, the proxies): pids, CPU time, memory.</summary>
public static class ProcFs
{
    /// <summary>The unit of /proc/PID/stat times (USER_HZ: 100 on every Linux architecture .NET runs on).</summary>
    public const double UserHz = 100;

    /// <summary>The pid a pid file names (haproxy writes one pid per line; the others one), alive or not.</summary>
    public static int? ReadPid(string pidFile)
    {
        try
        {
            var first = File.ReadLines(pidFile).FirstOrDefault()?.Trim();
            return int.TryParse(first, NumberStyles.None, CultureInfo.InvariantCulture, out var pid) && pid > 0 ? pid : null;
        }
        catch (IOException)
        {
            return null;
        }
    }

    /// <summary>The pid a pid file names, if that process is alive.</summary>
    public static int? LivePid(string pidFile) => ReadPid(pidFile) is { } pid && File.Exists($"/proc/{pid}/stat") ? pid : null;

    /// <summary>utime + stime of all the process's threads (fields 14 and 15 of /proc/PID/stat, after the
    /// parenthesised command name), in USER_HZ ticks; 0 if there is no such process.</summary>
    public static long CpuTicks(int? pid)
    {
        if (pid is null) return 0;
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            var f = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return long.Parse(f[11], CultureInfo.InvariantCulture) + long.Parse(f[12], CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is IOException or FormatException or IndexOutOfRangeException)
        {
            return 0;
        }
    }

    /// <summary>The numeric fields of /proc/PID/status, in kB (or a count, for Threads); empty if the process is gone.</summary>
    public static Dictionary<string, long> Status(int pid) => Fields($"/proc/{pid}/status");

    /// <summary>VmRSS, VmHWM (peak RSS) and Pss (RSS with each shared page divided among the processes mapping it,
    /// from smaps_rollup) in KiB; -1 where unknown. Pss is what one more copy of a process really adds when
    /// others already map the same binary and libraries (several HAProxy sidecars on one node do).</summary>
    public static (long RssKb, long HwmKb, long PssKb) Memory(int? pid)
    {
        if (pid is null) return (-1, -1, -1);
        var status = Status(pid.Value);
        return (status.GetValueOrDefault("VmRSS", -1), status.GetValueOrDefault("VmHWM", -1),
            Fields($"/proc/{pid}/smaps_rollup").GetValueOrDefault("Pss", -1));
    }

    // "Name:   1234 kB" lines.
    private static Dictionary<string, long> Fields(string file)
    {
        var result = new Dictionary<string, long>();
        try
        {
            foreach (var line in File.ReadLines(file))
            {
                var colon = line.IndexOf(':');
                if (colon < 0) continue;
                var v = line[(colon + 1)..].Trim().Split(' ')[0];
                if (long.TryParse(v, CultureInfo.InvariantCulture, out var n)) result[line[..colon]] = n;
            }
        }
        catch (IOException) { }
        return result;
    }
}
