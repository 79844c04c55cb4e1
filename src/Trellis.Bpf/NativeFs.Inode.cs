using System.Runtime.InteropServices;

namespace Trellis.Bpf;

public static partial class NativeFs
{
    /// <summary>The inode number of a path, or null if it does not exist. On cgroup v2 a directory's inode
    /// number is the cgroup id that bpf_get_current_cgroup_id() returns.</summary>
    public static unsafe ulong? InodeOf(string path)
    {
        // struct stat on the 64-bit Linux ABIs (x86-64, arm64): st_dev (8 bytes), then st_ino (8 bytes).
        byte* buf = stackalloc byte[256];
        if (Stat(path, buf) != 0) return null;
        return *(ulong*)(buf + 8);
    }

    [LibraryImport("libc", EntryPoint = "stat", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static unsafe partial int Stat(string path, byte* buf);
}
