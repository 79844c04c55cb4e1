namespace Trellis.Bench.Common;

/// <summary>How the benches print what they measured.</summary>
public static class Figures
{
    /// <summary>The median (NaN when there are no values).</summary>
    public static double Median(IEnumerable<double> values)
    {
        var s = values.Order().ToList();
        return s.Count == 0 ? double.NaN : s.Count % 2 == 1 ? s[s.Count / 2] : (s[s.Count / 2 - 1] + s[s.Count / 2]) / 2;
    }

    /// <summary>A latency given in µs, in µs, ms or s.</summary>
    public static string Us(double us) => us < 1000 ? $"{us:0} µs" : us < 1e6 ? $"{us / 1000:0.00} ms" : $"{us / 1e6:0.00} s";

    /// <summary>CPU time (USER_HZ ticks) per request: "-" without requests, "0" without ticks.</summary>
    public static string CpuPerRequest(long ticks, long requests) =>
        requests <= 0 ? "-" : ticks == 0 ? "0" : ticks / ProcFs.UserHz * 1e6 / requests is var us && us < 10 ? $"{us:0.0} µs" : Us(us);
}
