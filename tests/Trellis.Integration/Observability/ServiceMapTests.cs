using System.Diagnostics;
using System.Xml;
using System.Xml.Linq;
using Trellis.Integration.Infrastructure;

namespace Trellis.Integration.Observability;

/// <summary>`trellis map` against real traffic: frontend → backend allowed, frontend → db denied by policy.</summary>
[Collection(LabCollectionA.Name)]
[Trait("Requires", "root")]
public sealed class ServiceMapTests
{
    private const string Green = "#2e7d32", Red = "#d50000";

    private const string Lab = """
        apiVersion: v1
        kind: Namespace
        metadata:
          name: shop
        ---
        apiVersion: v1
        kind: Namespace
        metadata:
          name: data
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: frontend
          namespace: shop
          labels:
            app: frontend
        spec:
          containers:
            - name: web
              command: ["python3", "-m", "http.server", "8080"]
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: backend-0
          namespace: shop
          labels:
            app: backend
        spec:
          containers:
            - name: api
              command: ["python3", "-m", "http.server", "8080"]
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: db
          namespace: data
          labels:
            app: db
        spec:
          containers:
            - name: db
              command: ["socat", "TCP-LISTEN:5432,fork,reuseaddr", "EXEC:cat"]
        """;

    private const string DbFromBackendOnly = """
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata:
          name: db-from-backend
          namespace: data
        spec:
          endpointSelector:
            matchLabels:
              app: db
          ingress:
            - fromEndpoints:
                - matchLabels:
                    app: backend
                    k8s:io.kubernetes.pod.namespace: shop
              toPorts:
                - ports:
                    - port: "5432"
                      protocol: TCP
        """;

    private static string? EdgeLine(string dot, string from, string to) =>
        dot.Split('\n').SingleOrDefault(l => l.TrimStart().StartsWith($"\"{from}\" -> \"{to}\" ", StringComparison.Ordinal));

    [Fact]
    public async Task Map_shows_the_allowed_edge_green_and_the_denied_edge_red_with_its_drops_as_dot_svg_and_png()
    {
        await using var lab = await TestLab.UpAsync(Lab);
        var frontend = lab.Pod("shop", "frontend");
        var backend = lab.Pod("shop", "backend-0");
        var db = lab.Pod("data", "db");
        await frontend.WaitListeningAsync(8080);
        await backend.WaitListeningAsync(8080);
        await db.WaitListeningAsync(5432);
        var backendIp = await lab.IpAsync("shop", "backend-0");
        var dbIp = await lab.IpAsync("data", "db");
        await lab.ApplyPolicyAsync(DbFromBackendOnly);

        for (int i = 0; i < 3; i++)
            Assert.True((await frontend.HttpGetAsync(backendIp, 8080)).Ok, "frontend -> backend:8080 is allowed");
        Assert.True((await backend.TcpConnectAsync(dbIp, 5432)).Ok, "backend -> db:5432 is allowed");
        Assert.True((await db.HttpGetAsync(backendIp, 8080)).Ok, "db -> backend:8080 is allowed (the other way round)");
        for (int i = 0; i < 2; i++)
            Assert.False((await frontend.TcpConnectAsync(dbIp, 5432)).Ok, "frontend -> db:5432 is denied");
        await lab.WaitForFlowAsync(f => f.Verdict == "DROPPED" && f.Source.Pod == "frontend" && f.Destination.Pod == "db", "DROPPED frontend -> db");
        await lab.WaitForFlowAsync(f => f.Verdict == "FORWARDED" && f.Source.Pod == "db" && f.Destination.Pod == "backend-0", "FORWARDED db -> backend");

        var r = await TrellisCli.RunAsync("map", "--node", lab.Node, "-o", "dot");
        Assert.True(r.Ok, $"trellis map -o dot: {r}");
        var dot = r.Stdout;
        Assert.Contains("3 workloads, 4 edges, 1 with drops", r.Stderr); // the summary goes to stderr when the map is on stdout

        var allowed = EdgeLine(dot, "pod:shop/frontend", "pod:shop/backend");
        Assert.True(allowed is not null, $"no frontend -> backend edge in:\n{dot}");
        Assert.Contains($"color=\"{Green}\"", allowed);
        Assert.Contains("TCP/8080", allowed);
        Assert.Contains("(3 flows)", allowed);
        Assert.DoesNotContain("dropped", allowed);

        var denied = EdgeLine(dot, "pod:shop/frontend", "pod:data/db");
        Assert.True(denied is not null, $"no frontend -> db edge in:\n{dot}");
        Assert.Contains($"color=\"{Red}\"", denied);
        Assert.Contains("TCP/5432", denied);
        Assert.Contains("✗ 2 dropped (policy denied)", denied);
        Assert.Contains("style=bold", denied);

        Assert.Contains($"color=\"{Green}\"", EdgeLine(dot, "pod:shop/backend", "pod:data/db") ?? $"no backend -> db edge in:\n{dot}");
        Assert.Contains($"color=\"{Green}\"", EdgeLine(dot, "pod:data/db", "pod:shop/backend") ?? $"no db -> backend edge in:\n{dot}");
        Assert.Null(EdgeLine(dot, "pod:shop/backend", "pod:shop/frontend")); // replies are not edges
        Assert.Contains("\"pod:shop/backend\" [label=\"backend\\npod backend-0\\n", dot);
        Assert.Contains("label=\"namespace data\"", dot);

        var svgPath = Path.Combine(lab.Dir, "map.svg");
        r = await TrellisCli.RunAsync("map", "--node", lab.Node, "-f", svgPath);
        Assert.True(r.Ok, $"trellis map -f map.svg: {r}");
        Assert.Equal($"wrote {svgPath}: 3 workloads, 4 edges, 1 with drops", r.Stdout.Trim());
        XDocument svg;
        using (var reader = XmlReader.Create(svgPath, new XmlReaderSettings { DtdProcessing = DtdProcessing.Ignore, XmlResolver = null }))
            svg = XDocument.Load(reader);
        XNamespace ns = "http://www.w3.org/2000/svg";
        Assert.Equal(ns + "svg", svg.Root!.Name);
        var texts = svg.Descendants(ns + "text").Select(t => t.Value).ToList();
        foreach (var text in new[] { "frontend", "backend", "db", "✗ 2 dropped (policy denied)" })
            Assert.Contains(text, texts);
        Assert.Contains(svg.Descendants(ns + "path"), p => (string?)p.Attribute("stroke") == Red);

        var pngPath = Path.Combine(lab.Dir, "map.png");
        r = await TrellisCli.RunAsync("map", "--node", lab.Node, "--since", "10m", "-f", pngPath);
        Assert.True(r.Ok, $"trellis map -f map.png: {r}");
        var png = await File.ReadAllBytesAsync(pngPath);
        Assert.Equal(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A }, png[..8]);
        Assert.True(png.Length > 5_000, $"map.png has only {png.Length} bytes");

