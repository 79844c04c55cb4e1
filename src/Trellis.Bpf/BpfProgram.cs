using System.Runtime.InteropServices;
using Trellis.Bpf.Interop;

namespace Trellis.Bpf;

/// <summary>Result of running a program once (or <c>repeat</c> times) on a crafted input with BPF_PROG_TEST_RUN.</summary>
public sealed record TestRunResult(uint ReturnValue, uint DurationNs, byte[] DataOut);

/// <summary>Kernel-side statistics of a loaded program.</summary>
public sealed record BpfProgramInfo(uint Id, string Name, ulong RunTimeNs, ulong RunCount);

/// <summary>A program of a <see cref="BpfObject"/>. Its fd belongs to the object.</summary>
public sealed unsafe class BpfProgram
{
    private readonly BpfObject _owner;
    private readonly IntPtr _prog;

    public string Name { get; }
    public string SectionName { get; }

    internal BpfProgram(BpfObject owner, IntPtr prog)
    {
        _owner = owner;
        _prog = prog;
        Name = Marshal.PtrToStringUTF8((IntPtr)LibBpf.ProgramName(prog))!;
        SectionName = Marshal.PtrToStringUTF8((IntPtr)LibBpf.ProgramSectionName(prog)) ?? "";
    }

    public BpfProgramType Type => (BpfProgramType)LibBpf.ProgramType(_prog);

    /// <summary>The program fd; valid after the object is loaded, owned by the object.</summary>
    public int Fd
    {
        get
        {
            _ = _owner.Handle; // throws once the object is disposed
            var fd = LibBpf.ProgramFd(_prog);
            if (fd < 0)
                throw new InvalidOperationException($"BPF program {Name} is not loaded: call BpfObject.Load first");
            return fd;
        }
    }

    /// <summary>Pins the program at <paramref name="path"/> on bpffs, replacing an older pin.</summary>
    public void Pin(string path)
    {
        if (File.Exists(path)) File.Delete(path);
        BpfException.Check(LibBpf.ObjPin(Fd, path), $"pin program {Name} at {path}");
    }

    public BpfProgramInfo Info()
    {
        BpfProgInfo info = default;
        uint len = (uint)sizeof(BpfProgInfo);
        BpfException.Check(LibBpf.ObjGetInfoByFd(Fd, &info, &len), $"get info of program {Name}");
        return new BpfProgramInfo(info.Id, Name, info.RunTimeNs, info.RunCnt);
    }

    /// <summary>Information on any loaded program by kernel id (names are truncated to 15 bytes by the kernel),
    /// or null if no such program exists any more.</summary>
    public static BpfProgramInfo? InfoById(uint id)
    {
        int fd = LibBpf.ProgGetFdById(id);
        if (fd < 0) return null;
        using var h = new FdHandle(fd, ownsHandle: true);
        BpfProgInfo info = default;
        uint len = (uint)sizeof(BpfProgInfo);
        BpfException.Check(LibBpf.ObjGetInfoByFd(fd, &info, &len), $"get info of program id {id}");
        var name = Marshal.PtrToStringUTF8((IntPtr)info.Name) ?? "";
        return new BpfProgramInfo(info.Id, name, info.RunTimeNs, info.RunCnt);
    }

    /// <summary>Runs a program that takes no packet, only a context (e.g. sk_lookup's struct bpf_sk_lookup); returns
    /// its return value and the context as the program left it.</summary>
    public (uint ReturnValue, byte[] ContextOut) TestRunContext(ReadOnlySpan<byte> context)
    {
        var ctxOut = new byte[context.Length];
        fixed (byte* pCtx = context)
        fixed (byte* pOut = ctxOut)
        {
            var opts = new BpfTestRunOpts
            {
                Sz = (nuint)sizeof(BpfTestRunOpts),
                CtxIn = pCtx,
                CtxSizeIn = (uint)context.Length,
                CtxOut = pOut,
                CtxSizeOut = (uint)ctxOut.Length,
                Repeat = 1,
            };
            BpfException.Check(LibBpf.ProgTestRun(Fd, &opts), $"test run of program {Name}");
            return (opts.Retval, ctxOut);
        }
    }

    /// <summary>Runs the program in the kernel on <paramref name="data"/> (a packet for TC programs).
    /// <paramref name="context"/> optionally sets the context (e.g. a struct __sk_buff).</summary>
    public TestRunResult TestRun(ReadOnlySpan<byte> data, ReadOnlySpan<byte> context = default, int repeat = 1)
    {
        var outBuf = new byte[Math.Max(data.Length + 256, 256)];
        fixed (byte* pIn = data)
        fixed (byte* pOut = outBuf)
        fixed (byte* pCtx = context)
        {
            var opts = new BpfTestRunOpts
            {
                Sz = (nuint)sizeof(BpfTestRunOpts),
                DataIn = pIn,
                DataSizeIn = (uint)data.Length,
                DataOut = pOut,
                DataSizeOut = (uint)outBuf.Length,
                CtxIn = context.IsEmpty ? null : pCtx,
                CtxSizeIn = (uint)context.Length,
                Repeat = repeat,
            };
            BpfException.Check(LibBpf.ProgTestRun(Fd, &opts), $"test run of program {Name}");
            return new TestRunResult(opts.Retval, opts.Duration, outBuf.AsSpan(0, (int)opts.DataSizeOut).ToArray());
        }
    }
}

public enum BpfProgramType
{
    Unspec = 0,
    SocketFilter = 1,
    SchedCls = 3,
    CgroupSkb = 8,
    CgroupSock = 9,
    SockOps = 13,
    SkMsg = 16,
    CgroupSockAddr = 18,
}
