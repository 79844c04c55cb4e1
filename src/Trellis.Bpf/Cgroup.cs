using System.Runtime.InteropServices;
using Trellis.Bpf.Interop;

namespace Trellis.Bpf;

public enum CgroupAttachType
{
    InetIngress = 0,
    InetEgress = 1,
    SockOps = 3,
    Inet4Connect = 10,
    Udp4Sendmsg = 14,
    Udp4Recvmsg = 19,
    Inet4Getpeername = 29,
    InetSockRelease = 34,
}

/// <summary>Cgroup program attachment with BPF_PROG_ATTACH (BPF_F_ALLOW_MULTI). Like TC filters these stay
/// attached after the process exits, until detached or the cgroup is removed.</summary>
public static unsafe class Cgroup
{
    private const uint AllowMulti = 2;

    public static void Attach(string cgroupPath, BpfProgram program, CgroupAttachType type)
    {
        using var cg = OpenCgroup(cgroupPath);
        BpfException.Check(LibBpf.ProgAttach(program.Fd, cg.Fd, (int)type, AllowMulti), $"attach {program.Name} to cgroup {cgroupPath} ({type})");
    }

    public static bool Detach(string cgroupPath, BpfProgram program, CgroupAttachType type)
    {
        using var cg = OpenCgroup(cgroupPath);
        int r = LibBpf.ProgDetach2(program.Fd, cg.Fd, (int)type);
        if (r == -2) return false;
        BpfException.Check(r, $"detach {program.Name} from cgroup {cgroupPath} ({type})");
        return true;
    }

    /// <summary>Detaches the program with kernel id <paramref name="programId"/> (e.g. one a previous process attached).</summary>
    public static bool DetachById(string cgroupPath, uint programId, CgroupAttachType type)
    {
        int progFd = LibBpf.ProgGetFdById(programId);
        if (progFd < 0) return false; // already gone
        using var prog = new FdHandle(progFd, ownsHandle: true);
        using var cg = OpenCgroup(cgroupPath);
        int r = LibBpf.ProgDetach2(prog.Fd, cg.Fd, (int)type);
        if (r == -2) return false;
        BpfException.Check(r, $"detach program id {programId} from cgroup {cgroupPath} ({type})");
        return true;
    }

    /// <summary>Ids of the programs attached directly to the cgroup at <paramref name="type"/>.</summary>
    public static uint[] Query(string cgroupPath, CgroupAttachType type)
    {
        using var cg = OpenCgroup(cgroupPath);
        var ids = new uint[64];
        uint count = (uint)ids.Length, flags = 0;
        fixed (uint* p = ids)
            BpfException.Check(LibBpf.ProgQuery(cg.Fd, (int)type, 0, &flags, p, &count), $"query cgroup {cgroupPath} ({type})");
        return ids[..(int)count];
    }

    private static FdHandle OpenCgroup(string path)
    {
        int fd = LibC.Open(path, LibC.O_RDONLY | LibC.O_DIRECTORY | LibC.O_CLOEXEC);
        if (fd < 0)
            throw new BpfException($"open cgroup {path}", Marshal.GetLastPInvokeError());
        return new FdHandle(fd, ownsHandle: true);
    }
}
