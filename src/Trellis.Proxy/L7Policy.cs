using System.Net;
using Microsoft.AspNetCore.Http;

namespace Trellis.Proxy;

/// <summary>What the policy sees of one HTTP request. Valid only during <see cref="IL7Policy.Check"/>.</summary>
/// <param name="ClientIdentity">The client's numeric security identity.</param>
/// <param name="Destination">The original destination ip:port.</param>
/// <param name="Method">Request method, e.g. GET.</param>
/// <param name="Path">Request path without the query, e.g. /api/v1/items.</param>
/// <param name="Query">Query string including the leading '?', or empty.</param>
/// <param name="Host">Host header (HTTP/1.1) or :authority (HTTP/2).</param>
/// <param name="Headers">All request headers (live view; do not keep).</param>
public readonly record struct L7Request(
    uint ClientIdentity,
    IPEndPoint Destination,
    string Method,
    string Path,
    string Query,
    string Host,
    IHeaderDictionary Headers)
{
    /// <summary>The client's ip:port (the proxied connection's peer); null when the caller does not know it.</summary>
    public IPEndPoint? Client { get; init; }
}

/// <summary>A policy verdict for one request.</summary>
public readonly record struct Decision(bool Allowed, string? Reason)
{
    public static Decision Allow => new(true, null);

    public static Decision Deny(string reason = L7Record.PolicyDeniedReason) => new(false, reason);
}

/// <summary>
/// Per-request L7 policy (Cilium `rules.http`). Called on the request path for every request, including each one
/// on a keep-alive or HTTP/2 connection, so it must be fast and must not block; no I/O.
/// </summary>
public interface IL7Policy
{
    Decision Check(L7Request request);
}

/// <summary>Allows everything (visibility only).</summary>
public sealed class AllowAllPolicy : IL7Policy
{
    public static readonly AllowAllPolicy Instance = new();

    public Decision Check(L7Request request) => Decision.Allow;
}
