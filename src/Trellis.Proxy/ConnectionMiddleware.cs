using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Core.Features;
using Microsoft.AspNetCore.Http.Features;

namespace Trellis.Proxy;

/// <summary>
/// Runs once per accepted client connection, before Kestrel's HTTP layer: resolves the original destination
/// (refusing the connection if there is none) and detects HTTP/2 prior knowledge (h2c).
/// </summary>
/// <remarks>
/// Kestrel (.NET 10) serves an `Http1AndHttp2` endpoint without TLS as HTTP/1.1 only, since there is no ALPN
/// (dotnet/aspnetcore#56984). Redirected traffic is whatever the client spoke to its destination, so both must work
/// on one listener. We peek at the first bytes without consuming them; on the exact RFC 9113 §3.4 preface we
/// present Kestrel an ALPN result of "h2", which is the only input its protocol selection honours. That marker
/// makes Kestrel's transport scheme "https", so the server is run with AllowAlternateSchemes and the request keeps
/// the client's `:scheme` (http).
/// </remarks>
internal sealed class ConnectionMiddleware(
    ConnectionDelegate next,
    IOriginalDestinationResolver resolver,
    TimeSpan prefaceTimeout)
{
    private static ReadOnlySpan<byte> Preface => "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8;

    public async Task OnConnectionAsync(ConnectionContext connection)
    {
        // The accepted socket's own address: for a connection the datapath assigned, the original destination.
        var socket = connection.Features.Get<Microsoft.AspNetCore.Connections.Features.IConnectionSocketFeature>()?.Socket;
        var actualLocal = socket is null ? null : TransparentSockets.LocalEndPointOf(socket);
        if ((actualLocal ?? connection.LocalEndPoint) is not IPEndPoint local
            || connection.RemoteEndPoint is not IPEndPoint remote
            || !resolver.TryResolve(local, remote, out var original))
        {
            connection.Abort(new ConnectionAbortedException("no original destination for this connection"));
            return;
        }

        connection.Features.Set(new ProxyConnection(remote, original));

        bool isH2;
        // Not linked to ConnectionClosed: a client's FIN (a half-close right after its request) ends the read by
        // itself, and must not abort the connection (see HalfCloseConnection).
        using (var timeout = new CancellationTokenSource())
        {
            timeout.CancelAfter(prefaceTimeout);
            try
            {
                isH2 = await StartsWithHttp2PrefaceAsync(connection.Transport.Input, timeout.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                connection.Abort(new ConnectionAbortedException("client sent no request in time"));
                return;
            }
        }

        if (isH2)
        {
            connection.Features.Set<ITlsConnectionFeature>(H2cPriorKnowledge.Instance);
            connection.Features.Set<ITlsApplicationProtocolFeature>(H2cPriorKnowledge.Instance);
        }

        // HTTP/1.1 clients may half-close after their request (HTTP/2 clients do not: the protocol has its own end of stream).
        await next(isH2 ? connection : new HalfCloseConnection(connection, socket)).ConfigureAwait(false);
    }

    /// <summary>Reads until the preface matches or cannot match; consumes nothing.</summary>
    private static async ValueTask<bool> StartsWithHttp2PrefaceAsync(PipeReader input, CancellationToken cancellationToken)
    {
        while (true)
        {
            var result = await input.ReadAsync(cancellationToken).ConfigureAwait(false);
            var buffer = result.Buffer;
            var match = Match(buffer);
            if (match != PrefaceMatch.NeedMore || result.IsCompleted || result.IsCanceled)
            {
                // Examined nothing, so Kestrel's first read returns these bytes at once.
                input.AdvanceTo(buffer.Start);
                return match == PrefaceMatch.Yes;
            }
            input.AdvanceTo(buffer.Start, buffer.End);
        }
    }

    private enum PrefaceMatch { No, Yes, NeedMore }

    private static PrefaceMatch Match(in ReadOnlySequence<byte> buffer)
    {
        var length = (int)Math.Min(buffer.Length, Preface.Length);
        Span<byte> head = stackalloc byte[24];
        buffer.Slice(0, length).CopyTo(head);
        if (!head[..length].SequenceEqual(Preface[..length]))
        {
            return PrefaceMatch.No;
        }
        return length == Preface.Length ? PrefaceMatch.Yes : PrefaceMatch.NeedMore;
    }

    /// <summary>Stands in for a TLS handshake that negotiated "h2"; see the class remarks.</summary>
    private sealed class H2cPriorKnowledge : ITlsConnectionFeature, ITlsApplicationProtocolFeature
    {
        public static readonly H2cPriorKnowledge Instance = new();

        private static readonly ReadOnlyMemory<byte> H2 = "h2"u8.ToArray();

        public ReadOnlyMemory<byte> ApplicationProtocol => H2;

        public X509Certificate2? ClientCertificate
        {
            get => null;
            set { }
        }

        public Task<X509Certificate2?> GetClientCertificateAsync(CancellationToken cancellationToken) =>
            Task.FromResult<X509Certificate2?>(null);
    }
}
