using YamlDotNet.RepresentationModel;

namespace Trellis.Policy;

// Kubernetes networking.k8s.io/v1 NetworkPolicy, translated into one PolicyRule the way Cilium does
// (pkg/k8s/network_policy.go): peer selectors get their namespace scope at parse time.
public static partial class ManifestParser
{
    private static readonly string[] NetworkPolicyFields = ["apiVersion", "kind", "metadata", "spec"];
    private static readonly string[] NetworkPolicySpecFields = ["podSelector", "policyTypes", "ingress", "egress"];
    private static readonly string[] K8sIngressFields = ["from", "ports"];
    private static readonly string[] K8sEgressFields = ["to", "ports"];
    private static readonly string[] K8sPeerFields = ["podSelector", "namespaceSelector", "ipBlock"];
    private static readonly string[] K8sPortFields = ["protocol", "port", "endPort"];

    private static PolicyResource ParseNetworkPolicy(ParseContext ctx, MapReader doc)
    {
        var meta = ParseMetadata(ctx, doc, ResourceKinds.NetworkPolicy, namespaced: true);
        var ns = meta.Namespace!;
        var specNode = doc.Get("spec")
            ?? throw ctx.Error(doc.Node, "spec", "spec is required (podSelector: {} selects every pod of the namespace)");
        var spec = new MapReader(ctx, specNode, "spec", NetworkPolicySpecFields);

        // An absent podSelector selects every pod of the namespace, like {}.
        var podSelector = spec.Get("podSelector") is { } psNode
            ? ParseSelector(ctx, psNode, spec.Field("podSelector"), cilium: false)
            : EndpointSelector.All;

        var ingressItems = spec.List("ingress");
        var egressItems = spec.List("egress");

        bool ingressType, egressType;
        if (spec.List("policyTypes") is { } typeItems)
        {
            ingressType = egressType = false;
            foreach (var (node, path) in typeItems)
            {
                switch (ScalarString(ctx, node, path))
                {
                    case "Ingress": ingressType = true; break;
                    case "Egress": egressType = true; break;
                    case var other:
                        throw ctx.Error(node, path, $"invalid policy type \"{other}\": use Ingress or Egress (case-sensitive)");
                }
            }
            if (!ingressType && !egressType)
                throw ctx.Error(spec.Get("policyTypes")!, spec.Field("policyTypes"), "policyTypes must list Ingress, Egress or both; leave it out for the default");
        }
        else
        {
            // Kubernetes default: every policy affects ingress; egress only when it has egress rules.
            ingressType = true;
            egressType = egressItems is { Count: > 0 };
        }

        if (!ingressType && ingressItems is { Count: > 0 })
        {
            ctx.Warn(spec.KeyNode("ingress")!, spec.Field("ingress"), "ingress rules are ignored because policyTypes does not list Ingress");
            ingressItems = null;
        }
        if (!egressType && egressItems is { Count: > 0 })
        {
            ctx.Warn(spec.KeyNode("egress")!, spec.Field("egress"), "egress rules are ignored because policyTypes does not list Egress");
            egressItems = null;
        }

        var ingress = (ingressItems ?? []).Select(item => ParseK8sRule(ctx, ns, item.Node, item.Path, Direction.Ingress, MakeIngress)).ToArray();
        var egress = (egressItems ?? []).Select(item => ParseK8sRule(ctx, ns, item.Node, item.Path, Direction.Egress, MakeEgress)).ToArray();

        var rule = new PolicyRule(podSelector, null, ingress, egress, ctx.Location(specNode))
        {
            EnableDefaultDenyIngress = ingressType,
            EnableDefaultDenyEgress = egressType,
        };
        return new PolicyResource(meta.Name, ns, [rule], ctx.Location(doc.Node), PolicyKind.NetworkPolicy);
    }

