using System.Globalization;
using System.Text.RegularExpressions;

namespace Trellis.Bench.Common;

/// <summary>What one wrk run measured.</summary>
public sealed record WrkResult(double RequestsPerSec, long Requests, double P50Us, double P99Us);

/// <summary>A wrk run whose figures must not be reported (socket errors, bad responses, unparseable output).</summary>
public sealed class WrkException(string message) : Exception(message);

/// <summary>Parses the text wrk 4 prints with --latency. Every figure it returns was found in the output;
/// a run with socket errors or non-2xx/3xx responses is refused rather than reported.</summary>
public static partial class WrkOutput
{
    public static WrkResult Parse(string output)
    {
        var errors = SocketErrors().Match(output);
        if (errors.Success && errors.Groups.Cast<Group>().Skip(1).Any(g => long.Parse(g.Value, CultureInfo.InvariantCulture) != 0))
            throw new WrkException($"wrk reported socket errors ({errors.Value.Trim()})");
        var non2xx = Non2xx().Match(output);
        if (non2xx.Success && long.Parse(non2xx.Groups[1].Value, CultureInfo.InvariantCulture) != 0)
            throw new WrkException($"wrk reported {non2xx.Groups[1].Value} responses that were not 2xx or 3xx");

        var rps = RequestsPerSec().Match(output);
        if (!rps.Success)
            throw new WrkException("no 'Requests/sec:' line in wrk's output");
        var total = RequestsIn().Match(output);
        if (!total.Success)
            throw new WrkException("no 'N requests in T' line in wrk's output");
        var percentiles = new Dictionary<string, double>();
        var dist = output.IndexOf("Latency Distribution", StringComparison.Ordinal);
        if (dist < 0)
            throw new WrkException("no 'Latency Distribution' in wrk's output (was --latency given?)");
        foreach (Match m in Percentile().Matches(output[dist..]))
            percentiles[m.Groups["p"].Value] = ToMicroseconds(m.Groups["v"].Value, m.Groups["u"].Value);
        if (!percentiles.TryGetValue("50", out var p50) || !percentiles.TryGetValue("99", out var p99))
            throw new WrkException("the 50% and 99% lines of wrk's latency distribution are missing");

        var result = new WrkResult(double.Parse(rps.Groups[1].Value, CultureInfo.InvariantCulture),
            long.Parse(total.Groups[1].Value, CultureInfo.InvariantCulture), p50, p99);
        if (result.Requests <= 0 || result.RequestsPerSec <= 0)
            throw new WrkException("wrk completed no requests");
        return result;
    }

    /// <summary>wrk prints times as a number and one of us, ms, s, m, h (units.c).</summary>
    public static double ToMicroseconds(string value, string unit)
    {
        var v = double.Parse(value, CultureInfo.InvariantCulture);
        return unit switch
        {
            "us" => v,
            "ms" => v * 1e3,
            "s" => v * 1e6,
            "m" => v * 60e6,
            "h" => v * 3600e6,
            _ => throw new WrkException($"unknown time unit '{unit}' in wrk's output"),
        };
    }

    [GeneratedRegex(@"^Requests/sec:\s+([0-9]+(?:\.[0-9]+)?)\s*$", RegexOptions.Multiline)]
    private static partial Regex RequestsPerSec();

    [GeneratedRegex(@"^\s*([0-9]+) requests in [0-9.]+[a-z]+", RegexOptions.Multiline)]
    private static partial Regex RequestsIn();

    [GeneratedRegex(@"^\s*(?<p>[0-9]+)(?:\.0+)?%\s+(?<v>[0-9]+(?:\.[0-9]+)?)(?<u>us|ms|s|m|h)\s*$", RegexOptions.Multiline)]
    private static partial Regex Percentile();

    [GeneratedRegex(@"Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)")]
    private static partial Regex SocketErrors();

    [GeneratedRegex(@"Non-2xx or 3xx responses: ([0-9]+)")]
    private static partial Regex Non2xx();
}
