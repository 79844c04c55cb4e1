using System.Diagnostics;

namespace Trellis.Bench.Common;

/// <summary>What a tool printed and how it exited.</summary>
public sealed record ProcResult(int Code, string Out, string Err);

/// <summary>A failure that makes the figures worthless: the bench stops (non-zero) and says why.</summary>
public sealed class BenchException(string message) : Exception(message);

/// <summary>Running the tools a bench drives (the trellis CLI, bpftool, curl, wrk...).</summary>
public static class Processes
{
    /// <summary>Runs a tool to completion, its stdin closed. Cancelling kills it (and what it started), so Ctrl-C
    /// never leaves a wrk or iperf3 behind; a tool that hangs past <paramref name="timeout"/> is killed and reported.</summary>
    public static ProcResult Run(string file, IReadOnlyList<string> arguments, TimeSpan timeout, CancellationToken ct)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false };
        foreach (var a in arguments) psi.ArgumentList.Add(a);
        Process p;
        try { p = Process.Start(psi) ?? throw new BenchException($"cannot start {file}"); }
        catch (System.ComponentModel.Win32Exception e) { throw new BenchException($"cannot run {file}: {e.Message}"); }
        using (p)
        {
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
    public static string Check(string file, IReadOnlyList<string> arguments, CancellationToken ct)
    {
        var r = Run(file, arguments, TimeSpan.FromMinutes(5), ct);
        if (r.Code != 0)
            throw new BenchException($"'{file} {string.Join(' ', arguments)}' failed (exit {r.Code}): {(r.Err + r.Out).Trim()}");
        return r.Out;
    }

    /// <summary>The tool's path in $PATH (then in <paramref name="alsoIn"/>), or null when it is not installed.</summary>
    public static string? Which(string tool, params string[] alsoIn) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin").Split(':').Concat(alsoIn)
            .Select(d => Path.Combine(d, tool)).FirstOrDefault(File.Exists);
}
