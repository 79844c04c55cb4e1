using Trellis.Bpf;

namespace Trellis.Datapath;

/// <summary>The compiled BPF objects embedded in this assembly by the build (bpf/*.c).</summary>
public static class BpfObjects
{
    public const string Lxc = "lxc";
    public const string Abi = "abi";
    public const string Sock = "sock";
    public const string Netdev = "netdev";

    public static byte[] Read(string name)
    {
        using var s = typeof(BpfObjects).Assembly.GetManifestResourceStream($"bpf/{name}.o")
            ?? throw new InvalidOperationException($"BPF object {name}.o is not embedded: was bpf/{name}.c built?");
        var buf = new byte[s.Length];
        s.ReadExactly(buf);
        return buf;
    }

    public static BpfObject Open(string name, string? pinRoot) =>
        BpfObject.Open(Read(name), name, new BpfObjectOptions { PinRoot = pinRoot });

    /// <summary>Writes the object to a file (for tools that read ELF from disk, e.g. BTF parsing).</summary>
    public static string Extract(string name, string directory)
    {
        Directory.CreateDirectory(directory);
        var path = Path.Combine(directory, $"{name}.o");
        File.WriteAllBytes(path, Read(name));
        return path;
    }
}
