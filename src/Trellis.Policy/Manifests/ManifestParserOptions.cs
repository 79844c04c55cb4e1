namespace Trellis.Policy;

/// <summary>What the parser accepts beyond its defaults.</summary>
public sealed record ManifestParserOptions
{
    public static readonly ManifestParserOptions Default = new();

    /// <summary>
    /// Accept Cilium L7 HTTP rules (<c>toPorts[].rules.http</c>). On by default; an agent running without its L7
    /// proxy turns it off, because such a rule could not be enforced there.
    /// </summary>
    public bool AllowL7Rules { get; init; } = true;
}
