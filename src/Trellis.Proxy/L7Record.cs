using System.Net;

namespace Trellis.Proxy;

/// <summary>Outcome of one request at the proxy.</summary>
public enum L7Verdict
{
    /// <summary>Allowed and forwarded; the status is the upstream's.</summary>
    Forwarded,
    /// <summary>Denied by the L7 policy; answered 403 without contacting the upstream.</summary>
    Dropped,
    /// <summary>Allowed but the upstream could not be reached or failed mid-way.</summary>
    Error,
}

/// <summary>One HTTP request seen by the proxy; the agent turns these into L7 flows.</summary>
/// <param name="Time">When the request arrived.</param>
/// <param name="ClientIdentity">The client's numeric security identity.</param>
/// <param name="Source">Client ip:port.</param>
/// <param name="Destination">Original destination ip:port.</param>
/// <param name="Method">Request method.</param>
/// <param name="Url">scheme://host/path?query as the client asked.</param>
/// <param name="Protocol">"HTTP/1.1", "HTTP/2", ...</param>
/// <param name="StatusCode">Status sent to the client (0 if none could be sent).</param>
/// <param name="Latency">Arrival to end of the response (or to the failure).</param>
/// <param name="Verdict">Forwarded, dropped by policy, or error.</param>
/// <param name="Reason">Why dropped or failed; null when forwarded.</param>
public sealed record L7Record(
    DateTimeOffset Time,
    uint ClientIdentity,
    IPEndPoint Source,
    IPEndPoint Destination,
    string Method,
    string Url,
    string Protocol,
    int StatusCode,
    TimeSpan Latency,
    L7Verdict Verdict,
    string? Reason)
{
    /// <summary>The drop reason for a policy denial (Cilium's wording).</summary>
    public const string PolicyDeniedReason = "L7 policy denied";
}
