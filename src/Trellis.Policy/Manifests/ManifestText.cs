namespace Trellis.Policy;

/// <summary>Text-level helpers for multi-document manifests.</summary>
public static class ManifestText
{
    /// <summary>The YAML document (between "---" separators) that contains 1-based <paramref name="line"/>,
    /// e.g. one resource's text out of a file of several, by its <see cref="SourceLocation.Line"/>.</summary>
    public static string DocumentAt(string text, int line) => DocumentsAt(text, [line])[0];

    /// <summary><see cref="DocumentAt"/> for many lines of one text, splitting it once (a file of thousands of
    /// resources must not be split thousands of times).</summary>
    public static IReadOnlyList<string> DocumentsAt(string text, IReadOnlyList<int> lines)
    {
        var all = text.Split('\n');
        bool IsSeparator(int i) => all[i].TrimEnd('\r').StartsWith("---", StringComparison.Ordinal);
        var result = new string[lines.Count];
        for (int k = 0; k < lines.Count; k++)
        {
            int start = Math.Clamp(lines[k] - 1, 0, all.Length - 1), end = start;
            while (start > 0 && !IsSeparator(start - 1)) start--;
            while (end < all.Length - 1 && !IsSeparator(end + 1)) end++;
            result[k] = string.Join('\n', all[start..(end + 1)]).Trim('\n') + "\n";
        }
        return result;
    }
}
