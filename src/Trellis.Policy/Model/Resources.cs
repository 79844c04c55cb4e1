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
    : Resource(ResourceKinds.Pod, Name, Namespace, Location);

/// <summary>A container of a lab pod. <see cref="Command"/> is the container's command followed by its args.</summary>
public sealed record Container(string Name, IReadOnlyList<string> Command, IReadOnlyList<ContainerPort> Ports);

public sealed record ContainerPort(string? Name, ushort Port, L4Proto Protocol);

/// <summary>A CiliumNetworkPolicy (namespaced) or, when <see cref="Resource.Namespace"/> is null, a CiliumClusterwideNetworkPolicy.</summary>
public sealed record PolicyResource(string Name, string? Namespace, IReadOnlyList<PolicyRule> Rules, SourceLocation Location)
    : Resource(Namespace is null ? ResourceKinds.CiliumClusterwideNetworkPolicy : ResourceKinds.CiliumNetworkPolicy, Name, Namespace, Location)
{
    public bool IsClusterwide => Namespace is null;
}

public static class ResourceKinds
{
    public const string Namespace = "Namespace";
    public const string Pod = "Pod";
    public const string CiliumNetworkPolicy = "CiliumNetworkPolicy";
    public const string CiliumClusterwideNetworkPolicy = "CiliumClusterwideNetworkPolicy";
}
