using System.Collections.ObjectModel;

namespace Trellis.Policy;

/// <summary>
/// Turns the policies that select one identity into its policy-map entries. Cilium semantics for Cilium policies,
/// Kubernetes semantics for NetworkPolicy (as Cilium enforces it); both kinds add up and deny always wins.
/// Pure: the result depends only on the arguments, not on their order.
/// </summary>
public static class PolicyCompiler
{
    private static readonly L4Proto[] AnyExpansion = [L4Proto.Tcp, L4Proto.Udp, L4Proto.Sctp];

    public static EndpointPolicy Compile(
        IdentityInfo subject, IReadOnlyList<NamedPort> subjectPorts, PolicyInputs inputs, IReadOnlyList<CompiledPolicySource> policies)
    {
        ArgumentNullException.ThrowIfNull(subject);
        ArgumentNullException.ThrowIfNull(subjectPorts);
        ArgumentNullException.ThrowIfNull(inputs);
        ArgumentNullException.ThrowIfNull(policies);

        var world = new World(inputs, subjectPorts);
        var entries = new SortedDictionary<PolicyKey, PolicyEntry>();
        var l7 = new Dictionary<PolicyKey, List<HttpRule>?>();
        bool ingressEnforced = false, egressEnforced = false;

        foreach (var source in policies)
        {
            var policy = source.Policy;
            foreach (var rule in policy.Rules)
            {
                if (!SelectsSubject(policy, rule, subject.Labels))
                    continue;

                ingressEnforced |= rule.DefaultDenyIngress;
                egressEnforced |= rule.DefaultDenyEgress;

                foreach (var direction in (ReadOnlySpan<Direction>)[Direction.Ingress, Direction.Egress])
                {
                    foreach (var peerRule in rule.Allows(direction))
                        AddEntries(entries, l7, world, direction, source.PolicyId, policy, peerRule, deny: false);
                    foreach (var peerRule in rule.Denies(direction))
                        AddEntries(entries, l7, world, direction, source.PolicyId, policy, peerRule, deny: true);
                }
            }
        }

        return new EndpointPolicy(ingressEnforced, egressEnforced, new ReadOnlyDictionary<PolicyKey, PolicyEntry>(entries))
        {
            HttpRules = MergeHttpRules(entries, l7),
        };
    }

    /// <summary>
    /// The HTTP rules of every allow key that has some (the keys to redirect to the proxy), merged as Cilium does:
    /// the rules of all policies giving the same key add up (a request passes when any matches), and an L4-only
    /// allow of the same direction and protocol whose peer (or any peer) and port range contain the key lifts the
    /// restriction: the key keeps its redirect (visibility) but gets the allow-all rule, as Cilium's
    /// wildcardL3L4Rules adds an empty HTTP rule. L3-only allows (protocol any) do not lift it: the port-specific
    /// key is the more specific match in the datapath. Deny keys never redirect.
    /// </summary>
    private static IReadOnlyDictionary<PolicyKey, IReadOnlyList<HttpRule>> MergeHttpRules(
        SortedDictionary<PolicyKey, PolicyEntry> entries, Dictionary<PolicyKey, List<HttpRule>?> l7)
    {
        var result = new SortedDictionary<PolicyKey, IReadOnlyList<HttpRule>>();
        var l4Only = l7.Where(p => p.Value is null && !entries[p.Key].Deny).Select(p => p.Key).ToArray();
        foreach (var (key, rules) in l7)
        {
            if (rules is null || entries[key].Deny)
                continue;
            var lifted = l4Only.Any(k => k.Direction == key.Direction && k.Proto == key.Proto &&
                (k.Identity == ReservedIdentity.Unknown || k.Identity == key.Identity) && k.Port <= key.Port && k.EndPort >= key.EndPort);
            result[key] = lifted ? [HttpRule.AllowAll] : rules.Distinct().ToArray();
        }
        return new ReadOnlyDictionary<PolicyKey, IReadOnlyList<HttpRule>>(result);
    }

    /// <summary>
    /// Every CIDR (and every except) any policy references, canonical "a.b.c.d/n" and sorted, so the agent can
    /// allocate CIDR identities for them before compiling. Excepts need identities of their own: an address in an
    /// except must resolve to an identity the CIDR rule does not select.
    /// </summary>
    public static IReadOnlyCollection<string> ReferencedCidrs(IReadOnlyList<CompiledPolicySource> policies)
    {
        ArgumentNullException.ThrowIfNull(policies);
        var prefixes = new SortedSet<Ipv4Prefix>();
        foreach (var source in policies)
        {
            foreach (var rule in source.Policy.Rules)
            {
                foreach (var peerRule in rule.Ingress.Concat<PeerRule>(rule.IngressDeny).Concat(rule.Egress).Concat(rule.EgressDeny))
                {
                    foreach (var cidr in peerRule.Cidrs ?? [])
                    {
                        prefixes.Add(cidr.Prefix);
                        prefixes.UnionWith(cidr.ExceptPrefixes);
                    }
                }
            }
        }
        return prefixes.Select(p => p.ToString()).ToArray();
    }

