using System.Text.RegularExpressions;

namespace Trellis.Policy;

/// <summary>Kubernetes syntax rules for names, label keys and label values.</summary>
public static partial class LabelValidation
{
    [GeneratedRegex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
    private static partial Regex Dns1123LabelRegex();

    [GeneratedRegex(@"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")]
    private static partial Regex Dns1123SubdomainRegex();

    [GeneratedRegex("^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")]
    private static partial Regex QualifiedNamePartRegex();

    /// <summary>Null when <paramref name="name"/> is a DNS-1123 label, else what is wrong.</summary>
    public static string? Dns1123LabelError(string name)
    {
        if (name.Length == 0)
            return "must not be empty";
        if (name.Length > 63)
            return $"\"{name}\" is longer than 63 characters";
        return Dns1123LabelRegex().IsMatch(name)
            ? null
            : $"\"{name}\" is not a valid name: use lowercase letters, digits and '-', starting and ending with a letter or digit (e.g. \"my-app\")";
    }

    public static string? LabelKeyError(string key)
    {
        var slash = key.LastIndexOf('/');
        var name = slash >= 0 ? key[(slash + 1)..] : key;
        if (slash >= 0)
        {
            var prefix = key[..slash];
            if (prefix.Length == 0 || prefix.Length > 253 || !Dns1123SubdomainRegex().IsMatch(prefix))
                return $"label key \"{key}\" has an invalid prefix: it must be a lowercase DNS subdomain (e.g. \"example.com/name\")";
        }
        if (name.Length == 0 || name.Length > 63 || !QualifiedNamePartRegex().IsMatch(name))
            return $"label key \"{key}\" is invalid: the name part must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit";
        return null;
    }

    public static string? LabelValueError(string value)
    {
        if (value.Length == 0)
            return null;
        if (value.Length > 63 || !QualifiedNamePartRegex().IsMatch(value))
            return $"label value \"{value}\" is invalid: it must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit";
        return null;
    }
}
