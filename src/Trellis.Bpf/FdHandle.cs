using Microsoft.Win32.SafeHandles;
using Trellis.Bpf.Interop;

namespace Trellis.Bpf;

/// <summary>A kernel file descriptor (map, program, cgroup directory). Closed on dispose when owned.</summary>
public sealed class FdHandle : SafeHandleZeroOrMinusOneIsInvalid
{
    public FdHandle(int fd, bool ownsHandle) : base(ownsHandle) => SetHandle(fd);

    public int Fd => (int)handle;

    protected override bool ReleaseHandle() => LibC.Close((int)handle) == 0;

    /// <summary>Holds a reference for the duration of a native call, so a concurrent Dispose
    /// cannot close (and the kernel reuse) the fd mid-call: <c>using var r = h.Acquire();</c></summary>
    public FdRef Acquire() => new(this);

    public readonly struct FdRef : IDisposable
    {
        private readonly FdHandle _h;
        public int Fd { get; }

        internal FdRef(FdHandle h)
        {
            bool added = false;
            h.DangerousAddRef(ref added);
            _h = h;
            Fd = (int)h.handle;
        }

        public void Dispose() => _h.DangerousRelease();
    }
}
