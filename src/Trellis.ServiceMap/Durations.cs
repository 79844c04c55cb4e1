using System.Text.RegularExpressions;

namespace Trellis.ServiceMap;

public static partial class Durations
{
    [GeneratedRegex(@"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")]
    private static partial Regex Pattern();

    /// <summary>Parses "30s", "5m", "1h", "1h30m": hours, minutes and seconds, in that order, each at most once.
    /// Returns false (with a message) for anything else, zero, or more than 7 days.</summary>
    public static bool TryParse(string? text, out TimeSpan value, out string error)
    {
        value = default;
        error = "";
        var m = Pattern().Match(text?.Trim() ?? "");
        if (text is null || !m.Success || m.Length == 0)
        {
            error = $"'{text}' is not a duration; use e.g. 30s, 5m, 1h or 1h30m";
            return false;
        }
        long seconds = 0;
        try
        {
            checked
            {
                if (m.Groups[1].Success) seconds += long.Parse(m.Groups[1].Value) * 3600;
                if (m.Groups[2].Success) seconds += long.Parse(m.Groups[2].Value) * 60;
                if (m.Groups[3].Success) seconds += long.Parse(m.Groups[3].Value);
            }
        }
        catch (Exception e) when (e is OverflowException)
        {
            seconds = long.MaxValue;
        }
        if (seconds <= 0)
        {
            error = $"'{text}' is zero; the window must be at least 1s";
            return false;
        }
        if (seconds > 7 * 24 * 3600)
        {
            error = $"'{text}' is longer than 7 days (168h)";
            return false;
        }
        value = TimeSpan.FromSeconds(seconds);
        return true;
    }
}
