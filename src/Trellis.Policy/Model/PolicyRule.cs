namespace Trellis.Policy;

/// <summary>
/// One Cilium rule. Selectors are as written (no implicit namespace added; the compiler does that).
/// An empty <see cref="Ingress"/> list means the rule does not enforce ingress (Cilium: len(Ingress) == 0).
/// </summary>
public sealed record PolicyRule(
    EndpointSelector EndpointSelector,
    string? Description,
    IReadOnlyList<IngressRule> Ingress,
    IReadOnlyList<EgressRule> Egress,
    SourceLocation Location);

/// <summary><see cref="FromEndpoints"/> is null when absent (any peer if toPorts is given), empty when written as [].</summary>
public sealed record IngressRule(IReadOnlyList<EndpointSelector>? FromEndpoints, IReadOnlyList<PortRule> ToPorts, SourceLocation Location);

/// <summary><see cref="ToEndpoints"/> is null when absent (any peer if toPorts is given), empty when written as [].</summary>
public sealed record EgressRule(IReadOnlyList<EndpointSelector>? ToEndpoints, IReadOnlyList<PortRule> ToPorts, SourceLocation Location);

/// <summary>One toPorts item.</summary>
public sealed record PortRule(IReadOnlyList<PortProtocol> Ports, SourceLocation Location);

/// <summary>Port 0 = any port; <see cref="L4Proto.Any"/> = TCP, UDP and SCTP.</summary>
public readonly record struct PortProtocol(ushort Port, L4Proto Protocol);
