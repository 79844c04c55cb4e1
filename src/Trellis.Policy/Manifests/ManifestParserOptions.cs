namespace Trellis.Policy;

/// <summary>What the parser accepts beyond its defaults.</summary>
public sealed record ManifestParserOptions
{
    public static readonly ManifestParserOptions Default = new();

    /// <summary>
    /// Accept Cilium L7 HTTP rules (<c>toPorts[].rules.http</c>). Off by default: only a caller that enforces them
    /// (the agent once the node-local proxy runs) may turn it on, because an accepted but unenforced rule would
    /// silently allow every request on the port.
    /// </summary>
    public bool AllowL7Rules { get; init; }
}
