using System.Net;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Yarp.ReverseProxy.Forwarder;

namespace Trellis.Proxy;

/// <summary>The per-request path: policy check, then forward to the original destination, then one L7 record.</summary>
internal sealed class ForwardingHandler
{
    private static readonly byte[] AccessDenied = "Access denied\r\n"u8.ToArray();

    private readonly IHttpForwarder _forwarder;
    private readonly UpstreamPool _upstreams;
    private readonly IL7Policy _policy;
    private readonly Action<L7Record>? _onRecord;
    private readonly TimeProvider _time;

    // The upstream speaks what the client spoke to it: h2c prior knowledge for HTTP/2 clients (gRPC), else HTTP/1.1.
    private readonly ForwarderRequestConfig _http1;
    private readonly ForwarderRequestConfig _http2;

    public ForwardingHandler(
        IHttpForwarder forwarder, UpstreamPool upstreams, IL7Policy policy, Action<L7Record>? onRecord, ProxyOptions options)
    {
        _forwarder = forwarder;
        _upstreams = upstreams;
        _policy = policy;
        _onRecord = onRecord;
        _time = options.TimeProvider;
        _http1 = new ForwarderRequestConfig
        {
            ActivityTimeout = options.UpstreamActivityTimeout,
            Version = HttpVersion.Version11,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };
        _http2 = _http1 with { Version = HttpVersion.Version20 };
    }

    public async Task InvokeAsync(HttpContext context)
    {
        var connection = context.Features.Get<ProxyConnection>();
        if (connection is null)
        {
            // Only reachable if the connection middleware was bypassed: never forward without a destination.
            context.Response.StatusCode = StatusCodes.Status500InternalServerError;
            return;
        }

        var start = _time.GetTimestamp();
        var arrived = _time.GetUtcNow();
        var request = context.Request;

        var decision = _policy.Check(new L7Request(
            connection.ClientIdentity,
            connection.Destination,
            request.Method,
            request.Path.Value ?? "/",
            request.QueryString.Value ?? string.Empty,
            request.Host.Value ?? string.Empty,
            request.Headers) { Client = connection.Client });

        if (!decision.Allowed)
        {
            var response = context.Response;
            response.StatusCode = StatusCodes.Status403Forbidden;
            response.ContentType = "text/plain";
            response.ContentLength = AccessDenied.Length;
            await response.Body.WriteAsync(AccessDenied, context.RequestAborted).ConfigureAwait(false);
            Emit(context, connection, arrived, start, L7Verdict.Dropped, decision.Reason ?? L7Record.PolicyDeniedReason);
            return;
        }

        var config = HttpProtocol.IsHttp2(request.Protocol) ? _http2 : _http1;
        ForwarderError error;
        using (var upstream = _upstreams.Acquire(connection.UpstreamSource))
        {
            error = await _forwarder.SendAsync(context, connection.DestinationPrefix, upstream.Invoker, config, PreservingTransformer.Instance)
                .ConfigureAwait(false);
        }

        if (error == ForwarderError.None)
        {
            Emit(context, connection, arrived, start, L7Verdict.Forwarded, null);
            return;
        }

        // YARP has answered 502/504 if it could; a failed connect is "service unavailable", as Envoy reports it.
        if (error == ForwarderError.Request && !context.Response.HasStarted)
        {
            context.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
        }
        Emit(context, connection, arrived, start, L7Verdict.Error, DescribeError(error, context));
    }

    private static string DescribeError(ForwarderError error, HttpContext context)
    {
        var exception = context.Features.Get<IForwarderErrorFeature>()?.Exception;
        var what = error switch
        {
            ForwarderError.Request => "upstream connect or request failed",
            ForwarderError.RequestTimedOut => "upstream timed out",
            ForwarderError.RequestCanceled or ForwarderError.RequestBodyCanceled or ForwarderError.ResponseBodyCanceled
                or ForwarderError.UpgradeRequestCanceled or ForwarderError.UpgradeResponseCanceled => "client canceled",
            ForwarderError.RequestBodyClient or ForwarderError.ResponseBodyClient
                or ForwarderError.UpgradeRequestClient or ForwarderError.UpgradeResponseClient => "client connection failed",
            _ => "upstream failed",
        };
        var inner = exception?.InnerException ?? exception;
        return inner is null ? $"{what} ({error})" : $"{what} ({error}): {inner.Message}";
    }

    private void Emit(
        HttpContext context, ProxyConnection connection, DateTimeOffset arrived, long start, L7Verdict verdict, string? reason)
    {
        if (_onRecord is null)
        {
            return;
        }

        var request = context.Request;
        var record = new L7Record(
            arrived,
            connection.ClientIdentity,
            connection.Client,
            connection.Destination,
            request.Method,
            // An HTTP/1.0 request may have no Host: name the original destination instead of an empty authority.
            string.Concat(request.Scheme, "://", request.Host.HasValue ? request.Host.Value : connection.Destination.ToString(),
                request.Path.Value, request.QueryString.Value),
            request.Protocol,
            context.Response.StatusCode,
            _time.GetElapsedTime(start),
            verdict,
            reason);
        try
        {
            _onRecord(record);
        }
        catch (Exception)
        {
            // A failing consumer must not fail the request; the agent's side reports its own errors.
        }
    }

    /// <summary>YARP's base copy, plus the client's Host (a transparent proxy must not rewrite it). No X-Forwarded-*.</summary>
    private sealed class PreservingTransformer : HttpTransformer
    {
        public static readonly PreservingTransformer Instance = new();

        public override async ValueTask TransformRequestAsync(
            HttpContext httpContext, HttpRequestMessage proxyRequest, string destinationPrefix, CancellationToken cancellationToken)
        {
            await base.TransformRequestAsync(httpContext, proxyRequest, destinationPrefix, cancellationToken).ConfigureAwait(false);
            var host = httpContext.Request.Host;
            proxyRequest.Headers.Host = host.HasValue ? host.Value : null;
        }
    }
}
