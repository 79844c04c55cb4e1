using System.Text;
using Trellis.Integration.Infrastructure;

namespace Trellis.Integration.PolicyLanguage;

/// <summary>Kubernetes NetworkPolicy truth tables in the style of the upstream netpol e2e tests: namespaces x and
/// y, pods a and b in each, every pair probed at once; the datapath, the policy trace and the expected table
/// must agree. A pod reaching itself goes over its own loopback, never through the datapath, so the diagonal
/// is left out.</summary>
[Collection(LabCollectionB.Name)]
[Trait("Requires", "root")]
public sealed class ReachabilityMatrixTests
{
    private const int Port = 80;
    private static readonly (string Ns, string Pod)[] Pods = [("x", "a"), ("x", "b"), ("y", "a"), ("y", "b")];

    private static string Lab()
    {
        var sb = new StringBuilder();
        foreach (var ns in new[] { "x", "y" })
            sb.Append($"""
                apiVersion: v1
                kind: Namespace
                metadata:
                  name: {ns}
                  labels:
                    ns: {ns}
                ---

                """);
        foreach (var (ns, pod) in Pods)
            sb.Append($"""
                apiVersion: v1
                kind: Pod
                metadata:
                  name: {pod}
                  namespace: {ns}
                  labels:
                    pod: {pod}
                spec:
                  containers:
                    - name: tcp
                      command: ["socat", "TCP-LISTEN:{Port},fork,reuseaddr", "EXEC:cat"]
                ---

                """);
        return sb.ToString();
    }

    /// <summary>Expected reachability: rows are sources, columns destinations, in <see cref="Pods"/> order.</summary>
    public sealed record Case(string Name, string Policy, bool[,] Expected);

    private static readonly Case[] Cases =
    [
        new("deny all ingress in x", """
            apiVersion: networking.k8s.io/v1
            kind: NetworkPolicy
            metadata:
              name: deny-all
              namespace: x
            spec:
              podSelector: {}
              policyTypes: [Ingress]
            """,
            new[,]
            {
                //        x/a    x/b    y/a    y/b
                /* x/a */ { false, false, true,  true },
                /* x/b */ { false, false, true,  true },
                /* y/a */ { false, false, false, true },
                /* y/b */ { false, false, true,  false },
            }),
        new("allow ingress in x from x only", """
            apiVersion: networking.k8s.io/v1
            kind: NetworkPolicy
            metadata:
              name: allow-same-namespace
              namespace: x
            spec:
              podSelector: {}
              ingress:
                - from:
                    - podSelector: {}
            """,
            new[,]
            {
                { false, true,  true,  true },
                { true,  false, true,  true },
                { false, false, false, true },
                { false, false, true,  false },
            }),
        new("x/a admits namespace y only, x/b unselected", """
            apiVersion: networking.k8s.io/v1
            kind: NetworkPolicy
            metadata:
              name: a-from-y
              namespace: x
            spec:
              podSelector:
                matchLabels:
                  pod: a
              ingress:
                - from:
                    - namespaceSelector:
                        matchLabels:
                          ns: y
                  ports:
                    - port: 80
            """,
            new[,]
            {
                { false, true,  true,  true },
                { false, false, true,  true },
                { true,  true,  false, true },
                { true,  true,  true,  false },
            }),
    ];

    [Fact]
    public async Task Observed_matrix_and_policy_trace_match_the_truth_table_for_each_policy()
    {
        await using var lab = await TestLab.UpAsync(Lab());
        foreach (var (ns, pod) in Pods) await lab.Pod(ns, pod).WaitListeningAsync(Port);
        var ips = new Dictionary<(string, string), string>();
        foreach (var p in Pods) ips[p] = await lab.IpAsync(p.Ns, p.Pod);

        var failures = new StringBuilder();
        foreach (var c in Cases)
        {
            var applied = await lab.ApplyPolicyAsync(c.Policy);
            var probes = new List<Task<(int From, int To, bool Connected, bool Traced)>>();
            for (int i = 0; i < Pods.Length; i++)
                for (int j = 0; j < Pods.Length; j++)
                    if (i != j) probes.Add(ProbeAsync(lab, i, j, ips[Pods[j]]));
            var results = await Task.WhenAll(probes);

            var observed = new bool?[Pods.Length, Pods.Length];
            var traced = new bool?[Pods.Length, Pods.Length];
            foreach (var r in results)
            {
                observed[r.From, r.To] = r.Connected;
                traced[r.From, r.To] = r.Traced;
            }
            bool ok = results.All(r => r.Connected == c.Expected[r.From, r.To] && r.Traced == c.Expected[r.From, r.To]);
            if (!ok)
                failures.AppendLine($"{c.Name}:").AppendLine(Table("expected", (i, j) => c.Expected[i, j]))
                    .AppendLine(Table("observed", (i, j) => observed[i, j])).AppendLine(Table("traced", (i, j) => traced[i, j]));

            foreach (var name in applied.Applied)
                await lab.Agent.DeletePolicyAsync("x", name.Split('/').Last());
        }
        Assert.True(failures.Length == 0, failures.ToString());
    }

    private static async Task<(int, int, bool, bool)> ProbeAsync(TestLab lab, int from, int to, string ip)
    {
        var (fns, fpod) = Pods[from];
        var (tns, tpod) = Pods[to];
        var probe = lab.Pod(fns, fpod).ConnectAsync(ip, Port, Probes.Short);
        var trace = await lab.Agent.TraceAsync(new(fns, fpod, null, tns, tpod, null, Port, "TCP"));
        return (from, to, (await probe).Ok, trace.Allowed);
    }

    private static string Table(string title, Func<int, int, bool?> cell)
    {
        var sb = new StringBuilder($"  {title}\n       ");
        foreach (var (ns, pod) in Pods) sb.Append($"  {ns}/{pod} ");
        for (int i = 0; i < Pods.Length; i++)
        {
            sb.Append($"\n  {Pods[i].Ns}/{Pods[i].Pod}  ");
            for (int j = 0; j < Pods.Length; j++)
                sb.Append(i == j ? "  -   " : cell(i, j) switch { true =>"  .   ", false => "  X   ", null => "  ?   " });
        }
        return sb.ToString();
    }
}
