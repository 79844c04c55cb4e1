using System.Buffers;
using System.Net.Sockets;
using System.Threading.Channels;

namespace Trellis.Proxy.Node;

/// <summary>
/// Sends L7 records to the agent's unix datagram socket. Requests only enqueue (bounded; a full queue drops and
/// counts); one background loop encodes into a reused buffer and sends. No agent listening (restarting) = the
/// record is dropped and counted; the proxy never waits for the agent.
/// </summary>
internal sealed class RecordSender : IAsyncDisposable
{
    private readonly Channel<L7Record> _queue;
    private readonly string _path;
    private readonly Task _loop;
    private long _dropped;

    public RecordSender(string socketPath, int capacity = 16384)
    {
        _path = socketPath;
        _queue = Channel.CreateBounded<L7Record>(new BoundedChannelOptions(capacity)
        {
            FullMode = BoundedChannelFullMode.DropWrite,
            SingleReader = true,
        });
        _loop = Task.Run(RunAsync);
    }

    public long Dropped => Interlocked.Read(ref _dropped);

    public void Post(L7Record record)
    {
        if (!_queue.Writer.TryWrite(record))
            Interlocked.Increment(ref _dropped);
    }

    private async Task RunAsync()
    {
        var buffer = new ArrayBufferWriter<byte>(1024);
        var endPoint = new UnixDomainSocketEndPoint(_path);
        using var socket = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        await foreach (var record in _queue.Reader.ReadAllAsync().ConfigureAwait(false))
        {
            L7RecordWire.Write(buffer, record, Dropped);
            try
            {
                await socket.SendToAsync(buffer.WrittenMemory, SocketFlags.None, endPoint).ConfigureAwait(false);
            }
            catch (SocketException)
            {
                // No agent (restarting) or its queue is full: this record is lost, and counted.
                Interlocked.Increment(ref _dropped);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        _queue.Writer.TryComplete();
        await _loop.ConfigureAwait(false);
    }
}
