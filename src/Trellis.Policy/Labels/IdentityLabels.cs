namespace Trellis.Policy;

/// <summary>Label keys Cilium derives for a pod's security identity.</summary>
public static class IdentityLabelKeys
{
    /// <summary>The pod's namespace.</summary>
    public const string PodNamespace = "io.kubernetes.pod.namespace";

    /// <summary>Prefix of the namespace's own labels copied onto each pod identity.</summary>
    public const string NamespaceLabelsPrefix = "io.cilium.k8s.namespace.labels.";

    /// <summary>Label Kubernetes (≥1.22) puts on every namespace with the namespace's name.</summary>
    public const string KubernetesNamespaceName = "kubernetes.io/metadata.name";
}

public static class IdentityLabels
{
    /// <summary>
    /// The identity labels of a pod, as Cilium computes them: the pod labels, the namespace, and every namespace
    /// label under <see cref="IdentityLabelKeys.NamespaceLabelsPrefix"/>.
    /// </summary>
    public static Labels For(string @namespace, Labels podLabels, Labels namespaceLabels)
    {
        ArgumentException.ThrowIfNullOrEmpty(@namespace);
        ArgumentNullException.ThrowIfNull(podLabels);
        ArgumentNullException.ThrowIfNull(namespaceLabels);

        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (k, v) in podLabels)
            result[k] = v;
        // The API server stamps kubernetes.io/metadata.name on every namespace, so policies written for real
        // clusters that select on it keep working even for namespaces the lab only implies.
        result[IdentityLabelKeys.NamespaceLabelsPrefix + IdentityLabelKeys.KubernetesNamespaceName] = @namespace;
        foreach (var (k, v) in namespaceLabels)
            result[IdentityLabelKeys.NamespaceLabelsPrefix + k] = v;
        // Set last: a pod label must not be able to claim another namespace.
        result[IdentityLabelKeys.PodNamespace] = @namespace;
        return new Labels(result);
    }
}
