using System.Collections.ObjectModel;

namespace Trellis.Policy;

/// <summary>Turns the policies that select one identity into its policy-map entries (Cilium semantics).</summary>
public static class PolicyCompiler
{
    private static readonly L4Proto[] AnyExpansion = [L4Proto.Tcp, L4Proto.Udp, L4Proto.Sctp];

    public static EndpointPolicy Compile(IdentityInfo subject, IReadOnlyCollection<IdentityInfo> identities, IReadOnlyList<CompiledPolicySource> policies)
    {
        ArgumentNullException.ThrowIfNull(subject);
        ArgumentNullException.ThrowIfNull(identities);
        ArgumentNullException.ThrowIfNull(policies);

        // Sorted by id so the entries do not depend on the order identities are handed in.
        var peers = identities.OrderBy(i => i.Id).ToArray();
        var entries = new SortedDictionary<PolicyKey, PolicyEntry>();
        bool ingressEnforced = false, egressEnforced = false;

        foreach (var source in policies)
        {
            var policy = source.Policy;
            foreach (var rule in policy.Rules)
            {
                if (!SelectsSubject(policy, rule, subject.Labels))
                    continue;

                // Cilium: default deny in a direction iff a selecting rule has a non-empty list for it.
                ingressEnforced |= rule.Ingress.Count > 0;
                egressEnforced |= rule.Egress.Count > 0;

                foreach (var ingress in rule.Ingress)
                    AddEntries(entries, Direction.Ingress, source.PolicyId, policy, ingress.FromEndpoints, ingress.ToPorts, peers);
                foreach (var egress in rule.Egress)
                    AddEntries(entries, Direction.Egress, source.PolicyId, policy, egress.ToEndpoints, egress.ToPorts, peers);
            }
        }

        return new EndpointPolicy(ingressEnforced, egressEnforced, new ReadOnlyDictionary<PolicyKey, PolicyEntry>(entries));
    }

    /// <summary>
    /// A namespaced policy only ever selects endpoints of its namespace: Cilium overwrites any namespace match in
    /// the endpointSelector with the policy's own namespace.
    /// </summary>
    internal static bool SelectsSubject(PolicyResource policy, PolicyRule rule, Labels subject)
    {
        var selector = policy.Namespace is { } ns
            ? rule.EndpointSelector.WithMatch(IdentityLabelKeys.PodNamespace, ns)
            : rule.EndpointSelector;
        return selector.Matches(subject);
    }

    /// <summary>
    /// The peer selector as Cilium applies it (pkg/k8s/apis/cilium.io/utils getEndpointSelector): in a namespaced
    /// policy a selector that names neither the namespace nor a namespace label is confined to the policy's
    /// namespace; in a clusterwide policy it is confined to pods (identities that have a namespace).
    /// </summary>
    internal static EndpointSelector EffectivePeerSelector(PolicyResource policy, EndpointSelector selector)
    {
        if (selector.HasKey(IdentityLabelKeys.PodNamespace))
            return selector;
        if (policy.Namespace is null)
            return selector.WithRequirement(new LabelSelectorRequirement(IdentityLabelKeys.PodNamespace, SelectorOperator.Exists));
        if (selector.HasKeyPrefix(IdentityLabelKeys.NamespaceLabelsPrefix))
            return selector;
        return selector.WithMatch(IdentityLabelKeys.PodNamespace, policy.Namespace);
    }

    private static void AddEntries(
        SortedDictionary<PolicyKey, PolicyEntry> entries,
        Direction direction,
        uint policyId,
        PolicyResource policy,
        IReadOnlyList<EndpointSelector>? peerSelectors,
        IReadOnlyList<PortRule> toPorts,
        IdentityInfo[] identities)
    {
        IEnumerable<uint> peerIds;
        if (peerSelectors is null)
        {
            // No L3 part: an L4-only rule allows any peer; a rule with neither part allows nothing.
            if (toPorts.Count == 0)
                return;
            peerIds = [ReservedIdentity.Unknown];
        }
        else
        {
            var selectors = peerSelectors.Select(s => EffectivePeerSelector(policy, s)).ToArray();
            peerIds = identities
                .Where(i => i.Id != ReservedIdentity.Unknown && selectors.Any(s => s.Matches(i.Labels)))
                .Select(i => i.Id)
                .ToArray();
        }

        foreach (var peer in peerIds)
        {
            if (toPorts.Count == 0)
            {
                Add(entries, new PolicyKey(peer, 0, L4Proto.Any, direction), policyId);
                continue;
            }
            foreach (var portRule in toPorts)
            {
                foreach (var pp in portRule.Ports)
                {
                    if (pp.Protocol == L4Proto.Any)
                    {
                        foreach (var proto in AnyExpansion)
                            Add(entries, new PolicyKey(peer, pp.Port, proto, direction), policyId);
                    }
                    else
                    {
                        Add(entries, new PolicyKey(peer, pp.Port, pp.Protocol, direction), policyId);
                    }
                }
            }
        }
    }

    // First policy in list order keeps the attribution.
    private static void Add(SortedDictionary<PolicyKey, PolicyEntry> entries, PolicyKey key, uint policyId) =>
        entries.TryAdd(key, new PolicyEntry(policyId, Deny: false));
}
