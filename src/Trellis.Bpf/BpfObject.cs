using System.Runtime.InteropServices;
using System.Text;
using Trellis.Bpf.Interop;

namespace Trellis.Bpf;

public sealed record BpfObjectOptions
{
    /// <summary>Where maps declared with LIBBPF_PIN_BY_NAME are pinned and, if already there, reused.</summary>
    public string? PinRoot { get; init; }
}

/// <summary>An ELF object opened by libbpf: its programs and maps, loaded into the kernel by <see cref="Load"/>.</summary>
public sealed unsafe class BpfObject : IDisposable
{
    private IntPtr _obj;
    private readonly Dictionary<string, BpfProgram> _programs = new();
    private readonly Dictionary<string, BpfMap> _maps = new();

    public string Name { get; }
    public bool Loaded { get; private set; }

    private BpfObject(IntPtr obj, string name)
    {
        _obj = obj;
        Name = name;
        for (IntPtr p = LibBpf.ObjectNextProgram(obj, IntPtr.Zero); p != IntPtr.Zero; p = LibBpf.ObjectNextProgram(obj, p))
        {
            var prog = new BpfProgram(this, p);
            _programs[prog.Name] = prog;
        }
        for (IntPtr m = LibBpf.ObjectNextMap(obj, IntPtr.Zero); m != IntPtr.Zero; m = LibBpf.ObjectNextMap(obj, m))
        {
            var mapName = Marshal.PtrToStringUTF8((IntPtr)LibBpf.MapName(m))!;
            _maps[mapName] = new BpfMap(this, m, mapName);
        }
    }

    public static BpfObject Open(string path, BpfObjectOptions? options = null)
    {
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (IOException e) { throw new BpfException($"open BPF object {path}", 2, e.Message); }
        return Open(bytes, Path.GetFileNameWithoutExtension(path), options);
    }

    /// <summary>Opens an object from memory (e.g. an embedded resource).</summary>
    public static BpfObject Open(ReadOnlySpan<byte> elf, string name, BpfObjectOptions? options = null)
    {
        LibBpfLog.Install();
        var nameBytes = Encoding.UTF8.GetBytes(name + "\0");
        var pinBytes = options?.PinRoot is { } root ? Encoding.UTF8.GetBytes(root + "\0") : null;
        fixed (byte* buf = elf)
        fixed (byte* pName = nameBytes)
        fixed (byte* pPin = pinBytes)
        {
            var opts = new BpfObjectOpenOpts { Sz = (nuint)sizeof(BpfObjectOpenOpts), ObjectName = pName, PinRootPath = pPin };
            // libbpf keeps its own copy of the ELF, so the span may go away after this call.
            var obj = BpfException.CheckPtr(LibBpf.ObjectOpenMem(buf, (nuint)elf.Length, &opts), $"open BPF object {name}");
            return new BpfObject(obj, name);
        }
    }

    /// <summary>Creates maps (or reuses pinned ones), loads and verifies every program.</summary>
    public void Load()
    {
        ThrowIfDisposed();
        BpfException.Check(LibBpf.ObjectLoad(_obj), $"load BPF object {Name}");
        Loaded = true;
    }

    public IReadOnlyCollection<BpfProgram> Programs => _programs.Values;
    public IReadOnlyCollection<BpfMap> Maps => _maps.Values;

    public BpfProgram Program(string name) =>
        _programs.TryGetValue(name, out var p) ? p
            : throw new KeyNotFoundException($"BPF object {Name} has no program '{name}' (it has: {string.Join(", ", _programs.Keys)})");

    public BpfMap Map(string name) =>
        _maps.TryGetValue(name, out var m) ? m
            : throw new KeyNotFoundException($"BPF object {Name} has no map '{name}' (it has: {string.Join(", ", _maps.Keys)})");

    internal IntPtr Handle
    {
        get { ThrowIfDisposed(); return _obj; }
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_obj == IntPtr.Zero, this);

    public void Dispose()
    {
        var obj = Interlocked.Exchange(ref _obj, IntPtr.Zero);
        if (obj != IntPtr.Zero)
            LibBpf.ObjectClose(obj); // closes the object's fds; pinned maps and attached programs stay in the kernel
    }
}
