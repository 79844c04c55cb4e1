using YamlDotNet.RepresentationModel;

namespace Trellis.Policy;

// CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy (cilium.io/v2), checked as Cilium's rule_validation.go does.
public static partial class ManifestParser
{
    private static readonly string[] RuleFields =
        ["endpointSelector", "description", "ingress", "egress", "ingressDeny", "egressDeny", "enableDefaultDeny"];
    private static readonly string[] RuleUnsupported = ["nodeSelector", "labels", "log"];
    private static readonly string[] DefaultDenyFields = ["ingress", "egress"];
    private static readonly string[] IngressPeerFields = ["fromEndpoints", "fromCIDR", "fromCIDRSet", "fromEntities"];
    private static readonly string[] EgressPeerFields = ["toEndpoints", "toCIDR", "toCIDRSet", "toEntities"];
    private static readonly string[] IngressUnsupported = ["fromRequires", "fromNodes", "fromGroups", "authentication"];
    private static readonly string[] EgressUnsupported =
        ["toServices", "toFQDNs", "toRequires", "toNodes", "toGroups", "authentication"];
    private static readonly string[] CidrRuleFields = ["cidr", "except"];
    private static readonly string[] CidrRuleUnsupported = ["cidrGroupRef", "cidrGroupSelector"];
    private static readonly string[] PortRuleFields = ["ports", "rules"];
    private static readonly string[] PortDenyRuleFields = ["ports"];
    private static readonly string[] PortRuleUnsupported = ["originatingTLS", "terminatingTLS", "serverNames", "listener"];
    private static readonly string[] L7RulesFields = ["http"];
    private static readonly string[] L7RulesUnsupported = ["kafka", "dns", "l7proto", "l7"];
    private static readonly string[] HttpRuleFields = ["method", "path", "host", "headers", "headerMatches"];
    private static readonly string[] HeaderMatchFields = ["name", "value"];
    private static readonly string[] HeaderMatchUnsupported = ["mismatch", "secret"];
    private static readonly string[] PortProtocolFields = ["port", "endPort", "protocol"];
    private static readonly string[] IcmpRuleFields = ["fields"];
    private static readonly string[] IcmpFieldFields = ["type", "family"];
    private static readonly string[] SelectorFields = ["matchLabels", "matchExpressions"];
    private static readonly string[] RequirementFields = ["key", "operator", "values"];

    // Cilium's ICMPv4 type names (pkg/policy/api/icmp.go icmpIpv4TypeNameToCode).
    private static readonly Dictionary<string, byte> IcmpTypeNames = new(StringComparer.Ordinal)
    {
        ["EchoReply"] = 0, ["DestinationUnreachable"] = 3, ["Redirect"] = 5, ["Echo"] = 8, ["EchoRequest"] = 8,
        ["RouterAdvertisement"] = 9, ["RouterSelection"] = 10, ["TimeExceeded"] = 11, ["ParameterProblem"] = 12,
        ["Timestamp"] = 13, ["TimestampReply"] = 14, ["Photuris"] = 40, ["ExtendedEchoRequest"] = 42, ["ExtendedEchoReply"] = 43,
    };

    private static PolicyResource ParsePolicy(ParseContext ctx, MapReader doc, bool clusterwide)
    {
        var kind = clusterwide ? ResourceKinds.CiliumClusterwideNetworkPolicy : ResourceKinds.CiliumNetworkPolicy;
        var meta = ParseMetadata(ctx, doc, kind, namespaced: !clusterwide);

        var spec = doc.Get("spec");
        var specs = doc.List("specs");
        if (spec is not null && specs is not null)
            throw ctx.Error(doc.KeyNode("specs")!, "specs", "use either spec (one rule) or specs (a list of rules), not both");

        var rules = new List<PolicyRule>();
        if (spec is not null)
        {
            rules.Add(ParseRule(ctx, spec, "spec"));
        }
        else if (specs is not null)
        {
            foreach (var (node, path) in specs)
                rules.Add(ParseRule(ctx, node, path));
        }
        if (rules.Count == 0)
            throw ctx.Error(doc.Get("specs") ?? doc.Node, specs is null ? "spec" : "specs", "the policy has no rule: give spec (one rule) or specs (a non-empty list)");

        return new PolicyResource(meta.Name, meta.Namespace, rules, ctx.Location(doc.Node),
            clusterwide ? PolicyKind.CiliumClusterwideNetworkPolicy : PolicyKind.CiliumNetworkPolicy);
    }