    /// <summary>Which rules of which policies select <paramref name="subject"/>, in policy-list and rule order.</summary>
    public static IReadOnlyList<SelectingRule> SelectingRules(IdentityInfo subject, IReadOnlyList<CompiledPolicySource> policies)
    {
        ArgumentNullException.ThrowIfNull(subject);
        ArgumentNullException.ThrowIfNull(policies);
        var result = new List<SelectingRule>();
        foreach (var source in policies)
        {
            var policy = source.Policy;
            for (var i = 0; i < policy.Rules.Count; i++)
            {
                var rule = policy.Rules[i];
                if (!SelectsSubject(policy, rule, subject.Labels))
                    continue;
                result.Add(new SelectingRule(
                    source.PolicyId, policy.PolicyKind, policy.Name, policy.Namespace, i, rule.Description,
                    Ingress: rule.DefaultDenyIngress || rule.Ingress.Count > 0 || rule.IngressDeny.Count > 0,
                    Egress: rule.DefaultDenyEgress || rule.Egress.Count > 0 || rule.EgressDeny.Count > 0,
                    rule.DefaultDenyIngress, rule.DefaultDenyEgress, rule.Location));
            }
        }
        return result;
    }

    /// <summary>
    /// A namespaced policy (CiliumNetworkPolicy, NetworkPolicy) only ever selects endpoints of its namespace:
    /// any namespace match in the selector is overwritten with the policy's own namespace.
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
    /// namespace; in a clusterwide policy it is confined to pods (identities that have a namespace). Kubernetes
    /// peers are scoped by the parser and always name the namespace, so they pass unchanged.
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
        SortedDictionary<PolicyKey, PolicyEntry> entries, Dictionary<PolicyKey, List<HttpRule>?> l7, World world, Direction direction,
        uint policyId, PolicyResource policy, PeerRule rule, bool deny)
    {
        foreach (var peer in Peers(world, policy, rule))
        {
            foreach (var (proto, port, endPort, rules) in Ports(world, rule, direction, peer))
            {
                var key = new PolicyKey(peer, direction, proto, port, endPort);
                Add(entries, key, new PolicyEntry(policyId, deny));
                if (deny)
                    continue;
                // Per key: null once any allow gives it without L7 rules (L4-only wins), else the rules added up.
                if (rules is null || rules.Http.Count == 0)
                    l7[key] = null;
                else if (!l7.TryGetValue(key, out var list))
                    l7[key] = [.. rules.Http];
                else
                    list?.AddRange(rules.Http);
            }
        }
    }

    /// <summary>The peer identities of a rule, sorted; [0] when it allows any peer.</summary>
    private static IReadOnlyCollection<uint> Peers(World world, PolicyResource policy, PeerRule rule)
    {
        if (!rule.HasPeers)
        {
            // No L3 part: an L4-only rule applies to any peer; a rule with neither part matches nothing (Cilium).
            return rule.HasPorts ? [ReservedIdentity.Unknown] : [];
        }

        var peers = new SortedSet<uint>();
        if (rule.Endpoints is { } selectors)
        {
            var effective = selectors.Select(s => EffectivePeerSelector(policy, s)).ToArray();
            peers.UnionWith(world.Identities.Where(i => i.Id != ReservedIdentity.Unknown && effective.Any(s => s.Matches(i.Labels))).Select(i => i.Id));
        }
        foreach (var cidr in rule.Cidrs ?? [])
        {
            var prefix = cidr.Prefix;
            var except = cidr.ExceptPrefixes.ToArray();
            peers.UnionWith(world.Cidrs.Where(c => prefix.Contains(c.Prefix) && !except.Any(e => e.Contains(c.Prefix))).Select(c => c.Id));
            // 0.0.0.0/0 also covers every address no CIDR identity has: the world identity.
            if (prefix.Length == 0)
                peers.Add(ReservedIdentity.World);
        }
        foreach (var entity in rule.Entities ?? [])
        {
            switch (entity)
            {
                case PolicyEntity.All:
                    return [ReservedIdentity.Unknown];
                case PolicyEntity.World:
                    peers.Add(ReservedIdentity.World);
                    peers.UnionWith(world.Cidrs.Select(c => c.Id));
                    break;
                case PolicyEntity.Cluster:
                    peers.UnionWith(world.PodIds);
                    peers.UnionWith([ReservedIdentity.Host, ReservedIdentity.RemoteNode, ReservedIdentity.Health]);
                    break;
                case PolicyEntity.Host:
                    peers.Add(ReservedIdentity.Host);
                    break;
                case PolicyEntity.RemoteNode:
                    peers.Add(ReservedIdentity.RemoteNode);
                    break;
                case PolicyEntity.Health:
                    peers.Add(ReservedIdentity.Health);
                    break;
                case PolicyEntity.None:
                    break;
            }
        }
        return peers;
    }

    private static IEnumerable<(L4Proto Proto, ushort Port, ushort EndPort, L7Rules? Rules)> Ports(World world, PeerRule rule, Direction direction, uint peer)
    {
        if (rule.IcmpTypes.Count > 0)
        {
            foreach (var type in rule.IcmpTypes.Distinct())
                yield return (L4Proto.Icmp, type, type, null);
            yield break;
        }
        if (rule.ToPorts.Count == 0)
        {
            yield return (L4Proto.Any, 0, PolicyKey.MaxPort, null);
            yield break;
        }
        foreach (var (pp, rules) in rule.ToPorts.SelectMany(p => p.Ports.Select(pp => (pp, p.Rules))))
        {
            if (pp.Name is { } name)
            {
                // Ingress: the subject's own container ports; egress: the peer's (any pod's for peer 0). A name
                // nothing declares matches nothing, as in Kubernetes.
                var declared = direction == Direction.Ingress ? world.SubjectPorts : world.NamedPortsOf(peer);
                foreach (var np in declared)
                {
                    if (string.Equals(np.Name, name, StringComparison.OrdinalIgnoreCase) && (pp.Protocol == L4Proto.Any || pp.Protocol == np.Protocol))
                        yield return (np.Protocol, np.Port, np.Port, rules);
                }
                continue;
            }
            var (lo, hi) = pp.Port == 0 ? ((ushort)0, PolicyKey.MaxPort) : (pp.Port, pp.EndPort == 0 ? pp.Port : pp.EndPort);
            if (pp.Protocol == L4Proto.Any)
            {
                foreach (var proto in AnyExpansion)
                    yield return (proto, lo, hi, rules);
            }
            else
            {
                yield return (pp.Protocol, lo, hi, rules);
            }
        }
    }

    // Deny wins over allow; among equal verdicts the lowest policy id owns the entry, so list order does not matter.
    private static void Add(SortedDictionary<PolicyKey, PolicyEntry> entries, PolicyKey key, PolicyEntry entry)
    {
        if (!entries.TryGetValue(key, out var existing) ||
            (entry.Deny && !existing.Deny) ||
            (entry.Deny == existing.Deny && entry.PolicyId < existing.PolicyId))
            entries[key] = entry;
    }

    /// <summary>The compile inputs, sorted and parsed once.</summary>
    private sealed class World
    {
        private readonly PolicyInputs _inputs;
        private NamedPort[]? _allNamedPorts;

        public World(PolicyInputs inputs, IReadOnlyList<NamedPort> subjectPorts)
        {
            _inputs = inputs;
            SubjectPorts = subjectPorts;
            Identities = inputs.Identities.OrderBy(i => i.Id).ToArray();
            PodIds = Identities.Where(i => IsPodIdentity(i.Id)).Select(i => i.Id).ToArray();
            Cidrs = inputs.CidrIdentities.Select(c => (c.Id, Prefix: Ipv4Prefix.Parse(c.Cidr))).OrderBy(c => c.Id).ToArray();
        }

        public IReadOnlyList<NamedPort> SubjectPorts { get; }

        public IdentityInfo[] Identities { get; }

        public uint[] PodIds { get; }

        public (uint Id, Ipv4Prefix Prefix)[] Cidrs { get; }

        public IReadOnlyList<NamedPort> NamedPortsOf(uint peer)
        {
            if (peer == ReservedIdentity.Unknown)
                return _allNamedPorts ??= PodIds.SelectMany(id => _inputs.NamedPortsOf(id)).Distinct().ToArray();
            return IsPodIdentity(peer) ? _inputs.NamedPortsOf(peer) : [];
        }

        private static bool IsPodIdentity(uint id) => id is >= ReservedIdentity.MinimumAllocated and < ReservedIdentity.CidrMinimum;
    }
}
