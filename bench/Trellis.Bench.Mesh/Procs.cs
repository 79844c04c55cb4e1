using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;

namespace Trellis.Bench.Mesh;

/// <summary>Processes: running tools, and what /proc says about the mesh's own processes.</summary>
internal static class Procs
{
    /// <summary>The unit of /proc/PID/stat times (USER_HZ: 100 on every Linux architecture .NET runs on).</summary>
    public const double UserHz = 100;

    /// <summary>Runs a tool to completion. Cancelling kills it (and what it started), so Ctrl-C never leaves a wrk
    /// or iperf3 behind; a tool that hangs past <paramref name="timeout"/> is killed and reported.</summary>
    public static ProcResult Run(string file, IReadOnlyList<string> arguments, TimeSpan timeout, CancellationToken ct, string? stdin = null)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false };
        foreach (var a in arguments) psi.ArgumentList.Add(a);
        Process p;
        try { p = Process.Start(psi) ?? throw new BenchException($"cannot start {file}"); }
        catch (System.ComponentModel.Win32Exception e) { throw new BenchException($"cannot run {file}: {e.Message}"); }
        using (p)
        {
            if (stdin is not null) p.StandardInput.Write(stdin);
            p.StandardInput.Close();
            var stdout = p.StandardOutput.ReadToEndAsync(CancellationToken.None);
            var stderr = p.StandardError.ReadToEndAsync(CancellationToken.None);
            using (ct.Register(() => { try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { } }))
            {
                if (!p.WaitForExit(timeout))
                {
                    p.Kill(entireProcessTree: true);
                    p.WaitForExit();
                    throw new BenchException($"{file} {string.Join(' ', arguments)} did not finish within {timeout.TotalSeconds:0} s");
                }
                p.WaitForExit();
            }
            ct.ThrowIfCancellationRequested();
            return new ProcResult(p.ExitCode, stdout.Result, stderr.Result);
        }
    }

    /// <summary>Like <see cref="Run"/>, but a non-zero exit is a failure naming the command.</summary>
    public static string Check(string file, IReadOnlyList<string> arguments, CancellationToken ct, string? stdin = null)
    {
        var r = Run(file, arguments, TimeSpan.FromMinutes(5), ct, stdin);
        if (r.Code != 0)
            throw new BenchException($"'{file} {string.Join(' ', arguments)}' failed (exit {r.Code}): {(r.Err + r.Out).Trim()}");
        return r.Out;
    }

    public static string? Which(string tool) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin").Split(':')
            .Append("/usr/sbin").Append("/sbin")
            .Select(d => Path.Combine(d, tool)).FirstOrDefault(File.Exists);

    /// <summary>The pid a pid file names, if that process is alive (haproxy writes one pid per line; the others one).</summary>
    public static int? PidFrom(string pidFile)
    {
        try
        {
            var first = File.ReadLines(pidFile).FirstOrDefault()?.Trim();
            return int.TryParse(first, NumberStyles.None, CultureInfo.InvariantCulture, out var pid) && pid > 0 && File.Exists($"/proc/{pid}/stat") ? pid : null;
        }
        catch (IOException)
        {
            return null;
        }
    }

    /// <summary>utime + stime of all the process's threads (fields 14 and 15 of /proc/PID/stat, after the
    /// parenthesised command name), in USER_HZ ticks; 0 if the process is gone.</summary>
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

    /// <summary>VmRSS, VmHWM (peak RSS) and Pss (RSS with each shared page divided among the processes mapping it,
    /// from smaps_rollup) in KiB; -1 where unknown. Pss is what one more copy of a process really adds when
    /// others already map the same binary and libraries (several HAProxy sidecars on one node do).</summary>
    public static (long RssKb, long HwmKb, long PssKb) Memory(int? pid)
    {
        if (pid is null) return (-1, -1, -1);
        static long Field(IEnumerable<string> lines, string name) =>
            lines.FirstOrDefault(l => l.StartsWith(name, StringComparison.Ordinal)) is { } l
                ? long.Parse(l[name.Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) : -1;
        try
        {
            var status = File.ReadAllLines($"/proc/{pid}/status");
            long pss = -1;
            try { pss = Field(File.ReadAllLines($"/proc/{pid}/smaps_rollup"), "Pss:"); }
            catch (IOException) { }
            return (Field(status, "VmRSS:"), Field(status, "VmHWM:"), pss);
        }
        catch (IOException)
        {
            return (-1, -1, -1);
        }
    }

    /// <summary>Per frontend of a HAProxy (its stats socket, "show stat"): sessions (stot) and HTTP requests
    /// (req_tot, HTTP mode only). The bench proves with these that a run really went through the proxies.</summary>
    public static Dictionary<string, (long Sessions, long Requests)> HaproxyFrontends(string statsSocket)
    {
        string csv;
        try
        {
            using var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            s.Connect(new UnixDomainSocketEndPoint(statsSocket));
            s.Send(Encoding.ASCII.GetBytes("show stat\n"));
            using var stream = new NetworkStream(s, ownsSocket: false);
            using var reader = new StreamReader(stream, Encoding.ASCII);
            csv = reader.ReadToEnd();
        }
        catch (Exception e) when (e is SocketException or IOException)
        {
            throw new BenchException($"cannot read HAProxy's stats from {statsSocket}: {e.Message}");
        }
        var lines = csv.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        if (lines.Length == 0 || !lines[0].StartsWith("# ", StringComparison.Ordinal))
            throw new BenchException($"unexpected answer to 'show stat' on {statsSocket}: {csv}");
        var header = lines[0][2..].Split(',');
        int px = Array.IndexOf(header, "pxname"), sv = Array.IndexOf(header, "svname"), stot = Array.IndexOf(header, "stot"), req = Array.IndexOf(header, "req_tot");
        var result = new Dictionary<string, (long, long)>();
        foreach (var l in lines.Skip(1))
        {
            var f = l.Split(',');
            if (f.Length <= Math.Max(stot, req) || f[sv] != "FRONTEND") continue;
            static long N(string v) => long.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out var n) ? n : 0;
            result[f[px]] = (N(f[stot]), N(f[req]));
        }
        return result;
    }

    /// <summary>Received throughput of an iperf3 -J run (the receiver's view: what arrived, not what was queued).</summary>
    public static (double BitsPerSecond, long Bytes) ParseIperf(string json)
    {
        try
        {
            var root = JsonDocument.Parse(json).RootElement;
            if (root.TryGetProperty("error", out var error))
                throw new BenchException($"iperf3 reported an error: {error.GetString()}");
            var received = root.GetProperty("end").GetProperty("sum_received");
            var bps = received.GetProperty("bits_per_second").GetDouble();
            var bytes = received.GetProperty("bytes").GetInt64();
            if (bps <= 0 || bytes <= 0)
                throw new BenchException("iperf3 transferred nothing");
            return (bps, bytes);
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            throw new BenchException($"cannot read iperf3's JSON output ({e.Message}): {json}");
        }
    }
}