    /// <summary>A parsed peer rule with where it was written, for warnings that compare rules.</summary>
    private sealed record Written<T>(T Rule, YamlNode Node, string Path);

    private static PolicyRule ParseRule(ParseContext ctx, YamlNode node, string path)
    {
        var r = new MapReader(ctx, node, path, RuleFields, RuleUnsupported);
        var selectorNode = r.Get("endpointSelector")
            ?? throw ctx.Error(r.Node, r.Field("endpointSelector"), "endpointSelector is required (use {} to select every endpoint the policy can see)");
        var selector = ParseSelector(ctx, selectorNode, r.Field("endpointSelector"), cilium: true);

        var ingress = ParsePeerRules(ctx, r, "ingress", Direction.Ingress, deny: false, MakeIngress);
        var ingressDeny = ParsePeerRules(ctx, r, "ingressDeny", Direction.Ingress, deny: true, MakeIngress);
        var egress = ParsePeerRules(ctx, r, "egress", Direction.Egress, deny: false, MakeEgress);
        var egressDeny = ParsePeerRules(ctx, r, "egressDeny", Direction.Egress, deny: true, MakeEgress);

        bool? defaultDenyIngress = null, defaultDenyEgress = null;
        if (r.Get("enableDefaultDeny") is { } ddNode)
        {
            var dd = new MapReader(ctx, ddNode, r.Field("enableDefaultDeny"), DefaultDenyFields);
            defaultDenyIngress = dd.Bool("ingress");
            defaultDenyEgress = dd.Bool("egress");
        }

        WarnShadowedAllows(ctx, ingress, ingressDeny);
        WarnShadowedAllows(ctx, egress, egressDeny);

        return new PolicyRule(selector, r.String("description"), ingress.Select(w => w.Rule).ToArray(), egress.Select(w => w.Rule).ToArray(), ctx.Location(node))
        {
            IngressDeny = ingressDeny.Select(w => w.Rule).ToArray(),
            EgressDeny = egressDeny.Select(w => w.Rule).ToArray(),
            EnableDefaultDenyIngress = defaultDenyIngress,
            EnableDefaultDenyEgress = defaultDenyEgress,
        };
    }

    private delegate T MakePeerRule<out T>(
        IReadOnlyList<EndpointSelector>? endpoints, IReadOnlyList<PortRule> ports, SourceLocation location,
        IReadOnlyList<CidrRule>? cidrs, IReadOnlyList<PolicyEntity>? entities, IReadOnlyList<byte> icmpTypes) where T : PeerRule;

    private static readonly MakePeerRule<IngressRule> MakeIngress = (e, p, l, c, en, i) =>
        new IngressRule(e, p, l) { Cidrs = c, Entities = en, IcmpTypes = i };

    private static readonly MakePeerRule<EgressRule> MakeEgress = (e, p, l, c, en, i) =>
        new EgressRule(e, p, l) { Cidrs = c, Entities = en, IcmpTypes = i };

    private static List<Written<T>> ParsePeerRules<T>(ParseContext ctx, MapReader rule, string field, Direction direction, bool deny, MakePeerRule<T> make)
        where T : PeerRule =>
        (rule.List(field) ?? []).Select(item => new Written<T>(ParsePeerRule(ctx, item.Node, item.Path, direction, deny, make), item.Node, item.Path)).ToList();