    private static T ParseK8sRule<T>(ParseContext ctx, string ns, YamlNode node, string path, Direction direction, MakePeerRule<T> make)
        where T : PeerRule
    {
        var peersField = direction == Direction.Ingress ? "from" : "to";
        var r = new MapReader(ctx, node, path, direction == Direction.Ingress ? K8sIngressFields : K8sEgressFields);

        List<EndpointSelector>? endpoints = null;
        List<CidrRule>? cidrs = null;
        foreach (var (peerNode, peerPath) in r.List(peersField) ?? [])
        {
            var p = new MapReader(ctx, peerNode, peerPath, K8sPeerFields);
            var pod = p.Get("podSelector") is { } podNode ? ParseSelector(ctx, podNode, p.Field("podSelector"), cilium: false) : null;
            var nsSel = p.Get("namespaceSelector") is { } nsNode ? ParseSelector(ctx, nsNode, p.Field("namespaceSelector"), cilium: false) : null;
            if (p.Get("ipBlock") is { } ipNode)
            {
                if (pod is not null || nsSel is not null)
                    throw ctx.Error(p.KeyNode("ipBlock")!, p.Field("ipBlock"),
                        "ipBlock cannot be combined with podSelector or namespaceSelector in one peer; list them as separate peers");
                (cidrs ??= new()).Add(ParseCidrRule(ctx, new MapReader(ctx, ipNode, p.Field("ipBlock"), CidrRuleFields), allowBareAddress: false));
                continue;
            }
            if (pod is null && nsSel is null)
                throw ctx.Error(peerNode, peerPath, "a peer needs podSelector, namespaceSelector or ipBlock (leave out the whole list to allow every peer)");
            (endpoints ??= new()).Add(ScopeK8sPeer(ns, pod, nsSel));
        }

        // An absent or empty from/to list matches every peer, inside the cluster or not.
        IReadOnlyList<PolicyEntity>? entities = endpoints is null && cidrs is null ? [PolicyEntity.All] : null;

        var ports = new List<PortProtocol>();
        foreach (var (portNode, portPath) in r.List("ports") ?? [])
            ports.Add(ParseK8sPort(ctx, portNode, portPath));
        var toPorts = ports.Count == 0 ? Array.Empty<PortRule>() : [new PortRule(ports, ctx.Location(r.Get("ports")!))];

        if (direction == Direction.Egress && cidrs is not null && ports.Any(p => p.Name is not null))
            ctx.Warn(r.KeyNode("ports")!, r.Field("ports"), "named ports resolve only against pods, so they allow nothing towards ipBlock peers; use a port number");

        return make(endpoints, toPorts, ctx.Location(node), cidrs, entities, []);
    }

    /// <summary>
    /// A NetworkPolicyPeer as an identity selector: podSelector alone = pods of the policy's namespace;
    /// namespaceSelector alone = every pod of the matching namespaces; both = pods matching both.
    /// </summary>
    private static EndpointSelector ScopeK8sPeer(string policyNamespace, EndpointSelector? pod, EndpointSelector? nsSelector)
    {
        if (nsSelector is null)
            return pod!.WithMatch(IdentityLabelKeys.PodNamespace, policyNamespace);

        var matchLabels = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (k, v) in pod?.MatchLabels ?? Labels.Empty)
            matchLabels[k] = v;
        foreach (var (k, v) in nsSelector.MatchLabels)
            matchLabels[IdentityLabelKeys.NamespaceLabelsPrefix + k] = v;
        var requirements = (pod?.MatchExpressions ?? [])
            .Concat(nsSelector.MatchExpressions.Select(r => new LabelSelectorRequirement(IdentityLabelKeys.NamespaceLabelsPrefix + r.Key, r.Operator, r.Values)))
            .Append(new LabelSelectorRequirement(IdentityLabelKeys.PodNamespace, SelectorOperator.Exists)) // pods only
            .ToArray();
        return new EndpointSelector(new Labels(matchLabels), requirements);
    }

    private static PortProtocol ParseK8sPort(ParseContext ctx, YamlNode node, string path)
    {
        var pp = new MapReader(ctx, node, path, K8sPortFields);
        var protocol = KubernetesProtocol(ctx, pp);

        ushort port = 0;
        string? name = null;
        if (pp.Get("port") is { } portNode)
        {
            var text = ScalarString(ctx, portNode, pp.Field("port"));
            if (text.Length > 0 && text.All(char.IsAsciiDigit))
            {
                if (!int.TryParse(text, out var value) || value is < 1 or > 65535)
                    throw ctx.Error(portNode, pp.Field("port"), $"port {text} is out of range: use 1-65535, or leave port out for every port");
                port = (ushort)value;
            }
            else if (PortNameError(text, lowercaseOnly: true) is { } nameError)
            {
                throw ctx.Error(portNode, pp.Field("port"), nameError);
            }
            else
            {
                name = text;
            }
        }

        return new PortProtocol(port, protocol, ParseEndPort(ctx, pp, port, name), name);
    }
}
