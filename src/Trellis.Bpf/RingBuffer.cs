using System.Runtime.InteropServices;
using Trellis.Bpf.Interop;

namespace Trellis.Bpf;

public delegate void RingBufferHandler(ReadOnlySpan<byte> record);

/// <summary>Reads a BPF_MAP_TYPE_RINGBUF map with libbpf's epoll-based consumer.
/// The handler runs on the thread that calls <see cref="Poll"/>; the span is only valid during the call.</summary>
public sealed unsafe class RingBuffer : IDisposable
{
    private IntPtr _rb;
    private GCHandle _self;
    private readonly RingBufferHandler _handler;
    private readonly BpfMap _map;

    public RingBuffer(BpfMap map, RingBufferHandler handler)
    {
        if (map.Type != BpfMapType.RingBuf)
            throw new ArgumentException($"map {map.Name} is a {map.Type} map, not a ring buffer");
        _map = map;
        _handler = handler;
        _self = GCHandle.Alloc(this);
        _rb = LibBpf.RingBufferNew(map.Fd, &OnSample, GCHandle.ToIntPtr(_self), IntPtr.Zero);
        if (_rb == IntPtr.Zero)
        {
            var errno = Marshal.GetLastPInvokeError();
            _self.Free();
            throw new BpfException($"open ring buffer {map.Name}", errno, LibBpfLog.TakeRecent());
        }
    }

    [UnmanagedCallersOnly]
    private static int OnSample(IntPtr ctx, IntPtr data, nuint size)
    {
        var self = (RingBuffer)GCHandle.FromIntPtr(ctx).Target!;
        try
        {
            self._handler(new ReadOnlySpan<byte>((void*)data, (int)size));
        }
        catch (Exception e)
        {
            // An exception must not unwind through libbpf's native frames.
            self.HandlerErrors++;
            self.LastHandlerError = e;
        }
        return 0;
    }

    public long HandlerErrors { get; private set; }
    public Exception? LastHandlerError { get; private set; }

    /// <summary>Waits up to <paramref name="timeoutMs"/> for records and consumes all available.
    /// Returns the number consumed.</summary>
    public int Poll(int timeoutMs)
    {
        ObjectDisposedException.ThrowIf(_rb == IntPtr.Zero, this);
        int n = LibBpf.RingBufferPoll(_rb, timeoutMs);
        if (n == -4 /* EINTR */) return 0;
        return BpfException.Check(n, $"poll ring buffer {_map.Name}");
    }

    /// <summary>Consumes every record available now without waiting (for producers that submit without waking
    /// the consumer). Returns the number consumed.</summary>
    public int Consume()
    {
        ObjectDisposedException.ThrowIf(_rb == IntPtr.Zero, this);
        return BpfException.Check(LibBpf.RingBufferConsume(_rb), $"consume ring buffer {_map.Name}");
    }

    public void Dispose()
    {
        var rb = Interlocked.Exchange(ref _rb, IntPtr.Zero);
        if (rb != IntPtr.Zero)
        {
            LibBpf.RingBufferFree(rb);
            _self.Free();
        }
    }
}