    private static T ParsePeerRule<T>(ParseContext ctx, YamlNode node, string path, Direction direction, bool deny, MakePeerRule<T> make)
        where T : PeerRule
    {
        var peerFields = direction == Direction.Ingress ? IngressPeerFields : EgressPeerFields;
        var m = new MapReader(ctx, node, path, [.. peerFields, "toPorts", "icmps"], direction == Direction.Ingress ? IngressUnsupported : EgressUnsupported);
        var (endpointsField, cidrField, cidrSetField, entitiesField) = (peerFields[0], peerFields[1], peerFields[2], peerFields[3]);

        // Cilium refuses more than one kind of L3 peer in a rule ("Combining FromEndpoints and FromCIDR is not supported yet").
        var present = peerFields.Where(f => m.Get(f) is YamlSequenceNode { Children.Count: > 0 }).ToArray();
        if (present.Length > 1)
            throw ctx.Error(m.KeyNode(present[1])!, m.Field(present[1]),
                $"combining {present[0]} and {present[1]} in one rule is not supported (as in Cilium); write them as two rules");

        var endpoints = m.List(endpointsField)?.Select(item => ParseSelector(ctx, item.Node, item.Path, cilium: true)).ToArray();

        List<CidrRule>? cidrs = null;
        if (m.List(cidrField) is { } cidrItems)
        {
            cidrs = new List<CidrRule>();
            foreach (var (itemNode, itemPath) in cidrItems)
            {
                var text = ScalarString(ctx, itemNode, itemPath);
                cidrs.Add(new CidrRule(ParseCidr(ctx, itemNode, itemPath, text, allowBareAddress: true).ToString(), [], ctx.Location(itemNode)));
            }
        }
        if (m.List(cidrSetField) is { } setItems)
        {
            cidrs ??= new List<CidrRule>();
            foreach (var (itemNode, itemPath) in setItems)
            {
                var c = new MapReader(ctx, itemNode, itemPath, CidrRuleFields, CidrRuleUnsupported);
                cidrs.Add(ParseCidrRule(ctx, c, allowBareAddress: false));
            }
        }

        List<PolicyEntity>? entities = null;
        if (m.List(entitiesField) is { } entityItems)
        {
            entities = new List<PolicyEntity>();
            foreach (var (itemNode, itemPath) in entityItems)
            {
                var name = ScalarString(ctx, itemNode, itemPath);
                if (PolicyEntities.TryParse(name, out var entity))
                    entities.Add(entity);
                else if (PolicyEntities.Unsupported.Contains(name))
                    throw ctx.Error(itemNode, itemPath, $"entity \"{name}\" is not supported yet (supported: {string.Join(", ", PolicyEntities.Names)})");
                else
                    throw ctx.Error(itemNode, itemPath, $"unknown entity \"{name}\" (supported: {string.Join(", ", PolicyEntities.Names)})");
            }
        }

        var ports = ParseToPorts(ctx, m, deny);
        var icmps = ParseIcmps(ctx, m);
        if (icmps.Length > 0 && ports.Length > 0)
            throw ctx.Error(m.KeyNode("icmps")!, m.Field("icmps"), "icmps cannot be combined with toPorts in one rule (as in Cilium); write them as two rules");

        if (direction == Direction.Egress && (cidrs is not null || entities is not null) && ports.Any(p => p.Ports.Any(pp => pp.Name is not null)))
            ctx.Warn(m.KeyNode("toPorts")!, m.Field("toPorts"),
                "named ports resolve only against pods, so this rule allows nothing towards CIDR or entity peers; use a port number");

        return make(endpoints, ports, ctx.Location(node), cidrs, entities, icmps);
    }

    private static string ScalarString(ParseContext ctx, YamlNode node, string path) =>
        node is YamlScalarNode { Value: { } v } && !ParseContext.IsNull(node)
            ? v
            : throw ctx.Error(node, path, $"expected a string, found {ParseContext.Describe(node)}");

    private static Ipv4Prefix ParseCidr(ParseContext ctx, YamlNode node, string path, string text, bool allowBareAddress)
    {
        if (!Ipv4Prefix.TryParse(text, allowBareAddress, out var prefix, out var error))
            throw ctx.Error(node, path, error!);
        if (text.Contains('/') && prefix.ToString() != text)
            ctx.Warn(node, path, $"\"{text}\" has host bits set; it is used as {prefix}");
        return prefix;
    }

    /// <summary>A cidr + except mapping (Cilium CIDRRule, Kubernetes IPBlock).</summary>
    private static CidrRule ParseCidrRule(ParseContext ctx, MapReader c, bool allowBareAddress)
    {
        var cidrNode = c.Get("cidr") ?? throw ctx.Error(c.Node, c.Field("cidr"), "cidr is required (e.g. cidr: 10.0.0.0/8)");
        var prefix = ParseCidr(ctx, cidrNode, c.Field("cidr"), c.RequiredString("cidr"), allowBareAddress);
        var except = new List<string>();
        foreach (var (exNode, exPath) in c.List("except") ?? [])
        {
            var ex = ParseCidr(ctx, exNode, exPath, ScalarString(ctx, exNode, exPath), allowBareAddress: false);
            if (!prefix.Contains(ex))
                throw ctx.Error(exNode, exPath, $"except {ex} is not inside cidr {prefix}; an except must be a part of the cidr it is listed under");
            if (ex == prefix)
                ctx.Warn(exNode, exPath, $"except {ex} removes the whole cidr, so this peer matches nothing");
            except.Add(ex.ToString());
        }
        return new CidrRule(prefix.ToString(), except, ctx.Location(c.Node));
    }

