namespace Trellis.Policy;

/// <summary>Text-level helpers for multi-document manifests.</summary>
public static class ManifestText
{
    /// <summary>The YAML document (between "---" separators) that contains 1-based <paramref name="line"/>,
    /// e.g. one resource's text out of a file of several, by its <see cref="SourceLocation.Line"/>.</summary>
    public static string DocumentAt(string text, int line)
    {
        var lines = text.Split('\n');
        bool IsSeparator(int i) => lines[i].TrimEnd('\r').StartsWith("---", StringComparison.Ordinal);
        int start = Math.Clamp(line - 1, 0, lines.Length - 1), end = start;
        while (start > 0 && !IsSeparator(start - 1)) start--;
        while (end < lines.Length - 1 && !IsSeparator(end + 1)) end++;
        return string.Join('\n', lines[start..(end + 1)]).Trim('\n') + "\n";
    }
}
