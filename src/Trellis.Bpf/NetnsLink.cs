using Trellis.Bpf.Interop;

namespace Trellis.Bpf;

/// <summary>
/// Programs attached to a network namespace through a BPF link (sk_lookup: the only way to attach them). A link
/// lives as long as a reference to it; pinning it on bpffs makes it outlive the process, like TC filters and cgroup
/// programs. A later process replaces the program in the pinned link in place (no moment without one).
/// </summary>
public static unsafe class NetnsLink
{
    private const int SkLookup = 36; // BPF_SK_LOOKUP

    /// <summary>Attaches <paramref name="program"/> (sk_lookup) to the calling thread's network namespace, or swaps it
    /// into the link already pinned at <paramref name="pinPath"/>.</summary>
    public static void AttachSkLookup(BpfProgram program, string pinPath)
    {
        if (File.Exists(pinPath))
        {
            using var link = new FdHandle(BpfException.Check(LibBpf.ObjGet(pinPath), $"open pinned link {pinPath}"), ownsHandle: true);
            BpfException.Check(LibBpf.LinkUpdate(link.Fd, program.Fd, null), $"replace the program of link {pinPath} with {program.Name}");
            return;
        }
        using var netns = File.OpenHandle("/proc/thread-self/ns/net");
        int linkFd = BpfException.Check(LibBpf.LinkCreate(program.Fd, (int)netns.DangerousGetHandle(), SkLookup, null),
            $"attach {program.Name} (sk_lookup) to this network namespace");
        using var created = new FdHandle(linkFd, ownsHandle: true);
        Directory.CreateDirectory(Path.GetDirectoryName(pinPath)!);
        BpfException.Check(LibBpf.ObjPin(created.Fd, pinPath), $"pin link {pinPath}");
    }
}
