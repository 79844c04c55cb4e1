using System.Runtime.InteropServices;

namespace Trellis.Bpf;

/// <summary>A failed kernel or libbpf call, with the operation, the errno and what libbpf logged.</summary>
public sealed class BpfException : Exception
{
    public string Operation { get; }
    public int Errno { get; }

    public BpfException(string operation, int errno, string? detail = null)
        : base(Format(operation, errno, detail))
    {
        Operation = operation;
        Errno = errno;
    }

    private static string Format(string operation, int errno, string? detail)
    {
        var msg = $"{operation}: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})";
        if (errno == 1 /* EPERM */)
            msg += ". BPF needs root (CAP_BPF and CAP_NET_ADMIN)";
        return string.IsNullOrWhiteSpace(detail) ? msg : msg + Environment.NewLine + detail;
    }

    /// <summary>Throws for a libbpf int result (negative errno).</summary>
    internal static int Check(int result, string operation)
    {
        if (result < 0)
            throw new BpfException(operation, -result, LibBpfLog.TakeRecent());
        return result;
    }

    internal static IntPtr CheckPtr(IntPtr result, string operation)
    {
        if (result == IntPtr.Zero)
            throw new BpfException(operation, Marshal.GetLastPInvokeError(), LibBpfLog.TakeRecent());
        return result;
    }
}
