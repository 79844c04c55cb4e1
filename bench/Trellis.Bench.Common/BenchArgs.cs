using System.Globalization;

namespace Trellis.Bench.Common;

/// <summary>The benches' command lines: "--name value" options, and where the checkout is (for ./trellis and
/// bench/results).</summary>
public static class BenchArgs
{
    /// <summary>The value after <paramref name="name"/>, or null when the option is absent or last.</summary>
    public static string? Opt(string[] args, string name)
    {
        var i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }

    /// <summary>A positive integer option (or zero too, with <paramref name="allowZero"/>); a bad value is an
    /// <see cref="ArgumentException"/> naming the option.</summary>
    public static int IntOpt(string[] args, string name, int dflt, bool allowZero = false) =>
        Opt(args, name) is { } v
            ? int.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) && (n > 0 || allowZero && n == 0) ? n
                : throw new ArgumentException($"{name} needs a {(allowZero ? "non-negative" : "positive")} integer, not '{v}'")
            : dflt;

    /// <summary>The repository root (the directory holding Trellis.slnx) above the current directory or the bench's
    /// binary; null when there is none (the caller says what to pass instead).</summary>
    public static string? RepoRoot()
    {
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var d = new DirectoryInfo(start); d is not null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "Trellis.slnx")))
                    return d.FullName;
        return null;
    }
}
