using System.Runtime.InteropServices;

namespace Trellis.Bpf.Tests;

/// <summary>The embedded bpf/testprogs.o and a unique bpffs directory per test, removed on dispose.</summary>
internal static class TestPrograms
{
    public static byte[] Elf()
    {
        using var s = typeof(TestPrograms).Assembly.GetManifestResourceStream("bpf/testprogs.o")
            ?? throw new InvalidOperationException("bpf/testprogs.o is not embedded: was tests/Trellis.Bpf.Tests/bpf/testprogs.c built?");
        var buf = new byte[s.Length];
        s.ReadExactly(buf);
        return buf;
    }

    // Without a pin root libbpf would pin by-name maps straight under /sys/fs/bpf, shared by every test and
    // left behind: each object gets its own scratch root instead, all removed when the test process exits.
    private static readonly string ScratchRoot = $"/sys/fs/bpf/trellis-test-bpf-{Environment.ProcessId}";

    static TestPrograms()
    {
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            if (Directory.Exists(ScratchRoot)) Directory.Delete(ScratchRoot, recursive: true);
        };
    }

    private static string NewScratchRoot()
    {
        var d = Path.Combine(ScratchRoot, Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(d);
        return d;
    }

    public static BpfObject Open(string? pinRoot = null) =>
        BpfObject.Open(Elf(), "testprogs", new BpfObjectOptions { PinRoot = pinRoot ?? NewScratchRoot() });

    public static BpfObject Load(string? pinRoot = null)
    {
        var obj = Open(pinRoot);
        try { obj.Load(); }
        catch { obj.Dispose(); throw; }
        return obj;
    }
}

/// <summary>Record written by record_packet (struct test_record in testprogs.c).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct TestRecord
{
    public const uint ExpectedMagic = 0x7e11150f;
    public uint Magic;
    public uint Len;
    public uint Ifindex;
    public uint Protocol;
}

/// <summary>A directory on bpffs named after the test, deleted with everything pinned in it.</summary>
internal sealed class PinDir : IDisposable
{
    public string Path { get; }

    public PinDir(string testName)
    {
        BpfFs.EnsureMounted();
        Path = $"/sys/fs/bpf/trellis-test-{testName}-{Guid.NewGuid().ToString("N")[..8]}";
        Directory.CreateDirectory(Path);
    }

    public void Dispose()
    {
        if (Directory.Exists(Path)) Directory.Delete(Path, recursive: true);
    }
}

internal static class Packets
{
    /// <summary>Ethernet + IPv4 + UDP, enough for a tc program under BPF_PROG_TEST_RUN.</summary>
    public static byte[] Udp(int payload = 8)
    {
        var p = new byte[14 + 20 + 8 + payload];
        p[12] = 0x08; p[13] = 0x00;            // ETH_P_IP
        p[14] = 0x45;                           // IPv4, IHL 5
        var total = 20 + 8 + payload;
        p[16] = (byte)(total >> 8); p[17] = (byte)total;
        p[22] = 64; p[23] = 17;                 // TTL, UDP
        p[26] = 10; p[29] = 1; p[30] = 10; p[33] = 2; // 10.0.0.1 -> 10.0.0.2
        p[34] = 0x30; p[35] = 0x39; p[36] = 0x00; p[37] = 0x35; // 12345 -> 53
        p[38] = (byte)((8 + payload) >> 8); p[39] = (byte)(8 + payload);
        return p;
    }
}
