using Trellis.Bpf.Interop;

namespace Trellis.Bpf;

public enum TcAttachPoint
{
    Ingress = 1,
    Egress = 2,
}

/// <summary>A TC BPF filter on a clsact hook. It lives in the kernel until detached or the device
/// goes away — not tied to this process — which is what keeps the datapath up across agent restarts.</summary>
public sealed record TcFilter(int Ifindex, TcAttachPoint Point, uint Handle, uint Priority, uint ProgramId);

/// <summary>TC attachment through libbpf's bpf_tc_* (netlink). Debian 12's libbpf 1.1 has no tcx links.</summary>
public static unsafe class Tc
{
    /// <summary>Attaches (or atomically replaces) the program at handle/priority on the device's clsact hook,
    /// creating the clsact qdisc if needed.</summary>
    public static TcFilter Attach(int ifindex, TcAttachPoint point, BpfProgram program, uint handle = 1, uint priority = 1)
    {
        LibBpfLog.Install();
        var hook = Hook(ifindex, point);
        int r = LibBpf.TcHookCreate(&hook);
        if (r < 0 && r != -17 /* EEXIST */)
            BpfException.Check(r, $"create clsact qdisc on ifindex {ifindex}");
        var opts = new BpfTcOpts
        {
            Sz = (nuint)sizeof(BpfTcOpts),
            ProgFd = program.Fd,
            Handle = handle,
            Priority = priority,
            Flags = 1, // BPF_TC_F_REPLACE: swap in place, no window without a program
        };
        BpfException.Check(LibBpf.TcAttach(&hook, &opts), $"attach {program.Name} to tc {point.ToString().ToLowerInvariant()} of ifindex {ifindex}");
        return new TcFilter(ifindex, point, handle, priority, opts.ProgId);
    }

    /// <summary>The program id at handle/priority, or null if none is attached there.</summary>
    public static uint? Query(int ifindex, TcAttachPoint point, uint handle = 1, uint priority = 1)
    {
        var hook = Hook(ifindex, point);
        var opts = new BpfTcOpts { Sz = (nuint)sizeof(BpfTcOpts), Handle = handle, Priority = priority };
        int r = LibBpf.TcQuery(&hook, &opts);
        if (r == -2 || r == -22 /* no filter / no qdisc */) return null;
        BpfException.Check(r, $"query tc {point} of ifindex {ifindex}");
        return opts.ProgId;
    }

    public static bool Detach(int ifindex, TcAttachPoint point, uint handle = 1, uint priority = 1)
    {
        var hook = Hook(ifindex, point);
        var opts = new BpfTcOpts { Sz = (nuint)sizeof(BpfTcOpts), Handle = handle, Priority = priority };
        int r = LibBpf.TcDetach(&hook, &opts);
        if (r == -2 || r == -22 || r == -19 /* ENODEV */) return false;
        BpfException.Check(r, $"detach tc {point} of ifindex {ifindex}");
        return true;
    }

    /// <summary>Removes the clsact qdisc (and so every filter on both hooks).</summary>
    public static void DestroyHooks(int ifindex)
    {
        var hook = Hook(ifindex, TcAttachPoint.Ingress | TcAttachPoint.Egress);
        int r = LibBpf.TcHookDestroy(&hook);
        if (r < 0 && r != -2 && r != -22 && r != -19)
            BpfException.Check(r, $"destroy clsact qdisc on ifindex {ifindex}");
    }

    private static BpfTcHook Hook(int ifindex, TcAttachPoint point) =>
        new() { Sz = (nuint)sizeof(BpfTcHook), Ifindex = ifindex, AttachPoint = (int)point };
}