    private static PortRule[] ParseToPorts(ParseContext ctx, MapReader reader, bool deny) =>
        (reader.List("toPorts") ?? []).Select(item =>
        {
            // Deny rules have no L7 part at all in Cilium (PortDenyRule), so rules there is unknown, not unsupported.
            var pr = new MapReader(ctx, item.Node, item.Path, deny ? PortDenyRuleFields : PortRuleFields, deny ? null : PortRuleUnsupported);
            var ports = pr.List("ports");
            if (ports is null || ports.Count == 0)
                throw ctx.Error(pr.Get("ports") ?? pr.Node, pr.Field("ports"), "ports must list at least one port");
            var parsed = ports.Select(p => ParseCiliumPort(ctx, p.Node, p.Path)).ToArray();
            var l7 = ParseL7Rules(ctx, pr, ports, parsed);
            return new PortRule(parsed, ctx.Location(item.Node)) { Rules = l7 };
        }).ToArray();

    /// <summary>toPorts[].rules: HTTP only, behind <see cref="ManifestParserOptions.AllowL7Rules"/>; null when absent or empty.</summary>
    private static L7Rules? ParseL7Rules(ParseContext ctx, MapReader portRule, IReadOnlyList<(YamlNode Node, string Path)> portNodes, PortProtocol[] ports)
    {
        if (portRule.KeyNode("rules") is not { } rulesKey)
            return null;
        if (!ctx.Options.AllowL7Rules)
            throw ctx.Error(rulesKey, portRule.Field("rules"),
                "rules needs the node's L7 proxy, which this agent runs without (trellis agent --proxy-port 0); an unenforced rule would allow every request");
        if (portRule.Get("rules") is not { } rulesNode)
            return null;

        var r = new MapReader(ctx, rulesNode, portRule.Field("rules"), L7RulesFields, L7RulesUnsupported);
        var items = r.List("http");
        if (items is null || items.Count == 0)
        {
            // Cilium: empty L7 rules add nothing; the port is L4-only.
            ctx.Warn(r.Node, r.Field("http"), "rules has no http rule, so this port is allowed at L4 only; write http: [{}] to send it through the proxy for visibility");
            return null;
        }

        // As Cilium (PortRule.Validate): L7 rules only on explicit TCP ports, never on port 0 (any port).
        for (var i = 0; i < ports.Length; i++)
        {
            var (node, path) = portNodes[i];
            if (ports[i].Protocol != L4Proto.Tcp)
                throw ctx.Error(node, path, ports[i].Protocol == L4Proto.Any
                    ? "L7 rules can only apply to TCP: set protocol: TCP on this port (as Cilium requires; an omitted protocol means ANY)"
                    : $"L7 rules can only apply to TCP (not {ports[i].Protocol.ToString().ToUpperInvariant()})");
            if (ports[i].Port == 0 && ports[i].Name is null)
                throw ctx.Error(node, path, "L7 rules cannot be used when the port is 0 (any port); give a port number");
        }

        var rules = new List<HttpRule>();
        foreach (var (itemNode, itemPath) in items)
        {
            var h = new MapReader(ctx, itemNode, itemPath, HttpRuleFields);
            var headers = new List<HeaderMatch>();
            foreach (var (headerNode, headerPath) in h.List("headers") ?? [])
                headers.Add(ParseHeaderString(ctx, headerNode, headerPath, ScalarString(ctx, headerNode, headerPath)));
            foreach (var (matchNode, matchPath) in h.List("headerMatches") ?? [])
            {
                var m = new MapReader(ctx, matchNode, matchPath, HeaderMatchFields, HeaderMatchUnsupported);
                var name = m.RequiredString("name");
                if (HeaderNameError(name) is { } error)
                    throw ctx.Error(m.Get("name")!, m.Field("name"), error);
                // An empty or absent value only requires the header to be present (Cilium).
                var value = m.String("value");
                headers.Add(new HeaderMatch(name, string.IsNullOrEmpty(value) ? null : value));
            }
            rules.Add(new HttpRule(HttpRegex(ctx, h, "method"), HttpRegex(ctx, h, "path"), HttpRegex(ctx, h, "host"), headers));
        }
        return new L7Rules(rules);
    }

