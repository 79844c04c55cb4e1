using System.Text.RegularExpressions;

namespace Trellis.Policy;

/// <summary>
/// Decides HTTP requests against a set of <see cref="HttpRule"/>s the way Cilium does: a request is allowed when any
/// rule matches; a rule matches when every field it sets matches. Regexes are compiled once, fully anchored and
/// non-backtracking (linear time, like the RE2/Go regexps Cilium uses). Thread-safe once built.
/// </summary>
public sealed class HttpRuleMatcher
{
    /// <summary>The options every rule regex is compiled with (the parser validates with the same).</summary>
    public const RegexOptions Options = RegexOptions.NonBacktracking | RegexOptions.CultureInvariant;

    private static readonly TimeSpan NoTimeout = Regex.InfiniteMatchTimeout;

    private readonly CompiledRule[] _rules;

    public HttpRuleMatcher(IEnumerable<HttpRule> rules)
    {
        ArgumentNullException.ThrowIfNull(rules);
        Rules = rules.ToArray();
        _rules = Rules.Select(r => new CompiledRule(Compile(r.Method), Compile(r.Path), Compile(r.Host), r.Headers.ToArray())).ToArray();
    }

    public IReadOnlyList<HttpRule> Rules { get; }

    /// <summary>
    /// Whether any rule allows the request. <paramref name="path"/> is the request target as sent (path and query,
    /// Envoy's :path); <paramref name="host"/> the Host header (:authority), null when absent; <paramref name="headers"/>
    /// every header line (a repeated header as several pairs). No rule at all allows nothing.
    /// </summary>
    public bool Allows(string method, string path, string? host, IEnumerable<KeyValuePair<string, string>> headers)
    {
        ArgumentNullException.ThrowIfNull(method);
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(headers);
        var headerList = headers as IReadOnlyCollection<KeyValuePair<string, string>> ?? headers.ToArray();
        foreach (var rule in _rules)
        {
            if (rule.Matches(method, path, host, headerList))
                return true;
        }
        return false;
    }

    /// <summary>The anchored form of a rule regex: the whole value must match.</summary>
    public static string Anchor(string regex) => $"\\A(?:{regex})\\z"; // not $: in .NET it also matches before a final \n

    /// <summary>Null when <paramref name="regex"/> compiles as the matcher compiles it, else why not.</summary>
    public static string? RegexError(string regex)
    {
        try
        {
            _ = new Regex(Anchor(regex), Options, NoTimeout);
            return null;
        }
        catch (ArgumentException e)
        {
            return e.Message;
        }
        catch (NotSupportedException e)
        {
            // NonBacktracking refuses backreferences, lookarounds, atomic groups...: RE2 has none of them either.
            return e.Message;
        }
    }

    private static Regex? Compile(string? regex) => regex is null ? null : new Regex(Anchor(regex), Options, NoTimeout);

    private sealed record CompiledRule(Regex? Method, Regex? Path, Regex? Host, HeaderMatch[] Headers)
    {
        public bool Matches(string method, string path, string? host, IReadOnlyCollection<KeyValuePair<string, string>> headers)
        {
            if (Method is not null && !Method.IsMatch(method))
                return false;
            if (Path is not null && !Path.IsMatch(path))
                return false;
            if (Host is not null && (host is null || !Host.IsMatch(host)))
                return false;
            foreach (var h in Headers)
            {
                var found = false;
                foreach (var (name, value) in headers)
                {
                    if (string.Equals(name, h.Name, StringComparison.OrdinalIgnoreCase) && (h.Value is null || string.Equals(value, h.Value, StringComparison.Ordinal)))
                    {
                        found = true;
                        break;
                    }
                }
                if (!found)
                    return false;
            }
            return true;
        }
    }
}
