using System.Globalization;
using System.Text.RegularExpressions;

namespace Trellis.Datapath.Tests;

internal static partial class Repo
{
    /// <summary>The checkout root: the first directory above the test assembly that holds Trellis.slnx.</summary>
    public static string Root { get; } = FindRoot();

    private static string FindRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "Trellis.slnx")))
                return d.FullName;
        throw new InvalidOperationException($"no Trellis.slnx above {AppContext.BaseDirectory}: run the tests from a checkout");
    }

    /// <summary>Every <c>#define NAME number</c> of a header under bpf/ (decimal, hex, with ULL suffixes).</summary>
    public static Dictionary<string, ulong> Defines(string relativePath)
    {
        var text = File.ReadAllText(Path.Combine(Root, relativePath));
        var result = new Dictionary<string, ulong>();
        foreach (Match m in DefineRegex().Matches(text))
        {
            var v = m.Groups[2].Value;
            result[m.Groups[1].Value] = v.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
                ? ulong.Parse(v[2..], NumberStyles.HexNumber)
                : ulong.Parse(v);
        }
        return result;
    }

    [GeneratedRegex(@"^#define\s+(\w+)\s+(0x[0-9A-Fa-f]+|\d+)(?:U?L{0,2})?\b", RegexOptions.Multiline)]
    private static partial Regex DefineRegex();
}