        // Only what touches namespace data: the shop-internal edge goes.
        r = await TrellisCli.RunAsync("map", "--node", lab.Node, "-n", "data");
        Assert.True(r.Ok, $"trellis map -n data: {r}");
        Assert.Null(EdgeLine(r.Stdout, "pod:shop/frontend", "pod:shop/backend"));
        Assert.NotNull(EdgeLine(r.Stdout, "pod:shop/frontend", "pod:data/db"));
        Assert.Contains("3 workloads, 3 edges, 1 with drops", r.Stderr);
    }

    [Fact]
    public async Task Bad_flags_and_a_missing_graphviz_give_clear_errors_before_the_agent_is_asked()
    {
        // No lab: every one of these must fail on its flags, not on the missing agent.
        foreach (var (args, message) in new (string[], string)[]
                 {
                     (["--since", "5x"], "--since: '5x' is not a duration"),
                     (["--since", "0s"], "is zero"),
                     (["-f", "map.jpg"], "cannot tell the format from the extension '.jpg'"),
                     (["-o", "png"], "-o png needs --file"),
                     (["-f", "/nonexistent-dir/map.svg"], "directory /nonexistent-dir does not exist"),
                     (["-o", "gif"], "'gif' not recognized"),
                 })
        {
            var r = await TrellisCli.RunAsync(["map", "--node", "it-nomap", .. args]);
            Assert.False(r.Ok, $"trellis map {string.Join(' ', args)} must fail: {r}");
            Assert.Contains(message, r.Stderr);
        }

        // Without Graphviz on PATH, svg fails at once and names the package.
        var psi = new ProcessStartInfo(TestLab.TrellisExe) { UseShellExecute = false, RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { "map", "--node", "it-nomap", "-f", "/tmp/trellis-nomap.svg" }) psi.ArgumentList.Add(a);
        psi.Environment["PATH"] = Directory.CreateTempSubdirectory("trellis-empty-path-").FullName;
        if (string.IsNullOrEmpty(Environment.GetEnvironmentVariable("DOTNET_ROOT")) && DotnetRoot() is { } root)
            psi.Environment["DOTNET_ROOT"] = root; // the apphost finds the runtime without PATH
        var noDot = await Processes.RunAsync(psi, TimeSpan.FromSeconds(60));
        Directory.Delete(psi.Environment["PATH"]!);
        Assert.False(noDot.Ok, $"map -f x.svg without dot must fail: {noDot}");
        Assert.Contains("apt-get install graphviz", noDot.Stderr);
        Assert.False(File.Exists("/tmp/trellis-nomap.svg"));
    }

    /// <summary>The directory of the dotnet on PATH (symlinks resolved).</summary>
    private static string? DotnetRoot()
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            var f = new FileInfo(Path.Combine(dir, "dotnet"));
            if (!f.Exists) continue;
            var target = f.ResolveLinkTarget(returnFinalTarget: true) as FileInfo ?? f;
            return target.DirectoryName;
        }
        return null;
    }
}