    /// <summary>An http rule regex: absent or empty = any value; otherwise it must compile as the matcher compiles it.</summary>
    private static string? HttpRegex(ParseContext ctx, MapReader h, string field)
    {
        var text = h.String(field);
        if (string.IsNullOrEmpty(text))
            return null;
        if (HttpRuleMatcher.RegexError(text) is { } error)
            throw ctx.Error(h.Get(field)!, h.Field(field), $"invalid regular expression \"{text}\": {error}");
        return text;
    }

    /// <summary>A headers item: "Name" (must be present) or "Name: value" (must equal value).</summary>
    private static HeaderMatch ParseHeaderString(ParseContext ctx, YamlNode node, string path, string text)
    {
        var colon = text.IndexOf(':', StringComparison.Ordinal);
        var name = (colon < 0 ? text : text[..colon]).Trim();
        if (HeaderNameError(name) is { } error)
            throw ctx.Error(node, path, $"{error} (write \"Name\" to require the header or \"Name: value\" to require its value)");
        if (colon < 0)
            return new HeaderMatch(name, null);
        var value = text[(colon + 1)..].Trim();
        if (value.Length == 0)
            throw ctx.Error(node, path, $"\"{text}\" has no value after ':'; write \"{name}\" to require only that the header is present");
        return new HeaderMatch(name, value);
    }

    private static string? HeaderNameError(string name) =>
        name.Length > 0 && name.All(c => c > ' ' && c < 127 && !"()<>@,;:\\\"/[]?={}".Contains(c))
            ? null
            : $"\"{name}\" is not a valid HTTP header name";

    private static PortProtocol ParseCiliumPort(ParseContext ctx, YamlNode node, string path)
    {
        var pp = new MapReader(ctx, node, path, PortProtocolFields);

        var protocol = L4Proto.Any;
        if (pp.String("protocol") is { } protoText)
        {
            protocol = protoText switch
            {
                "TCP" => L4Proto.Tcp,
                "UDP" => L4Proto.Udp,
                "SCTP" => L4Proto.Sctp,
                "ANY" => L4Proto.Any,
                "ICMP" => throw ctx.Error(pp.Get("protocol")!, pp.Field("protocol"),
                    "ICMP is not a toPorts protocol; allow ICMP with icmps: [{fields: [{type: 8}]}] next to (not inside) toPorts"),
                "ICMPv6" => throw ctx.Error(pp.Get("protocol")!, pp.Field("protocol"), "ICMPv6: IPv6 is not supported"),
                "VRRP" or "IGMP" => throw ctx.Error(pp.Get("protocol")!, pp.Field("protocol"), $"protocol {protoText} is not supported yet"),
                _ => throw ctx.Error(pp.Get("protocol")!, pp.Field("protocol"),
                    $"invalid protocol \"{protoText}\": use TCP, UDP, SCTP or ANY (case-sensitive, as in Cilium)"),
            };
        }

        ushort port = 0;
        string? name = null;
        if (pp.String("port") is { } portText)
        {
            var portNode = pp.Get("port")!;
            if (portText.Length > 0 && portText.All(char.IsAsciiDigit))
            {
                if (!int.TryParse(portText, out var value) || value > 65535)
                    throw ctx.Error(portNode, pp.Field("port"), $"port {portText} is out of range: use 1-65535, or 0 for any port");
                port = (ushort)value;
            }
            else if (PortNameError(portText, lowercaseOnly: false) is null)
            {
                name = portText.ToLowerInvariant(); // Cilium compares port names case-insensitively
            }
            else
            {
                throw ctx.Error(portNode, pp.Field("port"),
                    $"invalid port \"{portText}\": use 1-65535, 0 for any port, or a container port name (e.g. \"http\")");
            }
        }

        var endPort = ParseEndPort(ctx, pp, port, name);
        return new PortProtocol(port, protocol, endPort, name);
    }

