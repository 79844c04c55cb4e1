using System.Runtime.InteropServices;
using System.Text;
using Trellis.Bpf.Interop;

namespace Trellis.Bpf;

/// <summary>Captures libbpf's own messages (the verifier log among them) so errors can quote them
/// instead of libbpf writing to stderr behind our back.</summary>
public static unsafe class LibBpfLog
{
    private static readonly Lock Gate = new();
    private static readonly Queue<string> Recent = new();
    private const int Keep = 200;
    private static int _installed;

    /// <summary>Optional sink for every libbpf line (level 0 warn, 1 info, 2 debug).</summary>
    public static Action<int, string>? Sink { get; set; }

    /// <summary>Routes libbpf's printing here; idempotent, called by every entry point that may log.</summary>
    public static void Install()
    {
        if (Interlocked.Exchange(ref _installed, 1) == 0)
            LibBpf.SetPrint(&Print);
    }

    [UnmanagedCallersOnly]
    private static int Print(int level, byte* fmt, IntPtr args)
    {
        if (level > 1) return 0; // debug output is noise for us
        const int size = 4096;
        byte* buf = stackalloc byte[size];
        int n = LibC.VSnprintf(buf, size, fmt, args);
        if (n <= 0) return 0;
        var line = Encoding.UTF8.GetString(buf, Math.Min(n, size - 1)).TrimEnd();
        lock (Gate)
        {
            Recent.Enqueue(line);
            while (Recent.Count > Keep) Recent.Dequeue();
        }
        Sink?.Invoke(level, line);
        return 0;
    }

    /// <summary>Returns and clears what libbpf said since the last call (for error messages).</summary>
    public static string TakeRecent()
    {
        lock (Gate)
        {
            var s = string.Join(Environment.NewLine, Recent);
            Recent.Clear();
            return s;
        }
    }
}
