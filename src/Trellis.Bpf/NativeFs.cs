using System.Runtime.InteropServices;
using Trellis.Bpf.Interop;

namespace Trellis.Bpf;

/// <summary>The few POSIX file calls .NET lacks, kept here because this is the one native project.</summary>
public static partial class NativeFs
{
    /// <summary>fsync on a directory, so a rename inside it is durable.</summary>
    public static void FsyncDirectory(string path)
    {
        int fd = LibC.Open(path, LibC.O_RDONLY | LibC.O_DIRECTORY | LibC.O_CLOEXEC);
        if (fd < 0)
            throw new IOException($"open directory {path}: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
        try
        {
            if (Fsync(fd) != 0)
                throw new IOException($"fsync directory {path}: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
        }
        finally
        {
            LibC.Close(fd);
        }
    }

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int Fsync(int fd);
}