    /// <summary>endPort, which needs a numeric non-zero port and must not be below it (Cilium and Kubernetes agree).</summary>
    private static ushort ParseEndPort(ParseContext ctx, MapReader pp, ushort port, string? name)
    {
        if (pp.Get("endPort") is not { } endNode)
            return 0;
        var field = pp.Field("endPort");
        if (endNode is not YamlScalarNode { Value: { } text } || !int.TryParse(text, out var end) || !text.All(char.IsAsciiDigit))
            throw ctx.Error(endNode, field, $"endPort must be a number from 1 to 65535, found {ParseContext.Describe(endNode)}");
        if (end > 65535)
            throw ctx.Error(endNode, field, $"endPort {end} is out of range: ports end at 65535");
        if (name is not null)
            throw ctx.Error(endNode, field, $"endPort cannot be used with the named port \"{name}\"; use a port number");
        if (port == 0)
            throw ctx.Error(endNode, field, "endPort needs a non-zero port to start the range (e.g. port: 8000, endPort: 8099)");
        if (end < port)
            throw ctx.Error(endNode, field, $"endPort {end} is below port {port}; the range is port..endPort");
        if (end == port)
            ctx.Warn(endNode, field, $"endPort equals port; the range is the single port {port}");
        return (ushort)end;
    }

    /// <summary>IANA service name rules Kubernetes applies to named ports (at most 15 characters, a letter, no "--").</summary>
    private static string? PortNameError(string name, bool lowercaseOnly)
    {
        bool Allowed(char c) => char.IsAsciiDigit(c) || c == '-' || (lowercaseOnly ? char.IsAsciiLetterLower(c) : char.IsAsciiLetter(c));
        if (name.Length is 0 or > 15 || !name.All(Allowed) || !name.Any(char.IsAsciiLetter) ||
            name.StartsWith('-') || name.EndsWith('-') || name.Contains("--", StringComparison.Ordinal))
            return $"\"{name}\" is not a valid port name: use at most 15 {(lowercaseOnly ? "lowercase " : "")}letters, digits and single '-', with at least one letter";
        return null;
    }

    private static byte[] ParseIcmps(ParseContext ctx, MapReader reader)
    {
        var types = new List<byte>();
        foreach (var (ruleNode, rulePath) in reader.List("icmps") ?? [])
        {
            var rule = new MapReader(ctx, ruleNode, rulePath, IcmpRuleFields);
            foreach (var (fieldNode, fieldPath) in rule.List("fields") ?? [])
            {
                var f = new MapReader(ctx, fieldNode, fieldPath, IcmpFieldFields);
                if (f.String("family") is { } family && family != "IPv4")
                    throw ctx.Error(f.Get("family")!, f.Field("family"), family == "IPv6"
                        ? "IPv6 is not supported; only family: IPv4 ICMP rules can be enforced"
                        : $"invalid family \"{family}\": use IPv4");
                var typeText = f.RequiredString("type", " (an ICMP type 0-255 or a name such as EchoRequest)");
                var typeNode = f.Get("type")!;
                if (typeText.All(char.IsAsciiDigit) && int.TryParse(typeText, out var number))
                {
                    if (number > 255)
                        throw ctx.Error(typeNode, f.Field("type"), $"ICMP type {number} is out of range: use 0-255");
                    types.Add((byte)number);
                }
                else if (IcmpTypeNames.TryGetValue(typeText, out var named))
                {
                    types.Add(named);
                }
                else
                {
                    throw ctx.Error(typeNode, f.Field("type"),
                        $"unknown ICMP type \"{typeText}\": use 0-255 or one of {string.Join(", ", IcmpTypeNames.Keys)}");
                }
            }
        }
        return types.ToArray();
    }

    private static EndpointSelector ParseSelector(ParseContext ctx, YamlNode node, string path, bool cilium)
    {
        var s = new MapReader(ctx, node, path, SelectorFields);

        var matchLabels = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (keyNode, value, valueNode) in s.StringMap("matchLabels") ?? [])
        {
            var field = ParseContext.Join(s.Field("matchLabels"), keyNode.Value!);
            var key = SelectorKey(ctx, keyNode, keyNode.Value!, field, cilium);
            if (LabelValidation.LabelValueError(value) is { } valueError)
                throw ctx.Error(valueNode, field, valueError);
            if (!matchLabels.TryAdd(key, value))
                throw ctx.Error(keyNode, field, $"label \"{key}\" is matched twice (with and without a source prefix)");
        }

