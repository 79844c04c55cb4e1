namespace Trellis.Policy;

/// <summary>
/// L7 visibility without enforcement on one port of a pod (Cilium's <c>policy.cilium.io/proxy-visibility</c>
/// annotation, e.g. <c>"&lt;Ingress/8080/TCP/HTTP&gt;,&lt;Egress/80/TCP/HTTP&gt;"</c>): the port's connections go
/// through the node's proxy, which logs every request and allows it; L4 policy decides as before.
/// </summary>
public sealed record VisibilityPort(Direction Direction, ushort Port)
{
    public override string ToString() => $"<{Direction}/{Port}/TCP/HTTP>";
}

public static class ProxyVisibility
{
    public const string Annotation = "policy.cilium.io/proxy-visibility";

    /// <summary>Parses the annotation's value; throws <see cref="FormatException"/> naming the bad item.</summary>
    public static IReadOnlyList<VisibilityPort> Parse(string value)
    {
        ArgumentNullException.ThrowIfNull(value);
        var result = new List<VisibilityPort>();
        foreach (var raw in value.Split(',', StringSplitOptions.TrimEntries))
        {
            if (raw.Length == 0)
                continue;
            if (raw[0] != '<' || raw[^1] != '>')
                throw new FormatException($"\"{raw}\" is not of the form <Direction/Port/Protocol/L7Protocol>, e.g. <Ingress/80/TCP/HTTP>");
            var parts = raw[1..^1].Split('/');
            if (parts.Length != 4)
                throw new FormatException($"\"{raw}\" has {parts.Length} fields; expected <Direction/Port/Protocol/L7Protocol>, e.g. <Ingress/80/TCP/HTTP>");
            var direction = parts[0] switch
            {
                "Ingress" => Direction.Ingress,
                "Egress" => Direction.Egress,
                _ => throw new FormatException($"\"{raw}\": direction \"{parts[0]}\" must be Ingress or Egress"),
            };
            if (!ushort.TryParse(parts[1], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var port) || port == 0)
                throw new FormatException($"\"{raw}\": port \"{parts[1]}\" must be a number from 1 to 65535");
            if (parts[2] != "TCP")
                throw new FormatException($"\"{raw}\": protocol \"{parts[2]}\" is not supported; HTTP visibility needs TCP");
            if (parts[3] != "HTTP")
                throw new FormatException($"\"{raw}\": L7 protocol \"{parts[3]}\" is not supported yet; only HTTP (the node proxy has no DNS or Kafka parser)");
            var item = new VisibilityPort(direction, port);
            if (!result.Contains(item))
                result.Add(item);
        }
        return result;
    }

    /// <summary>
    /// The policy with visibility keys added: each allowed key of the direction that covers TCP port P gets a
    /// port-specific copy whose HTTP rules allow everything (so the datapath redirects and the proxy logs). An
    /// unenforced direction gets an any-peer key. A port where HTTP rules already apply keeps them (it is already
    /// visible; adding an allow-all rule would lift the restriction). Denies are untouched and still win.
    /// </summary>
    public static EndpointPolicy Apply(EndpointPolicy policy, IReadOnlyList<VisibilityPort> ports)
    {
        if (ports.Count == 0)
            return policy;
        var entries = new Dictionary<PolicyKey, PolicyEntry>(policy.Entries);
        var http = new Dictionary<PolicyKey, IReadOnlyList<HttpRule>>(policy.HttpRules);
        var visibility = new HashSet<PolicyKey>(policy.VisibilityOnly);
        foreach (var (direction, port) in ports)
        {
            if (policy.HttpRules.Keys.Any(k => k.Direction == direction && k.Covers(k.Identity, L4Proto.Tcp, port)))
                continue;
            var keys = new List<(PolicyKey Key, PolicyEntry Entry)>();
            if (!policy.Enforced(direction))
                keys.Add((new PolicyKey(ReservedIdentity.Unknown, direction, L4Proto.Tcp, port, port), new PolicyEntry(0, false)));
            foreach (var (key, entry) in policy.Entries)
            {
                if (key.Direction == direction && !entry.Deny && key.Covers(key.Identity, L4Proto.Tcp, port))
                    keys.Add((new PolicyKey(key.Identity, direction, L4Proto.Tcp, port, port), entry));
            }
            foreach (var (key, entry) in keys)
            {
                if (entries.TryGetValue(key, out var existing) && existing.Deny)
                    continue;
                if (!entries.ContainsKey(key))
                    entries[key] = entry;
                http[key] = [HttpRule.AllowAll];
                visibility.Add(key);
            }
        }
        return policy with { Entries = entries, HttpRules = http, VisibilityOnly = visibility };
    }
}
