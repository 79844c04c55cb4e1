namespace Trellis.Integration.Infrastructure;

public static class Processes
{
    /// <summary>Runs a process with captured output, killing it (and its children) after <paramref name="timeout"/>.</summary>
    public static Task<ExecResult> RunAsync(string file, TimeSpan timeout, params string[] args)
    {
        var psi = new System.Diagnostics.ProcessStartInfo(file) { UseShellExecute = false, RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        return RunAsync(psi, timeout);
    }

    public static async Task<ExecResult> RunAsync(System.Diagnostics.ProcessStartInfo psi, TimeSpan timeout)
    {
        using var p = System.Diagnostics.Process.Start(psi)!;
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        bool timedOut = false;
        try
        {
            await p.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            timedOut = true;
            p.Kill(entireProcessTree: true);
            await p.WaitForExitAsync();
        }
        return new ExecResult(p.ExitCode, await stdout, await stderr, timedOut);
    }

    /// <summary>Whether the process still runs. A zombie leader counts as running while other threads of it
    /// still exit: they share its file descriptors (the agent's listening socket among them).</summary>
    public static bool IsRunning(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            return stat[stat.LastIndexOf(')') + 2] != 'Z' || Directory.EnumerateDirectories($"/proc/{pid}/task").Skip(1).Any();
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException or IOException)
        {
            return false;
        }
    }
}