        var requirements = new List<LabelSelectorRequirement>();
        foreach (var (itemNode, itemPath) in s.List("matchExpressions") ?? [])
        {
            var e = new MapReader(ctx, itemNode, itemPath, RequirementFields);
            var rawKey = e.RequiredString("key");
            var key = SelectorKey(ctx, e.Get("key")!, rawKey, e.Field("key"), cilium);
            var opText = e.RequiredString("operator");
            SelectorOperator? parsed = opText switch
            {
                "In" => SelectorOperator.In,
                "NotIn" => SelectorOperator.NotIn,
                "Exists" => SelectorOperator.Exists,
                "DoesNotExist" => SelectorOperator.DoesNotExist,
                _ => null,
            };
            if (parsed is not { } op)
                throw ctx.Error(e.Get("operator")!, e.Field("operator"), $"invalid operator \"{opText}\": use In, NotIn, Exists or DoesNotExist");
            var values = e.StringList("values") ?? [];
            var needsValues = op is SelectorOperator.In or SelectorOperator.NotIn;
            if (needsValues && values.Count == 0)
                throw ctx.Error(e.Get("values") ?? e.Node, e.Field("values"), $"operator {op} needs a non-empty values list");
            if (!needsValues && values.Count > 0)
                throw ctx.Error(e.Get("values")!, e.Field("values"), $"operator {op} takes no values; remove values");
            requirements.Add(new LabelSelectorRequirement(key, op, values));
        }

        return new EndpointSelector(new Labels(matchLabels), requirements);
    }

    private static string SelectorKey(ParseContext ctx, YamlNode node, string rawKey, string field, bool cilium)
    {
        var key = rawKey;
        if (cilium)
        {
            key = LabelSource.NormalizeSelectorKey(rawKey, out var error);
            if (error is not null)
                throw ctx.Error(node, field, error);
        }
        if (LabelValidation.LabelKeyError(key) is { } keyError)
            throw ctx.Error(node, field, keyError);
        return key;
    }

    /// <summary>
    /// Warns about allow rules that a deny rule of the same policy rule makes useless: the deny covers every port
    /// and either any peer (entity all) or exactly the same peers as the allow.
    /// </summary>
    private static void WarnShadowedAllows<TRule>(ParseContext ctx, List<Written<TRule>> allows, List<Written<TRule>> denies)
        where TRule : PeerRule
    {
        foreach (var allow in allows)
        {
            foreach (var deny in denies)
            {
                var coversPorts = !deny.Rule.HasPorts ? deny.Rule.HasPeers : SamePorts(deny.Rule, allow.Rule);
                var coversPeers = deny.Rule.Entities?.Contains(PolicyEntity.All) == true ||
                    (!deny.Rule.HasPeers && deny.Rule.HasPorts) ||
                    (deny.Rule.HasPeers && SamePeers(deny.Rule, allow.Rule));
                if (coversPorts && coversPeers)
                {
                    ctx.Warn(allow.Node, allow.Path, $"this allow rule never takes effect: {deny.Path} of the same rule denies all the traffic it allows (deny always wins)");
                    break;
                }
            }
        }
    }

    private static bool SamePeers(PeerRule a, PeerRule b) =>
        Same(a.Endpoints?.Select(s => s.ToString()), b.Endpoints?.Select(s => s.ToString())) &&
        Same(a.Cidrs?.Select(c => c.Cidr + "\\" + string.Join(",", c.Except.Order())), b.Cidrs?.Select(c => c.Cidr + "\\" + string.Join(",", c.Except.Order()))) &&
        Same(a.Entities?.Select(e => e.ToString()), b.Entities?.Select(e => e.ToString()));

    private static bool SamePorts(PeerRule a, PeerRule b) =>
        Same(a.ToPorts.SelectMany(p => p.Ports).Select(p => p.ToString()), b.ToPorts.SelectMany(p => p.Ports).Select(p => p.ToString())) &&
        Same(a.IcmpTypes.Select(t => t.ToString()), b.IcmpTypes.Select(t => t.ToString()));

    private static bool Same(IEnumerable<string>? a, IEnumerable<string>? b) =>
        (a is null && b is null) || (a is not null && b is not null && a.ToHashSet().SetEquals(b));
}
