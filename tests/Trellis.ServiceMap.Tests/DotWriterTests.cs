using System.Buffers.Binary;
using System.Xml;
using System.Xml.Linq;
using static Trellis.ServiceMap.Tests.Fixture;

namespace Trellis.ServiceMap.Tests;

public sealed class DotWriterTests
{
    private static string Dot() => DotWriter.Write(ServiceMapBuilder.Build(Flows(), T0, T1), "Trellis service map · node node1");

    /// <summary>The one line of the DOT text that draws the edge from → to.</summary>
    private static string EdgeLine(string dot, string from, string to) =>
        Assert.Single(dot.Split('\n'), l => l.TrimStart().StartsWith($"\"{from}\" -> \"{to}\" ", StringComparison.Ordinal));

    [Fact]
    public void Allowed_edges_are_green_and_labelled_with_protocol_port_rate_and_service()
    {
        var line = EdgeLine(Dot(), "pod:shop/frontend", "pod:shop/backend");
        Assert.Contains("label=\"TCP/8080 · 0.4/min (2 flows)\\nvia shop/backend:http (1 of 2)\"", line);
        Assert.Contains($"color=\"{DotWriter.Green}\"", line);
        Assert.Contains("style=solid", line);
        Assert.DoesNotContain("dropped", line);

        var world = EdgeLine(Dot(), "world", "pod:shop/web");
        Assert.Contains("label=\"TCP/8080 · 0.2/min (1 flow)\\nvia shop/web:http\"", world);
        Assert.Contains($"color=\"{DotWriter.Green}\"", world);
    }

    [Fact]
    public void Denied_edge_is_red_bold_thick_and_says_how_many_were_dropped_and_why()
    {
        var line = EdgeLine(Dot(), "pod:shop/frontend", "pod:data/db");
        Assert.Contains("label=\"TCP/5432 · 0.4/min (2 flows)\\n✗ 2 dropped (policy denied)\"", line);
        Assert.Contains($"color=\"{DotWriter.Red}\"", line);
        Assert.Contains($"fontcolor=\"{DotWriter.Red}\"", line);
        Assert.Contains("style=bold", line);
        Assert.Contains("penwidth=3.5", line);
        Assert.Contains("arrowhead=tee", line);
    }

    [Fact]
    public void Audit_edge_is_orange_and_dashed()
    {
        var line = EdgeLine(Dot(), "pod:shop/backend", "pod:data/db");
        Assert.Contains("label=\"TCP/5432 · 0.2/min (1 flow)\\n⚠ 1 audit (policy denied)\"", line);
        Assert.Contains($"color=\"{DotWriter.Orange}\"", line);
        Assert.Contains("style=dashed", line);
    }

    [Fact]
    public void Namespaces_are_clusters_and_nodes_outside_the_cluster_are_ellipses()
    {
        var dot = Dot();
        Assert.Equal(2, dot.Split('\n').Count(l => l.Contains("subgraph \"cluster_")));
        Assert.Contains("graph [label=\"namespace data\"", dot);
        Assert.Contains("graph [label=\"namespace shop\"", dot);
        Assert.Contains("\"pod:shop/backend\" [label=\"backend\\n2 pods\\n10.200.0.3, 10.200.0.5\"];", dot);
        Assert.Contains("\"pod:shop/frontend\" [label=\"frontend\\npod frontend-7d9f\\n10.200.0.2\"];", dot);
        Assert.Contains("\"world\" [label=\"world\\n203.0.113.7\", shape=ellipse", dot);
        Assert.Contains("\"host\" [label=\"host\\n10.200.0.1\", shape=ellipse", dot);
        Assert.Equal(5, dot.Split('\n').Count(l => l.Contains(" -> ")));
    }

    [Fact]
    public void The_same_flows_in_any_order_give_the_same_text()
    {
        var shuffled = Flows();
        new Random(7).Shuffle(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(shuffled));
        Assert.Equal(Dot(), DotWriter.Write(ServiceMapBuilder.Build(shuffled, T0, T1), "Trellis service map · node node1"));
        Assert.Contains("2025-01-01 12:00:00 – 12:05:00 UTC (5m)", Dot());
    }

    [Fact]
    public void Caption_is_an_html_label_with_a_coloured_legend_and_escapes_the_title()
    {
        var dot = DotWriter.Write(ServiceMapBuilder.Build(Flows(), T0, T1), "node <a&b> \"x\"");
        var caption = Assert.Single(dot.Split('\n'), l => l.Contains("graph [rankdir=LR"));
        Assert.Contains("label=<node &lt;a&amp;b&gt; &quot;x&quot;<br/>2025-01-01 12:00:00 – 12:05:00 UTC (5m)<br/>", caption);
        Assert.Contains($"<font color=\"{DotWriter.Red}\"><b>━ dropped</b></font>", caption);
    }

