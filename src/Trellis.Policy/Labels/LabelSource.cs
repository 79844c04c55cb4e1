namespace Trellis.Policy;

/// <summary>Cilium label sources as they appear as key prefixes in selectors ("k8s:app").</summary>
public static class LabelSource
{
    public const string K8sPrefix = "k8s:";
    public const string AnyPrefix = "any:";
    public const string ReservedPrefix = "reserved:";

    /// <summary>
    /// Strips a k8s:/any: source prefix; identity labels are stored without one, and all of ours come from k8s.
    /// Returns an error text instead for sources we cannot match yet.
    /// </summary>
    public static string NormalizeSelectorKey(string key, out string? error)
    {
        error = null;
        if (key.StartsWith(K8sPrefix, StringComparison.Ordinal))
            key = key[K8sPrefix.Length..];
        else if (key.StartsWith(AnyPrefix, StringComparison.Ordinal))
            key = key[AnyPrefix.Length..];
        else if (key.StartsWith(ReservedPrefix, StringComparison.Ordinal))
            error = "reserved labels are not supported yet; use fromEntities (issue 3)";
        else if (key.IndexOf(':') is > 0 and var colon)
            error = $"label source '{key[..colon]}' is not supported yet (supported: k8s, any, or no prefix)";

        if (error is null && key.Length == 0)
            error = "label key must not be empty";
        return key;
    }
}
