using System.Globalization;
using System.Text;

namespace Trellis.Bench.ControlPlane;

/// <summary>Reads the lines appended to a file since the last call (complete lines only).</summary>
internal sealed class LogTail(string path)
{
    private long _offset;
    private readonly StringBuilder _partial = new();

    public List<string> ReadNew()
    {
        var lines = new List<string>();
        if (!File.Exists(path)) return lines;
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        if (fs.Length <= _offset) return lines;
        fs.Seek(_offset, SeekOrigin.Begin);
        var buf = new byte[fs.Length - _offset];
        int n = 0;
        while (n < buf.Length && fs.Read(buf, n, buf.Length - n) is var r && r > 0) n += r;
        _offset += n;
        _partial.Append(Encoding.ASCII.GetString(buf, 0, n));
        var text = _partial.ToString();
        var last = text.LastIndexOf('\n');
        if (last < 0) return lines;
        lines.AddRange(text[..last].Split('\n', StringSplitOptions.RemoveEmptyEntries));
        _partial.Clear().Append(text[(last + 1)..]);
        return lines;
    }
}

/// <summary>What the client sent and the server received, from their logs: the stream (one datagram per ~ms from the
/// client pod) and the probes (new pods' first datagrams). All times are CLOCK_REALTIME nanoseconds.</summary>
internal sealed class Traffic(string work)
{
    private readonly LogTail _client = new(Path.Combine(work, "client.log"));
    private readonly LogTail _server = new(Path.Combine(work, "server.log"));

    /// <summary>Stream datagrams the client sent, in order: (seq, send time).</summary>
    public List<(long Seq, long SendNs)> Sent { get; } = [];
    /// <summary>Stream datagrams the server received: seq -> (send time, receive time).</summary>
    public Dictionary<long, (long SendNs, long RecvNs)> Received { get; } = [];
    /// <summary>The same in the order the server logged them.</summary>
    private readonly List<(long Seq, long SendNs)> _receivedInOrder = [];

    /// <summary>Where the logs stand now: everything logged later was sent later.</summary>
    public (int Sent, int Received) Mark()
    {
        Pump();
        return (Sent.Count, _receivedInOrder.Count);
    }
    /// <summary>Each probe's first datagram the server received: name -> (probe's seq, send time, receive time).</summary>
    public Dictionary<string, (int Seq, long SendNs, long RecvNs)> Probes { get; } = [];
    /// <summary>Stream datagrams the server received although they were sent inside a window judged denied.</summary>
    public int LateReceipts { get; private set; }

    private readonly List<(long From, long To)> _deniedWindows = [];

    public void Pump()
    {
        foreach (var line in _client.ReadNew())
        {
            var f = line.Split(' ');
            if (f.Length == 2 && long.TryParse(f[0], CultureInfo.InvariantCulture, out var seq) && long.TryParse(f[1], CultureInfo.InvariantCulture, out var ns))
                Sent.Add((seq, ns));
        }
        foreach (var line in _server.ReadNew())
        {
            // RECV_NS PORT SRC PAYLOAD...
            var f = line.Split(' ');
            if (f.Length < 5 || !long.TryParse(f[0], CultureInfo.InvariantCulture, out var recv)) continue;
            if (f[1] == Scripts.StreamPort.ToString(CultureInfo.InvariantCulture) && f.Length == 5
                && long.TryParse(f[3], CultureInfo.InvariantCulture, out var seq) && long.TryParse(f[4], CultureInfo.InvariantCulture, out var send))
            {
                if (!Received.TryAdd(seq, (send, recv))) continue;
                _receivedInOrder.Add((seq, send));
                if (_deniedWindows.Any(w => send >= w.From && send < w.To)) LateReceipts++;
            }
            else if (f[1] == Scripts.ProbePort.ToString(CultureInfo.InvariantCulture) && f.Length == 6
                && int.TryParse(f[4], CultureInfo.InvariantCulture, out var probeSeq) && ParseEpochRealtime(f[5]) is { } probeSend)
                Probes.TryAdd(f[3], (probeSeq, probeSend, recv));
        }
    }

    /// <summary>bash's $EPOCHREALTIME: "SECONDS.MICROSECONDS".</summary>
    internal static long? ParseEpochRealtime(string s)
    {
        var dot = s.IndexOf('.');
        if (dot <= 0 || !long.TryParse(s[..dot], CultureInfo.InvariantCulture, out var sec)) return null;
        var frac = s[(dot + 1)..].PadRight(9, '0')[..9];
        return long.TryParse(frac, CultureInfo.InvariantCulture, out var ns) ? sec * 1_000_000_000 + ns : null;
    }

    /// <summary>After a change to "allow" that started at <paramref name="startNs"/>: the send time of the first
    /// datagram sent since then that the server received (the stream was denied before), or null if none yet.</summary>
    public long? FirstAllowedSince(long startNs, (int Sent, int Received) mark)
    {
        long? best = null;
        for (int j = mark.Received; j < _receivedInOrder.Count; j++)
            if (_receivedInOrder[j].SendNs is var send && send >= startNs && (best is null || send < best))
                best = send;
        return best;
    }

    /// <summary>After a change to "deny" that started at <paramref name="startNs"/>: the send time of the first datagram
    /// after the last one the server received, provided the client kept sending for <paramref name="quiet"/> ns after it
    /// (all of them lost) and it was sent before <paramref name="cutoffNs"/> (so a datagram still in flight, or a server
    /// that is a little behind, is not taken for a drop). Null while that cannot be judged yet. Also returns how many
    /// datagrams sent since the start were lost before that point (random loss, not policy).</summary>
    public (long? DeniedNs, int LostBefore) FirstDeniedSince(long startNs, (int Sent, int Received) mark, long cutoffNs, long quiet)
    {
        int i = Sent.FindIndex(mark.Sent, s => s.SendNs >= startNs);
        if (i < 0) return (null, 0);
        long lastReceivedIndex = -1;
        for (int j = i; j < Sent.Count; j++)
            if (Received.ContainsKey(Sent[j].Seq)) lastReceivedIndex = j;
        int first = (int)(lastReceivedIndex < 0 ? i : lastReceivedIndex + 1);
        if (first >= Sent.Count || Sent[first].SendNs > cutoffNs - quiet || Sent[^1].SendNs < Sent[first].SendNs + quiet) return (null, 0);
        int lost = 0;
        for (int j = i; j < first; j++)
            if (!Received.ContainsKey(Sent[j].Seq)) lost++;
        return (Sent[first].SendNs, lost);
    }

    /// <summary>How long before <paramref name="sendNs"/> the client sent its previous datagram: the new verdict took effect
    /// somewhere in that gap, so it is the resolution of a figure (normally the stream's interval; more when the client
    /// was not scheduled).</summary>
    public long? GapBefore(long sendNs)
    {
        for (int j = Sent.Count - 1; j >= 0; j--)
            if (Sent[j].SendNs < sendNs) return sendNs - Sent[j].SendNs;
        return null;
    }

    /// <summary>Remembers that the stream is denied from <paramref name="fromNs"/> until <paramref name="toNs"/>: a datagram
    /// sent in between that the server receives later is counted in <see cref="LateReceipts"/>.</summary>
    public void MarkDenied(long fromNs, long toNs)
    {
        _deniedWindows.Add((fromNs, toNs));
        foreach (var (_, (send, _)) in Received)
            if (send >= fromNs && send < toNs) LateReceipts++;
    }
}