    [Fact]
    public void An_edge_partly_through_a_service_says_how_many_went_through_it()
    {
        var g = ServiceMapBuilder.Build([Flow(Frontend(1), Backend1()), Flow(Frontend(2), Backend1(), service: "shop/backend:http")], T0, T1);
        Assert.Equal("TCP/8080 · 0.4/min (2 flows)\nvia shop/backend:http (1 of 2)", DotWriter.EdgeLabel(Assert.Single(g.Edges)));
    }

    [Theory]
    [InlineData("plain", "\"plain\"")]
    [InlineData("say \"hi\"", "\"say \\\"hi\\\"\"")]
    [InlineData(@"back\slash", "\"back\\\\slash\"")]
    [InlineData("two\nlines\r", "\"two\\nlines\"")]
    [InlineData("bell\u0007", "\"bell\"")]
    [InlineData("ünïcode ✗", "\"ünïcode ✗\"")]
    public void Quote_escapes_dot_strings(string text, string quoted)
    {
        Assert.Equal(quoted, DotWriter.Quote(text));
    }

    [Theory]
    [InlineData(35.4, "35/s")]
    [InlineData(1.234, "1.2/s")]
    [InlineData(0.1, "0.1/s")]
    [InlineData(2 / 300.0, "0.4/min")]
    [InlineData(0.0001, "<0.1/min")]
    public void Rates_are_per_second_or_per_minute(double perSecond, string text)
    {
        Assert.Equal(text, DotWriter.FormatRate(perSecond));
    }

    [Fact]
    public async Task Real_dot_renders_svg_with_the_workloads_and_the_red_edge_and_a_png()
    {
        Assert.True(Graphviz.FindDot() is not null, "Graphviz's dot is not installed: apt-get install graphviz (scripts/install-deps.sh)");
        var dot = Dot();
        var dir = Directory.CreateTempSubdirectory("trellis-map-test-").FullName;
        try
        {
            var svgPath = Path.Combine(dir, "map.svg");
            await File.WriteAllBytesAsync(svgPath, await Graphviz.RenderAsync(dot, "svg"));
            XDocument svg;
            using (var reader = XmlReader.Create(svgPath, new XmlReaderSettings { DtdProcessing = DtdProcessing.Ignore, XmlResolver = null }))
                svg = XDocument.Load(reader);
            XNamespace ns = "http://www.w3.org/2000/svg";
            Assert.Equal(ns + "svg", svg.Root!.Name);
            var texts = svg.Descendants(ns + "text").Select(t => t.Value).ToList();
            foreach (var name in new[] { "frontend", "backend", "db", "web", "world", "host", "namespace shop", "namespace data", "✗ 2 dropped (policy denied)" })
                Assert.Contains(name, texts);
            Assert.Contains(svg.Descendants(ns + "path"), p => (string?)p.Attribute("stroke") == DotWriter.Red);
            Assert.Contains(svg.Descendants(ns + "path"), p => (string?)p.Attribute("stroke") == DotWriter.Green);

            var pngPath = Path.Combine(dir, "map.png");
            await File.WriteAllBytesAsync(pngPath, await Graphviz.RenderAsync(dot, "png"));
            var png = await File.ReadAllBytesAsync(pngPath);
            Assert.Equal(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A }, png[..8]);
            Assert.True(png.Length > 10_000, $"a PNG of 6 nodes and 5 labelled edges is more than {png.Length} bytes");
            Assert.Equal("IHDR", System.Text.Encoding.ASCII.GetString(png, 12, 4));
            int width = BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(16)), height = BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(20));
            Assert.InRange(width, 300, 5000);
            Assert.InRange(height, 150, 5000);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task Names_with_quotes_and_backslashes_survive_a_real_dot_and_an_empty_map_renders_too()
    {
        var odd = Pod("we\"ird", "a\\b \"c\"", "10.200.0.9", 1234, 400);
        var g = ServiceMapBuilder.Build([Flow(odd, Db(), verdict: "DROPPED", reason: "policy \"denied\"")], T0, T1);
        var svg = System.Text.Encoding.UTF8.GetString(await Graphviz.RenderAsync(DotWriter.Write(g), "svg"));
        Assert.Contains("a\\b &quot;c&quot;", svg);
        Assert.Contains("namespace we&quot;ird", svg);

        var empty = DotWriter.Write(ServiceMapBuilder.Build([], T0, T1));
        Assert.Contains("no flows in this window", empty);
        Assert.StartsWith("<?xml", System.Text.Encoding.UTF8.GetString(await Graphviz.RenderAsync(empty, "svg")));
    }

    [Fact]
    public async Task Invalid_dot_is_a_graphviz_error_with_dots_message()
    {
        var e = await Assert.ThrowsAsync<GraphvizException>(() => Graphviz.RenderAsync("digraph { a -> ", "svg"));
        Assert.Contains("syntax error", e.Message);
    }
}
