using System.CommandLine;
using System.Text;
using Trellis.Api;
using Trellis.Lab;
using Trellis.ServiceMap;

namespace Trellis.Cli.Commands;

/// <summary>`trellis map`: who talked to whom over the last N minutes, as DOT, SVG or PNG.</summary>
internal static class MapCommand
{
    public static Command Create()
    {
        var since = new Option<string>("--since") { Description = "How far back to look: 30s, 5m, 1h, 1h30m (at most the flows the agent still keeps)", DefaultValueFactory = _ => "5m" };
        var output = new Option<string?>("--output", "-o") { Description = "dot, svg or png; default: from the extension of --file, else dot on stdout" };
        output.AcceptOnlyFromAmong("dot", "svg", "png");
        var file = new Option<string?>("--file", "-f") { Description = "Where to write the map (.svg, .png, .dot); required for png" };
        var namespaces = new Option<string[]>("--namespace", "-n") { Description = "Only connections with an end in this namespace (repeat for more)" };
        var cmd = new Command("map", """
            Draw the service map: who talked to whom, from the flows the agent keeps. A box is a workload (pods grouped by
            namespace and `app` label, else by pod name; world, host and CIDRs as ellipses), an arrow the connections on one
            protocol and port, labelled with the rate and the service they went through. Green: all forwarded; red and
            thick: some were dropped (with the reason); orange: passed only in audit mode. SVG and PNG need Graphviz
            (Debian package graphviz).

            Examples:
              trellis map -f map.svg
              trellis map --since 1h -f map.png
              trellis map -n shop -n data -o svg -f shop.svg
              trellis map | dot -Tpdf > map.pdf
            """);
        cmd.Options.Add(since);
        cmd.Options.Add(output);
        cmd.Options.Add(file);
        cmd.Options.Add(namespaces);
        cmd.SetAction((r, ct) => Global.Run(async () =>
        {
            // Every flag is checked before the agent is asked anything.
            if (!Durations.TryParse(r.GetValue(since), out var window, out var error))
                throw new LabException($"--since: {error}");
            var path = r.GetValue(file);
            if (path is not null && path.Trim().Length == 0) throw new LabException("--file: the path is empty");
            var format = r.GetValue(output) ?? FormatOf(path);
            if (format == "png" && path is null)
                throw new LabException("-o png needs --file PATH (PNG is binary and is not written to the terminal)");
            if (path is not null)
            {
                var dir = Path.GetDirectoryName(Path.GetFullPath(path));
                if (dir is not null && !Directory.Exists(dir)) throw new LabException($"--file {path}: directory {dir} does not exist");
                if (Directory.Exists(path)) throw new LabException($"--file {path} is a directory; name the file, e.g. {Path.Combine(path, "map.svg")}");
            }
            if (format != "dot" && Graphviz.FindDot() is null)
                throw new LabException($"-o {format} needs Graphviz's 'dot', which is not installed: apt-get install {Graphviz.Package} " +
                                       "(scripts/install-deps.sh installs it), or write DOT text with -o dot");
            var wanted = r.GetValue(namespaces) ?? [];
            foreach (var ns in wanted)
                if (ns.Trim().Length == 0) throw new LabException("--namespace: the name is empty");

            var node = r.GetValue(Global.Node)!;
            using var c = new AgentClient(AgentPaths.Socket(node), TimeSpan.FromSeconds(60));
            if (wanted.Length > 0)
            {
                var known = (await c.NamespacesAsync(ct)).Select(n => n.Name).ToHashSet(StringComparer.Ordinal);
                foreach (var ns in wanted)
                    if (!known.Contains(ns))
                        throw new LabException($"--namespace {ns}: no such namespace on node {node} (there are: {string.Join(", ", known.Order(StringComparer.Ordinal))})");
            }
            var status = await c.StatusAsync(ct);
            var flows = new List<FlowDto>();
            await foreach (var f in c.FlowsAsync(Math.Max(1, status.FlowStoreCapacity), follow: false, verdict: null, ct))
                flows.Add(f);

            var now = DateTimeOffset.UtcNow;
            // The agent stamps flows from the kernel's monotonic clock; a flow may be a hair "later" than now.
            var to = flows.Count > 0 && flows.Max(f => f.Time) is var latest && latest > now ? latest : now;
            var graph = ServiceMapBuilder.Build(flows, to - window, to, wanted);
            var title = $"Trellis service map · node {node}" + (wanted.Length > 0 ? $" · namespace {string.Join(", ", wanted.Distinct().Order(StringComparer.Ordinal))}" : "");
            var dot = DotWriter.Write(graph, title);
            byte[] bytes;
            try
            {
                bytes = format == "dot" ? new UTF8Encoding(false).GetBytes(dot) : await Graphviz.RenderAsync(dot, format, ct);
            }
            catch (GraphvizException e)
            {
                throw new LabException(e.Message);
            }

            int drops = graph.Edges.Count(e => e.Dropped > 0);
            var summary = $"{graph.Nodes.Count} workloads, {graph.Edges.Count} edges, {drops} with drops" +
                          (graph.Edges.Count == 0 ? $" (no flows in the last {DotWriter.FormatWindow(window)} on node {node})" : "");
            if (path is null)
            {
                await using (var stdout = Console.OpenStandardOutput())
                    await stdout.WriteAsync(bytes, ct);
                Console.Error.WriteLine($"map: {summary}");
                return 0;
            }
            try
            {
                await File.WriteAllBytesAsync(path, bytes, ct);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new LabException($"cannot write {path}: {e.Message}");
            }
            Console.WriteLine($"wrote {path}: {summary}");
            return 0;
        }));
        return cmd;
    }

    /// <summary>The format a file name asks for: .svg, .png, .dot or .gv; dot when there is no file.</summary>
    private static string FormatOf(string? path)
    {
        if (path is null) return "dot";
        return Path.GetExtension(path).ToLowerInvariant() switch
        {
            ".svg" => "svg",
            ".png" => "png",
            ".dot" or ".gv" => "dot",
            var ext => throw new LabException($"--file {path}: cannot tell the format from {(ext.Length == 0 ? "a name without extension" : $"the extension '{ext}'")}; " +
                                              "name it .svg, .png or .dot, or say -o svg|png|dot"),
        };
    }
}
