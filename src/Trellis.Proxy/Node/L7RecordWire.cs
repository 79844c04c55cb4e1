using System.Buffers;
using System.Net;
using System.Text.Json;

namespace Trellis.Proxy.Node;

/// <summary>
/// One L7 record as one datagram from the proxy to the agent (JSON; small, self-describing, versioned by its
/// fields). <c>dropped</c> carries the proxy's running count of records it could not queue or send, so the agent
/// can report losses without a second channel.
/// </summary>
public static class L7RecordWire
{
    /// <summary>Encodes into <paramref name="buffer"/> (cleared first; reused by the caller: no allocation per record).</summary>
    public static void Write(ArrayBufferWriter<byte> buffer, L7Record r, long dropped)
    {
        buffer.ResetWrittenCount();
        using var w = new Utf8JsonWriter(buffer);
        w.WriteStartObject();
        w.WriteNumber("t", r.Time.ToUnixTimeMilliseconds() * 1000 + r.Time.Ticks / 10 % 1000); // µs
        w.WriteNumber("id", r.ClientIdentity);
        w.WriteString("src", r.Source.ToString());
        w.WriteString("dst", r.Destination.ToString());
        w.WriteString("method", r.Method);
        w.WriteString("url", r.Url.Length > 4096 ? r.Url[..4096] : r.Url);
        w.WriteString("proto", r.Protocol);
        w.WriteNumber("code", r.StatusCode);
        w.WriteNumber("latencyNs", r.Latency.Ticks * 100);
        w.WriteString("verdict", r.Verdict switch
        {
            L7Verdict.Forwarded => "forwarded",
            L7Verdict.Dropped => "dropped",
            _ => "error",
        });
        if (r.Reason is not null)
            w.WriteString("reason", r.Reason);
        w.WriteNumber("dropped", dropped);
        w.WriteEndObject();
    }

    /// <summary>Decodes one datagram; throws <see cref="FormatException"/> when it is not a record.</summary>
    public static (L7Record Record, long Dropped) Read(ReadOnlySpan<byte> datagram)
    {
        try
        {
            var reader = new Utf8JsonReader(datagram);
            using var doc = JsonDocument.ParseValue(ref reader);
            var o = doc.RootElement;
            var micros = o.GetProperty("t").GetInt64();
            var record = new L7Record(
                DateTimeOffset.FromUnixTimeMilliseconds(micros / 1000).AddTicks(micros % 1000 * 10),
                o.GetProperty("id").GetUInt32(),
                IPEndPoint.Parse(o.GetProperty("src").GetString()!),
                IPEndPoint.Parse(o.GetProperty("dst").GetString()!),
                o.GetProperty("method").GetString()!,
                o.GetProperty("url").GetString()!,
                o.GetProperty("proto").GetString()!,
                o.GetProperty("code").GetInt32(),
                TimeSpan.FromTicks(o.GetProperty("latencyNs").GetInt64() / 100),
                o.GetProperty("verdict").GetString() switch
                {
                    "forwarded" => L7Verdict.Forwarded,
                    "dropped" => L7Verdict.Dropped,
                    "error" => L7Verdict.Error,
                    var v => throw new FormatException($"unknown verdict '{v}'"),
                },
                o.TryGetProperty("reason", out var reason) ? reason.GetString() : null);
            return (record, o.TryGetProperty("dropped", out var d) ? d.GetInt64() : 0);
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException or ArgumentException)
        {
            throw new FormatException($"bad L7 record datagram: {e.Message}", e);
        }
    }
}
