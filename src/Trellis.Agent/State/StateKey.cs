namespace Trellis.Agent.State;

/// <summary>The key rules every <see cref="IStateStore"/> shares: a key is '/'-separated segments, empty segments do
/// not count ("a//b" is "a/b", "/a/" is "a"), and a key needs at least one segment. Segments are opaque: ".." is a
/// name like any other.</summary>
internal static class StateKey
{
    public static string[] Segments(string key, string paramName)
    {
        ArgumentNullException.ThrowIfNull(key, paramName);
        var parts = key.Split('/', StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 0) throw new ArgumentException($"empty state key '{key}'", paramName);
        return parts;
    }

    /// <summary>The one spelling of <paramref name="key"/>: its segments joined by single '/'.</summary>
    public static string Normalize(string key, string paramName) => string.Join('/', Segments(key, paramName));

    /// <summary>A <see cref="IStateStore.List"/> prefix: like a key, but empty (every key) is allowed.</summary>
    public static string NormalizePrefix(string prefix)
    {
        ArgumentNullException.ThrowIfNull(prefix);
        return string.Join('/', prefix.Split('/', StringSplitOptions.RemoveEmptyEntries));
    }
}
