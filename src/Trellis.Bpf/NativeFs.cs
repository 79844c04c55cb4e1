using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
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

    /// <summary>A handle on a directory, for <see cref="Syncfs"/>.</summary>
    public static SafeFileHandle OpenDirectory(string path)
    {
        int fd = LibC.Open(path, LibC.O_RDONLY | LibC.O_DIRECTORY | LibC.O_CLOEXEC);
        if (fd < 0)
            throw new IOException($"open directory {path}: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
        return new SafeFileHandle(fd, ownsHandle: true);
    }

    /// <summary>syncfs(2): writes out and waits for all dirty data and metadata of the filesystem that holds
    /// <paramref name="handle"/>, then flushes the device cache. It reports a writeback error only if the error
    /// happened after the handle was opened (Linux 5.8+), so open the handle before writing the files it is
    /// meant to make durable.</summary>
    public static void Syncfs(SafeFileHandle handle, string pathForErrors)
    {
        if (SyncfsNative(handle) != 0)
            throw new IOException($"syncfs {pathForErrors}: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
    }

    [LibraryImport("libc", EntryPoint = "syncfs", SetLastError = true)]
    private static partial int SyncfsNative(SafeFileHandle fd);
}
