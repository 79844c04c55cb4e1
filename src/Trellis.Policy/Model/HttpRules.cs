namespace Trellis.Policy;

/// <summary>
/// One Cilium <c>rules.http[]</c> item (PortRuleHTTP). Every set field must match; a rule with no field set matches
/// every request. <see cref="Method"/>, <see cref="Path"/> and <see cref="Host"/> are extended regular expressions
/// as written (the matcher anchors them: the whole value must match).
/// </summary>
/// <param name="Method">Regex against the request method (e.g. "GET", "GET|HEAD"); null = any method.</param>
/// <param name="Path">Regex against the request path (Envoy's :path, so the query string is part of it); null = any.</param>
/// <param name="Host">Regex against the Host header (:authority); null = any host.</param>
/// <param name="Headers">Headers that must be present (<see cref="HeaderMatch.Value"/> null) or have an exact value.</param>
public sealed record HttpRule(string? Method, string? Path, string? Host, IReadOnlyList<HeaderMatch> Headers)
{
    /// <summary>The empty rule <c>{}</c>: every request (L7 visibility without restriction).</summary>
    public static readonly HttpRule AllowAll = new(null, null, null, []);

    public bool IsAllowAll => Method is null && Path is null && Host is null && Headers.Count == 0;

    public bool Equals(HttpRule? other) =>
        other is not null && Method == other.Method && Path == other.Path && Host == other.Host && Headers.SequenceEqual(other.Headers);

    public override int GetHashCode() => HashCode.Combine(Method, Path, Host, Headers.Count);

    public override string ToString()
    {
        var parts = new List<string>();
        if (Method is not null) parts.Add($"method={Method}");
        if (Path is not null) parts.Add($"path={Path}");
        if (Host is not null) parts.Add($"host={Host}");
        parts.AddRange(Headers.Select(h => h.ToString()));
        return parts.Count == 0 ? "{}" : "{" + string.Join(" ", parts) + "}";
    }
}

/// <summary>
/// A header condition (<c>headers</c> string or <c>headerMatches</c> item): <see cref="Value"/> null = the header
/// must be present; otherwise one of its values must equal <see cref="Value"/> exactly. Names compare case-insensitively.
/// </summary>
public sealed record HeaderMatch(string Name, string? Value)
{
    public bool Equals(HeaderMatch? other) =>
        other is not null && string.Equals(Name, other.Name, StringComparison.OrdinalIgnoreCase) && Value == other.Value;

    public override int GetHashCode() => HashCode.Combine(StringComparer.OrdinalIgnoreCase.GetHashCode(Name), Value);

    public override string ToString() => Value is null ? $"header {Name}" : $"header {Name}={Value}";
}

/// <summary>
/// The L7 part of one toPorts item (Cilium L7Rules). Only HTTP is supported; a non-empty <see cref="Http"/> list
/// means the port's traffic goes through the node-local proxy and a request passes when any rule matches.
/// </summary>
public sealed record L7Rules(IReadOnlyList<HttpRule> Http);
