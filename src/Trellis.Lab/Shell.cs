using System.Diagnostics;

namespace Trellis.Lab;

public sealed class LabException(string message) : Exception(message);

public sealed record CommandResult(int ExitCode, string Stdout, string Stderr);

/// <summary>Runs system tools (iproute2, nsenter, sysctl) and turns failures into messages naming the command.</summary>
public static class Shell
{
    public static CommandResult Run(string file, IEnumerable<string> args, bool check = true, IDictionary<string, string>? env = null)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        if (env is not null)
            foreach (var (k, v) in env) psi.Environment[k] = v;
        Process p;
        try
        {
            p = Process.Start(psi)!;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new LabException($"cannot run {file}: {e.Message} (is it installed? run scripts/install-deps.sh)");
        }
        using (p)
        {
            p.StandardInput.Close();
            var stdout = p.StandardOutput.ReadToEndAsync();
            var stderr = p.StandardError.ReadToEndAsync();
            p.WaitForExit();
            var r = new CommandResult(p.ExitCode, stdout.Result, stderr.Result);
            if (check && r.ExitCode != 0)
                throw new LabException($"'{file} {string.Join(' ', psi.ArgumentList)}' failed (exit {r.ExitCode}): {r.Stderr.Trim()}");
            return r;
        }
    }

    public static CommandResult Ip(params string[] args) => Run("ip", args);
    public static CommandResult IpNs(string netns, params string[] args) => Run("ip", ["-n", netns, .. args]);
}
