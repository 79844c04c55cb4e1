using System.Runtime.InteropServices;
using Trellis.Bpf.Interop;

namespace Trellis.Bpf;

/// <summary>bpffs and cgroup2 mount checks; the only places pins and cgroup programs can live.</summary>
public static unsafe class BpfFs
{
    private const long BpfFsMagic = 0xCAFE4A11;
    private const long Cgroup2Magic = 0x63677270;

    public static bool IsRoot => LibC.GetEuid() == 0;

    public static bool IsBpfFs(string path) => FsType(path) == BpfFsMagic;
    public static bool IsCgroup2(string path) => FsType(path) == Cgroup2Magic;

    private static long FsType(string path)
    {
        byte* buf = stackalloc byte[120]; // struct statfs; f_type is the first field
        return LibC.StatFs(path, buf) == 0 ? *(long*)buf : -1;
    }

    /// <summary>Makes sure <paramref name="path"/> is on a bpffs, mounting one at /sys/fs/bpf if nothing is there.</summary>
    public static void EnsureMounted(string path = "/sys/fs/bpf")
    {
        if (IsBpfFs(path)) return;
        Directory.CreateDirectory(path);
        if (IsBpfFs(path)) return;
        if (LibC.Mount("bpf", path, "bpf", 0, IntPtr.Zero) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new BpfException($"bpffs is not mounted at {path} and mounting it failed; mount it with 'mount -t bpf bpf {path}'", errno);
        }
    }

    /// <summary>Mounts a cgroup2 hierarchy at <paramref name="path"/> (for hosts that only mount cgroup v1).</summary>
    public static void MountCgroup2(string path)
    {
        Directory.CreateDirectory(path);
        if (IsCgroup2(path)) return;
        if (LibC.Mount("cgroup2", path, "cgroup2", 0, IntPtr.Zero) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new BpfException($"cannot mount cgroup2 at {path}; mount it with 'mount -t cgroup2 none {path}'", errno);
        }
    }

    /// <summary>Where Trellis mounts cgroup2 on hosts that mount only cgroup v1.</summary>
    public const string FallbackCgroup2Mount = "/run/trellis/cgroup2";

    /// <summary>The cgroup2 mount (agent and lab must agree on it), mounting one if the host has only v1.</summary>
    public static string EnsureCgroup2()
    {
        var found = FindCgroup2Mount();
        if (found is not null) return found;
        MountCgroup2(FallbackCgroup2Mount);
        return FallbackCgroup2Mount;
    }

    /// <summary>Where a cgroup2 hierarchy is mounted, read from /proc/self/mountinfo, or null.</summary>
    public static string? FindCgroup2Mount()
    {
        foreach (var line in File.ReadLines("/proc/self/mountinfo"))
        {
            var sep = line.IndexOf(" - ", StringComparison.Ordinal);
            if (sep < 0) continue;
            var fsType = line[(sep + 3)..].Split(' ')[0];
            if (fsType == "cgroup2")
                return line[..sep].Split(' ')[4];
        }
        return null;
    }

    public static int IfNameToIndex(string name) => (int)LibC.IfNameToIndex(name);
}
