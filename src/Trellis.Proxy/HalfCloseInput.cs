using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http.Features;

namespace Trellis.Proxy;

/// <summary>
/// HTTP/1.1 clients may send their request and then half-close (shutdown(SHUT_WR): `nc -N`, socat) and still expect
/// the answer; the server behind a transparent proxy would give it. Kestrel's socket transport reports the client's
/// FIN as "connection closed" and Kestrel aborts the request in flight (dotnet/aspnetcore#13188). This connection,
/// handed to Kestrel's HTTP layer instead of the transport's, reports the end of the connection only for a reset
/// (or when Kestrel itself ends it), and reports a clean FIN as end of input once Kestrel has examined every byte
/// before it: requests already received are answered, in order, then Kestrel closes.
/// </summary>
internal sealed class HalfCloseConnection : ConnectionContext
{
    private const int TcpCloseWait = 8; // tcpi_state after a FIN from the peer, while we can still send

    private readonly ConnectionContext _inner;
    private readonly CancellationTokenSource _closed = new();
    private readonly CancellationTokenRegistration _registration;

    public HalfCloseConnection(ConnectionContext inner, Socket? socket)
    {
        _inner = inner;
        Transport = new DuplexPipe(new HalfCloseInput(inner.Transport.Input), inner.Transport.Output);
        _registration = inner.ConnectionClosed.Register(() =>
        {
            // A FIN leaves the socket in CLOSE_WAIT: the answer can still be sent, so this is not the end yet.
            if (socket is null || TcpState(socket) != TcpCloseWait)
                _closed.Cancel();
        });
    }

    private static int TcpState(Socket socket)
    {
        Span<byte> info = stackalloc byte[8];
        try
        {
            return socket.GetRawSocketOption(6 /* IPPROTO_TCP */, 11 /* TCP_INFO */, info) > 0 ? info[0] : -1;
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            return -1;
        }
    }

    public override IDuplexPipe Transport { get; set; }
    public override string ConnectionId { get => _inner.ConnectionId; set => _inner.ConnectionId = value; }
    public override IFeatureCollection Features => _inner.Features;
    public override IDictionary<object, object?> Items { get => _inner.Items; set => _inner.Items = value; }
    public override CancellationToken ConnectionClosed { get => _closed.Token; set => throw new NotSupportedException(); }
    public override EndPoint? LocalEndPoint { get => _inner.LocalEndPoint; set => _inner.LocalEndPoint = value; }
    public override EndPoint? RemoteEndPoint { get => _inner.RemoteEndPoint; set => _inner.RemoteEndPoint = value; }

    public override void Abort(ConnectionAbortedException abortReason)
    {
        _inner.Abort(abortReason);
        _closed.Cancel();
    }

    public override void Abort() => Abort(new ConnectionAbortedException("The connection was aborted by the application."));

    public override async ValueTask DisposeAsync()
    {
        await _registration.DisposeAsync().ConfigureAwait(false);
        _closed.Cancel();
        _closed.Dispose();
        await _inner.DisposeAsync().ConfigureAwait(false);
    }
}

/// <summary>Hides the end of input while Kestrel has bytes it has not examined (requests sent before the FIN).</summary>
internal sealed class HalfCloseInput(PipeReader inner) : PipeReader
{
    private ReadOnlySequence<byte> _last;
    private long _pending;    // bytes left unconsumed after the last AdvanceTo
    private long _unexamined; // of those, bytes Kestrel has not examined

    public override async ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default) =>
        Hide(await inner.ReadAsync(cancellationToken).ConfigureAwait(false));

    public override bool TryRead(out ReadResult result)
    {
        if (!inner.TryRead(out result))
            return false;
        result = Hide(result);
        return true;
    }

    private ReadResult Hide(ReadResult result)
    {
        _last = result.Buffer;
        var fresh = result.Buffer.Length - _pending; // arrived since the last hand-over
        if (result.IsCompleted && !result.IsCanceled && fresh + _unexamined > 0)
            return new ReadResult(result.Buffer, isCanceled: false, isCompleted: false);
        return result;
    }

    public override void AdvanceTo(SequencePosition consumed) => AdvanceTo(consumed, consumed);

    public override void AdvanceTo(SequencePosition consumed, SequencePosition examined)
    {
        _pending = _last.Slice(consumed).Length;
        _unexamined = _last.Slice(examined).Length;
        inner.AdvanceTo(consumed, examined);
    }

    public override void CancelPendingRead() => inner.CancelPendingRead();

    public override void Complete(Exception? exception = null) => inner.Complete(exception);
}

/// <summary>A transport whose input is replaced, output unchanged.</summary>
internal sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
{
    public PipeReader Input { get; } = input;
    public PipeWriter Output { get; } = output;
}
