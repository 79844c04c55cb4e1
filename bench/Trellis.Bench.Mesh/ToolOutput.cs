using System.Globalization;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Trellis.Bench.Common;

namespace Trellis.Bench.Mesh;

/// <summary>What the mesh's other tools report: HAProxy's counters, iperf3's throughput.</summary>
internal static class ToolOutput
{
    /// <summary>Per frontend of a HAProxy (its stats socket, "show stat"): sessions (stot) and HTTP requests
    /// (req_tot, HTTP mode only). The bench proves with these that a run really went through the proxies.</summary>
    public static Dictionary<string, (long Sessions, long Requests)> HaproxyFrontends(string statsSocket)
    {
        string csv;
        try
        {
            using var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            s.Connect(new UnixDomainSocketEndPoint(statsSocket));
            s.Send(Encoding.ASCII.GetBytes("show stat\n"));
            using var stream = new NetworkStream(s, ownsSocket: false);
            using var reader = new StreamReader(stream, Encoding.ASCII);
            csv = reader.ReadToEnd();
        }
        catch (Exception e) when (e is SocketException or IOException)
        {
            throw new BenchException($"cannot read HAProxy's stats from {statsSocket}: {e.Message}");
        }
        var lines = csv.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        if (lines.Length == 0 || !lines[0].StartsWith("# ", StringComparison.Ordinal))
            throw new BenchException($"unexpected answer to 'show stat' on {statsSocket}: {csv}");
        var header = lines[0][2..].Split(',');
        int px = Array.IndexOf(header, "pxname"), sv = Array.IndexOf(header, "svname"), stot = Array.IndexOf(header, "stot"), req = Array.IndexOf(header, "req_tot");
        var result = new Dictionary<string, (long, long)>();
        foreach (var l in lines.Skip(1))
        {
            var f = l.Split(',');
            if (f.Length <= Math.Max(stot, req) || f[sv] != "FRONTEND") continue;
            static long N(string v) => long.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out var n) ? n : 0;
            result[f[px]] = (N(f[stot]), N(f[req]));
        }
        return result;
    }

    /// <summary>Received throughput of an iperf3 -J run (the receiver's view: what arrived, not what was queued).</summary>
    public static (double BitsPerSecond, long Bytes) ParseIperf(string json)
    {
        try
        {
            var root = JsonDocument.Parse(json).RootElement;
            if (root.TryGetProperty("error", out var error))
                throw new BenchException($"iperf3 reported an error: {error.GetString()}");
            var received = root.GetProperty("end").GetProperty("sum_received");
            var bps = received.GetProperty("bits_per_second").GetDouble();
            var bytes = received.GetProperty("bytes").GetInt64();
            if (bps <= 0 || bytes <= 0)
                throw new BenchException("iperf3 transferred nothing");
            return (bps, bytes);
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            throw new BenchException($"cannot read iperf3's JSON output ({e.Message}): {json}");
        }
    }
}
