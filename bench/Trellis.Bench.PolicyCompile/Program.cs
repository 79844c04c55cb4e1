using System.Diagnostics;
using System.Text;
using Trellis.Datapath;
using Trellis.Policy;

// Compiles P policies over E endpoints sharing I identities (issue 3's scale: 1,000 x 10,000 x 1,000),
// the way the agent does on a full regeneration, and reports the time. Deterministic inputs (seeded).
int policies = Arg("--policies", 1000), endpoints = Arg("--endpoints", 10_000), identities = Arg("--identities", 1000), runs = Arg("--runs", 3);
var rnd = new Random(42);
const int namespaces = 20;

var ids = Enumerable.Range(0, identities).Select(i =>
{
    var ns = $"ns{i % namespaces}";
    var labels = new Labels(new Dictionary<string, string> { ["app"] = $"app{i % 100}", ["tier"] = $"t{i % 7}", ["v"] = $"{i}" });
    return new IdentityInfo((uint)(256 + i), IdentityLabels.For(ns, labels, Labels.Empty));
}).ToList();

var yaml = new StringBuilder();
for (int p = 0; p < policies; p++)
{
    yaml.Append($$$"""
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: p{{{p}}}, namespace: ns{{{p % namespaces}}}}
        spec:
          endpointSelector: {matchLabels: {app: app{{{rnd.Next(100)}}}}}
          ingress:
            - fromEndpoints: [{matchLabels: {tier: t{{{rnd.Next(7)}}}}}]
              toPorts: [{ports: [{port: "{{{1000 + rnd.Next(1000)}}}", protocol: TCP}]}]
          egress:
            - toEndpoints: [{matchExpressions: [{key: app, operator: In, values: [app{{{rnd.Next(100)}}}, app{{{rnd.Next(100)}}}]}]}]
            - toCIDRSet: [{cidr: 10.{{{p % 256}}}.0.0/16, except: [10.{{{p % 256}}}.0.0/24]}]
              toPorts: [{ports: [{port: "8000", endPort: 8100}]}]
        ---

        """);
}
var sw = Stopwatch.StartNew();
var resources = ManifestParser.Parse(yaml.ToString(), "bench.yaml").OfType<PolicyResource>().ToList();
var parseMs = sw.Elapsed.TotalMilliseconds;
var sources = resources.Select((r, i) => new CompiledPolicySource((uint)i + 1, r)).ToList();
var cidrs = PolicyCompiler.ReferencedCidrs(sources).Select((c, i) => new CidrIdentity(ReservedIdentity.CidrMinimum + (uint)i, c)).ToList();
var inputs = new PolicyInputs(ids, cidrs, _ => []);

Console.WriteLine($"policies {policies}, endpoints {endpoints}, identities {identities}, CIDR identities {cidrs.Count}; parse {parseMs:0} ms");
for (int run = 0; run < runs; run++)
{
    sw.Restart();
    // The agent compiles per endpoint; endpoints with the same identity get the same result, so compile
    // once per identity in use and share it (what a full regeneration costs).
    var perIdentity = new Dictionary<uint, EndpointPolicy>();
    long entries = 0;
    for (int e = 0; e < endpoints; e++)
    {
        var subject = ids[e % identities];
        if (!perIdentity.TryGetValue(subject.Id, out var compiled))
            perIdentity[subject.Id] = compiled = PolicyCompiler.Compile(subject, [], inputs, sources);
        entries += compiled.Entries.Count;
    }
    var compileMs = sw.Elapsed.TotalMilliseconds;
    sw.Restart();
    long keys = 0;
    foreach (var c in perIdentity.Values)
        keys += PolicyMapBuilder.Build(c.Entries.Select(kv => new PolicyStatement(kv.Key.Identity, (TrafficDirection)kv.Key.Direction,
            (byte)kv.Key.Proto, kv.Key.Port, kv.Key.EndPort, kv.Value.PolicyId, kv.Value.Deny))).Count;
    var layoutMs = sw.Elapsed.TotalMilliseconds;
    Console.WriteLine($"run {run + 1}: full compile {compileMs:0} ms ({perIdentity.Count} distinct endpoint policies, {entries} entries over all endpoints); LPM layout {layoutMs:0} ms ({keys} keys)");
}

int Arg(string name, int dflt)
{
    var i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length && int.TryParse(args[i + 1], out var v) ? v : dflt;
}
