using System.Collections;
using System.Diagnostics.CodeAnalysis;
using System.Text;

namespace Trellis.Policy;

/// <summary>An immutable label set, sorted by key (ordinal), with value equality.</summary>
public sealed class Labels : IReadOnlyDictionary<string, string>, IEquatable<Labels>
{
    public static readonly Labels Empty = new(Array.Empty<KeyValuePair<string, string>>());

    private readonly KeyValuePair<string, string>[] _items;
    private string? _key;

    public Labels(IEnumerable<KeyValuePair<string, string>> pairs)
    {
        _items = Normalize(pairs);
    }

    public static Labels From(params (string Key, string Value)[] pairs) =>
        new(pairs.Select(p => KeyValuePair.Create(p.Key, p.Value)));

    /// <summary>Parses "k1=v1,k2=v2" (the <see cref="ToString"/> form); empty text gives <see cref="Empty"/>.</summary>
    public static Labels Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (text.Length == 0)
            return Empty;
        var pairs = new List<KeyValuePair<string, string>>();
        foreach (var part in text.Split(','))
        {
            var eq = part.IndexOf('=');
            if (eq <= 0)
                throw new FormatException($"label '{part}' is not of the form key=value");
            pairs.Add(KeyValuePair.Create(part[..eq], part[(eq + 1)..]));
        }
        return new Labels(pairs);
    }

    /// <summary>The set whose <see cref="Key"/> is <paramref name="key"/> (the inverse of <see cref="Key"/>).</summary>
    public static Labels FromKey(string key)
    {
        ArgumentNullException.ThrowIfNull(key);
        if (key.Length == 0)
            return Empty;
        var pairs = new List<KeyValuePair<string, string>>();
        var sb = new StringBuilder();
        string? name = null;
        for (var i = 0; i <= key.Length; i++)
        {
            if (i == key.Length || key[i] == ',')
            {
                if (name is null)
                    throw new FormatException($"labels key '{key}': '{sb}' has no unescaped '='");
                pairs.Add(KeyValuePair.Create(name, sb.ToString()));
                name = null;
                sb.Clear();
            }
            else if (key[i] == '=' && name is null)
            {
                name = sb.ToString();
                sb.Clear();
            }
            else if (key[i] == '\\' && i + 1 < key.Length)
                sb.Append(key[++i]);
            else
                sb.Append(key[i]);
        }
        return new Labels(pairs);
    }

    /// <summary>A copy with <paramref name="key"/> set to <paramref name="value"/> (replacing any existing value).</summary>
    public Labels With(string key, string value) =>
        new(_items.Where(p => p.Key != key).Append(KeyValuePair.Create(key, value)));

    /// <summary>A stable string identifying this set; escapes ',', '=' and '\' so distinct sets never collide.</summary>
    public string Key => _key ??= BuildKey();

    public int Count => _items.Length;

    public string this[string key] =>
        TryGetValue(key, out var value) ? value : throw new KeyNotFoundException($"label '{key}' is not set");

    public IEnumerable<string> Keys => _items.Select(p => p.Key);

    public IEnumerable<string> Values => _items.Select(p => p.Value);

    public bool ContainsKey(string key) => IndexOf(key) >= 0;

    public bool TryGetValue(string key, [MaybeNullWhen(false)] out string value)
    {
        var i = IndexOf(key);
        value = i >= 0 ? _items[i].Value : null;
        return i >= 0;
    }

    public IEnumerator<KeyValuePair<string, string>> GetEnumerator() => ((IEnumerable<KeyValuePair<string, string>>)_items).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    public bool Equals(Labels? other)
    {
        if (ReferenceEquals(this, other))
            return true;
        if (other is null || other._items.Length != _items.Length)
            return false;
        for (var i = 0; i < _items.Length; i++)
        {
            if (!string.Equals(_items[i].Key, other._items[i].Key, StringComparison.Ordinal) ||
                !string.Equals(_items[i].Value, other._items[i].Value, StringComparison.Ordinal))
                return false;
        }
        return true;
    }

    public override bool Equals(object? obj) => Equals(obj as Labels);

    public override int GetHashCode() => StringComparer.Ordinal.GetHashCode(Key);

    public static bool operator ==(Labels? left, Labels? right) => left is null ? right is null : left.Equals(right);

    public static bool operator !=(Labels? left, Labels? right) => !(left == right);

    public override string ToString() => string.Join(",", _items.Select(p => $"{p.Key}={p.Value}"));

    private int IndexOf(string key)
    {
        int lo = 0, hi = _items.Length - 1;
        while (lo <= hi)
        {
            var mid = (lo + hi) >>> 1;
            var c = string.CompareOrdinal(_items[mid].Key, key);
            if (c == 0)
                return mid;
            if (c < 0)
                lo = mid + 1;
            else
                hi = mid - 1;
        }
        return -1;
    }

    private string BuildKey()
    {
        var sb = new StringBuilder();
        foreach (var (k, v) in _items)
        {
            if (sb.Length > 0)
                sb.Append(',');
            Escape(sb, k);
            sb.Append('=');
            Escape(sb, v);
        }
        return sb.ToString();
    }

    private static void Escape(StringBuilder sb, string s)
    {
        foreach (var c in s)
        {
            if (c is ',' or '=' or '\\')
                sb.Append('\\');
            sb.Append(c);
        }
    }

    private static KeyValuePair<string, string>[] Normalize(IEnumerable<KeyValuePair<string, string>> pairs)
    {
        ArgumentNullException.ThrowIfNull(pairs);
        var items = pairs.ToArray();
        foreach (var (k, v) in items)
        {
            if (string.IsNullOrEmpty(k))
                throw new ArgumentException("label keys must not be empty", nameof(pairs));
            ArgumentNullException.ThrowIfNull(v, nameof(pairs));
        }
        Array.Sort(items, (a, b) => string.CompareOrdinal(a.Key, b.Key));
        for (var i = 1; i < items.Length; i++)
        {
            if (items[i].Key == items[i - 1].Key)
                throw new ArgumentException($"label '{items[i].Key}' is given twice", nameof(pairs));
        }
        return items;
    }
}
