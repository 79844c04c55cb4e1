namespace Trellis.Policy;

/// <summary>Where something was written: 1-based line and column.</summary>
public sealed record SourceLocation(string File, int Line, int Column)
{
    public override string ToString() => $"{File}:{Line}:{Column}";
}

public abstract record Resource(string Kind, string Name, string? Namespace, SourceLocation Location);

public sealed record NamespaceResource(string Name, Labels Labels, SourceLocation Location)
    : Resource(ResourceKinds.Namespace, Name, null, Location);

public sealed record PodResource(string Name, string Namespace, Labels Labels, IReadOnlyList<Container> Containers, SourceLocation Location)
    : Resource(ResourceKinds.Pod, Name, Namespace, Location)
{
    /// <summary>The <see cref="ProxyVisibility.Annotation"/> value as written (validated), or null.</summary>
    public string? ProxyVisibility { get; init; }
}

/// <summary>A container of a lab pod. <see cref="Command"/> is the container's command followed by its args.</summary>
public sealed record Container(string Name, IReadOnlyList<string> Command, IReadOnlyList<ContainerPort> Ports);

public sealed record ContainerPort(string? Name, ushort Port, L4Proto Protocol);

public enum ServiceType { ClusterIP, NodePort }

/// <summary>How a frontend picks a backend for a new flow.</summary>
public enum LbAlgorithm { Random, Maglev }

/// <summary>
/// A v1 Service of type ClusterIP or NodePort. <paramref name="Selector"/> is null for a service without selector (an absent
/// or empty spec.selector: Kubernetes then creates no endpoints, they are given elsewhere). <paramref name="ClusterIP"/>
/// is null when the manifest leaves it to be allocated.
/// </summary>
/// <param name="AffinityTimeoutSeconds">sessionAffinity ClientIP: how long a client keeps its backend; null = no affinity.</param>
/// <param name="ExternalTrafficLocal">externalTrafficPolicy: Local (NodePort traffic only to this node's backends).</param>
/// <param name="InternalTrafficLocal">internalTrafficPolicy: Local (ClusterIP traffic from this node only to its backends).</param>
/// <param name="Algorithm">The service.cilium.io/lb-algorithm annotation; null = the node's default.</param>
public sealed record ServiceResource(string Name, string Namespace, IReadOnlyDictionary<string, string>? Selector, string? ClusterIP,
    IReadOnlyList<ServicePort> Ports, SourceLocation Location, int? AffinityTimeoutSeconds = null,
    ServiceType Type = ServiceType.ClusterIP, bool ExternalTrafficLocal = false, bool InternalTrafficLocal = false,
    LbAlgorithm? Algorithm = null)
    : Resource(ResourceKinds.Service, Name, Namespace, Location);

/// <summary>A discovery.k8s.io/v1 EndpointSlice: explicit backends of the service named by its
/// kubernetes.io/service-name label (for services without a selector).</summary>
public sealed record EndpointSliceResource(string Name, string Namespace, string ServiceName, IReadOnlyList<EndpointSlicePort> Ports,
    IReadOnlyList<SliceEndpoint> Endpoints, SourceLocation Location)
    : Resource(ResourceKinds.EndpointSlice, Name, Namespace, Location);

public sealed record EndpointSlicePort(string? Name, ushort Port, L4Proto Protocol);

/// <summary>One endpoint of a slice, with the conditions Kubernetes gives it (absent ready/serving mean ready).</summary>
public sealed record SliceEndpoint(string Address, bool Ready, bool Serving, bool Terminating, string? NodeName);

/// <summary>
/// One port of a <see cref="ServiceResource"/>. Exactly one of <paramref name="TargetPort"/> (a number; 0 when the
/// target is named) and <paramref name="TargetPortName"/> (a container port name) is set; an absent targetPort is
/// the same number as <paramref name="Port"/>.
/// </summary>
public sealed record ServicePort(string? Name, ushort Port, ushort TargetPort, string? TargetPortName, L4Proto Protocol, ushort? NodePort = null);

/// <summary>Which policy language a <see cref="PolicyResource"/> was written in.</summary>
public enum PolicyKind
{
    CiliumNetworkPolicy,
    CiliumClusterwideNetworkPolicy,
    /// <summary>networking.k8s.io/v1 NetworkPolicy.</summary>
    NetworkPolicy,
}

/// <summary>
/// A policy: a CiliumNetworkPolicy, a CiliumClusterwideNetworkPolicy (<see cref="Resource.Namespace"/> null) or a
/// Kubernetes NetworkPolicy (translated at parse time into one <see cref="PolicyRule"/> whose peer selectors already
/// carry their namespace scope). Without <paramref name="policyKind"/> the kind follows from the namespace.
/// </summary>
public sealed record PolicyResource : Resource
{
    public PolicyResource(string name, string? @namespace, IReadOnlyList<PolicyRule> rules, SourceLocation location, PolicyKind? policyKind = null)
        : base(KindName(policyKind ?? DefaultKind(@namespace)), name, @namespace, location)
    {
        PolicyKind = policyKind ?? DefaultKind(@namespace);
        if (PolicyKind == PolicyKind.CiliumClusterwideNetworkPolicy ? @namespace is not null : @namespace is null)
            throw new ArgumentException($"{PolicyKind} {name}: only a CiliumClusterwideNetworkPolicy has no namespace", nameof(@namespace));
        Rules = rules;
    }

    public PolicyKind PolicyKind { get; }

    public IReadOnlyList<PolicyRule> Rules { get; }

    public bool IsClusterwide => PolicyKind == PolicyKind.CiliumClusterwideNetworkPolicy;

    public bool IsKubernetes => PolicyKind == PolicyKind.NetworkPolicy;

    public static string KindName(PolicyKind kind) => kind switch
    {
        PolicyKind.CiliumNetworkPolicy => ResourceKinds.CiliumNetworkPolicy,
        PolicyKind.CiliumClusterwideNetworkPolicy => ResourceKinds.CiliumClusterwideNetworkPolicy,
        _ => ResourceKinds.NetworkPolicy,
    };

    private static PolicyKind DefaultKind(string? @namespace) =>
        @namespace is null ? PolicyKind.CiliumClusterwideNetworkPolicy : PolicyKind.CiliumNetworkPolicy;
}

public static class ResourceKinds
{
    public const string Namespace = "Namespace";
    public const string Pod = "Pod";
    public const string Service = "Service";
    public const string EndpointSlice = "EndpointSlice";
    public const string CiliumNetworkPolicy = "CiliumNetworkPolicy";
    public const string CiliumClusterwideNetworkPolicy = "CiliumClusterwideNetworkPolicy";
    public const string NetworkPolicy = "NetworkPolicy";
}
