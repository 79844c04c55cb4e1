using System.Diagnostics;

namespace Trellis.Integration.Infrastructure;

/// <summary>Runs the `trellis` apphost that the build put next to the tests, capturing its output.</summary>
public static class TrellisCli
{
    public static async Task<ExecResult> RunAsync(params string[] args)
    {
        var psi = new ProcessStartInfo(TestLab.TrellisExe)
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment.Remove("TRELLIS_NODE"); // every test names its node
        using var p = Process.Start(psi)!;
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
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
}
