namespace Trellis.Policy;

public enum SelectorOperator
{
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// <summary>One matchExpressions entry; <see cref="Key"/> is stored without a source prefix.</summary>
public sealed record LabelSelectorRequirement
{
    public LabelSelectorRequirement(string key, SelectorOperator @operator, IReadOnlyList<string>? values = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(key);
        values ??= Array.Empty<string>();
        var needsValues = @operator is SelectorOperator.In or SelectorOperator.NotIn;
        if (needsValues && values.Count == 0)
            throw new ArgumentException($"operator {@operator} needs at least one value", nameof(values));
        if (!needsValues && values.Count != 0)
            throw new ArgumentException($"operator {@operator} takes no values", nameof(values));
        Key = key;
        Operator = @operator;
        Values = values.ToArray();
    }

    public string Key { get; }

    public SelectorOperator Operator { get; }

    public IReadOnlyList<string> Values { get; }

    public bool Matches(Labels labels)
    {
        var present = labels.TryGetValue(Key, out var value);
        return Operator switch
        {
            SelectorOperator.In => present && Values.Contains(value!, StringComparer.Ordinal),
            SelectorOperator.NotIn => !present || !Values.Contains(value!, StringComparer.Ordinal),
            SelectorOperator.Exists => present,
            SelectorOperator.DoesNotExist => !present,
            _ => false,
        };
    }

    public override string ToString() => Operator switch
    {
        SelectorOperator.Exists => Key,
        SelectorOperator.DoesNotExist => "!" + Key,
        _ => $"{Key} {(Operator == SelectorOperator.In ? "in" : "notin")} ({string.Join(",", Values)})",
    };
}

/// <summary>
/// A Kubernetes label selector over identity labels (keys already stripped of k8s:/any: prefixes).
/// All matchLabels and all matchExpressions must hold; the empty selector matches everything.
/// </summary>
public sealed class EndpointSelector
{
    public static readonly EndpointSelector All = new(Labels.Empty, Array.Empty<LabelSelectorRequirement>());

    public EndpointSelector(Labels matchLabels, IReadOnlyList<LabelSelectorRequirement> matchExpressions)
    {
        ArgumentNullException.ThrowIfNull(matchLabels);
        ArgumentNullException.ThrowIfNull(matchExpressions);
        MatchLabels = matchLabels;
        MatchExpressions = matchExpressions.ToArray();
    }

    public static EndpointSelector FromLabels(params (string Key, string Value)[] matchLabels) =>
        new(Labels.From(matchLabels), Array.Empty<LabelSelectorRequirement>());

    public Labels MatchLabels { get; }

    public IReadOnlyList<LabelSelectorRequirement> MatchExpressions { get; }

    public bool IsEmpty => MatchLabels.Count == 0 && MatchExpressions.Count == 0;

    public bool Matches(Labels labels)
    {
        ArgumentNullException.ThrowIfNull(labels);
        foreach (var (k, v) in MatchLabels)
        {
            if (!labels.TryGetValue(k, out var actual) || !string.Equals(actual, v, StringComparison.Ordinal))
                return false;
        }
        foreach (var requirement in MatchExpressions)
        {
            if (!requirement.Matches(labels))
                return false;
        }
        return true;
    }

    /// <summary>Whether matchLabels or matchExpressions mention <paramref name="key"/>.</summary>
    public bool HasKey(string key) =>
        MatchLabels.ContainsKey(key) || MatchExpressions.Any(r => r.Key == key);

    public bool HasKeyPrefix(string prefix) =>
        MatchLabels.Keys.Any(k => k.StartsWith(prefix, StringComparison.Ordinal)) ||
        MatchExpressions.Any(r => r.Key.StartsWith(prefix, StringComparison.Ordinal));

    /// <summary>A copy whose matchLabels has <paramref name="key"/>=<paramref name="value"/> (replacing any value).</summary>
    public EndpointSelector WithMatch(string key, string value) => new(MatchLabels.With(key, value), MatchExpressions);

    public EndpointSelector WithRequirement(LabelSelectorRequirement requirement) =>
        new(MatchLabels, MatchExpressions.Append(requirement).ToArray());

    public override string ToString()
    {
        var parts = MatchLabels.Select(p => $"{p.Key}={p.Value}").Concat(MatchExpressions.Select(r => r.ToString()));
        var text = string.Join(",", parts);
        return text.Length == 0 ? "{}" : text;
    }
}
