using System.Diagnostics;
using System.Text;

namespace Trellis.ServiceMap;

/// <summary>A map could not be rendered: Graphviz is missing or failed. The message says what to do.</summary>
public sealed class GraphvizException(string message) : Exception(message);

/// <summary>Renders DOT text with Graphviz's <c>dot</c> program (Debian package <c>graphviz</c>).</summary>
public static class Graphviz
{
    public const string Package = "graphviz";
    public static readonly IReadOnlyList<string> Formats = ["svg", "png"];

    /// <summary>The <c>dot</c> executable on PATH, or null.</summary>
    public static string? FindDot()
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "/usr/local/bin:/usr/bin:/bin").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            var candidate = Path.Combine(dir, "dot");
            if (File.Exists(candidate)) return candidate;
        }
        return null;
    }

    /// <summary>Runs <c>dot -T<paramref name="format"/></c> on <paramref name="dot"/> and returns what it wrote.</summary>
    public static async Task<byte[]> RenderAsync(string dot, string format, CancellationToken ct = default, TimeSpan? timeout = null)
    {
        if (!Formats.Contains(format)) throw new ArgumentException($"format must be one of {string.Join(", ", Formats)}", nameof(format));
        var exe = FindDot() ?? throw new GraphvizException(
            $"rendering {format} needs Graphviz's 'dot', which is not installed: apt-get install {Package} (Debian package '{Package}'; " +
            "scripts/install-deps.sh installs it), or write DOT text with -o dot");
        var psi = new ProcessStartInfo(exe)
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            StandardInputEncoding = new UTF8Encoding(false),
        };
        psi.ArgumentList.Add($"-T{format}");
        using var p = Process.Start(psi) ?? throw new GraphvizException($"could not start {exe}");
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(timeout ?? TimeSpan.FromSeconds(60));
        try
        {
            using var output = new MemoryStream();
            var copy = p.StandardOutput.BaseStream.CopyToAsync(output, cts.Token);
            var stderr = p.StandardError.ReadToEndAsync(cts.Token);
            try
            {
                await p.StandardInput.WriteAsync(dot.AsMemory(), cts.Token);
                p.StandardInput.Close();
            }
            catch (IOException)
            {
                // dot exited early (bad input): its exit code and stderr below say why.
            }
            await copy;
            var err = await stderr;
            await p.WaitForExitAsync(cts.Token);
            if (p.ExitCode != 0)
                throw new GraphvizException($"{exe} -T{format} failed (exit {p.ExitCode}): {err.Trim()}");
            if (output.Length == 0)
                throw new GraphvizException($"{exe} -T{format} wrote nothing: {err.Trim()}");
            return output.ToArray();
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw new GraphvizException($"{exe} -T{format} did not finish within {(timeout ?? TimeSpan.FromSeconds(60)).TotalSeconds:0} s");
        }
        finally
        {
            if (!p.HasExited)
            {
                try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            }
        }
    }
}
