using System.Globalization;
using System.Text;

namespace Trellis.ServiceMap;

/// <summary>
/// Writes a <see cref="ServiceGraph"/> as Graphviz DOT: left to right, one dashed cluster per namespace, nodes outside
/// the cluster (world, host, CIDRs) as ellipses. Edges: green = every connection forwarded, red and thick = some
/// dropped, orange and dashed = some passed only in audit mode. Labels: "TCP/8080 · 1.2/s (360 flows)", then
/// "via ns/svc:port", then "✗ 3 dropped (policy denied)". The same graph always gives the same text.
/// </summary>
public static class DotWriter
{
    public const string Green = "#2e7d32";
    public const string Red = "#d50000";
    public const string Orange = "#ef6c00";

    /// <param name="title">First line of the map's caption; the window and a colour legend follow.</param>
    public static string Write(ServiceGraph g, string? title = null)
    {
        var sb = new StringBuilder();
        var caption = new List<string>
        {
            Html(title ?? "Trellis service map"),
            Html($"{g.From.UtcDateTime:yyyy-MM-dd HH:mm:ss} – {g.To.UtcDateTime:HH:mm:ss} UTC ({FormatWindow(g.Window)})"),
            g.Edges.Count == 0
                ? "no flows in this window"
                : $"<font color=\"{Green}\">━ forwarded</font>    <font color=\"{Red}\"><b>━ dropped</b></font>    <font color=\"{Orange}\">╍ audit (would be dropped)</font>",
        };

        sb.Append("digraph \"trellis-service-map\" {\n");
        // newrank: rank across namespace clusters as if they were not there, so a pair talking both ways gets two
        // separate arrows with readable labels instead of two overlapping ones between clusters.
        sb.Append("  graph [rankdir=LR, newrank=true, fontname=\"Helvetica\", fontsize=13, labelloc=t, labeljust=l, nodesep=0.6, ranksep=1.2, pad=0.4, bgcolor=\"white\", label=<")
          .Append(string.Join("<br/>", caption)).Append(">];\n");
        sb.Append("  node [shape=box, style=\"rounded,filled\", fillcolor=\"#e8f0fe\", color=\"#3c6bb3\", fontname=\"Helvetica\", fontsize=12, margin=\"0.2,0.1\"];\n");
        sb.Append("  edge [fontname=\"Helvetica\", fontsize=10, arrowsize=0.9];\n");

        int cluster = 0;
        foreach (var ns in g.Nodes.Where(n => n.Namespace is not null).GroupBy(n => n.Namespace!))
        {
            sb.Append("  subgraph ").Append(Quote($"cluster_{cluster++}")).Append(" {\n");
            sb.Append("    graph [label=").Append(Quote($"namespace {ns.Key}"))
              .Append(", style=\"rounded,dashed\", color=\"#9e9e9e\", fontcolor=\"#616161\", fontsize=11, labeljust=l];\n");
            foreach (var n in ns) sb.Append("    ").Append(NodeLine(n)).Append('\n');
            sb.Append("  }\n");
        }
        foreach (var n in g.Nodes.Where(n => n.Namespace is null))
            sb.Append("  ").Append(NodeLine(n)).Append('\n');

        foreach (var e in g.Edges)
        {
            var (color, style, width) = e.Verdict switch
            {
                EdgeVerdict.Dropped => (Red, "bold", "3.5"),
                EdgeVerdict.Audit => (Orange, "dashed", "2.5"),
                _ => (Green, "solid", "1.8"),
            };
            sb.Append("  ").Append(Quote(e.From)).Append(" -> ").Append(Quote(e.To))
              .Append(" [label=").Append(Quote(EdgeLabel(e)))
              .Append(", color=").Append(Quote(color)).Append(", fontcolor=").Append(Quote(color))
              .Append(", style=").Append(style).Append(", penwidth=").Append(width);
            if (e.Verdict == EdgeVerdict.Dropped) sb.Append(", fontname=\"Helvetica-Bold\"");
            if (e.Dropped > 0 && e.Forwarded == 0 && e.Audit == 0) sb.Append(", arrowhead=tee"); // nothing got through
            sb.Append("];\n");
        }
        sb.Append("}\n");
        return sb.ToString();
    }

    /// <summary>The text on an edge, one fact a line.</summary>
    public static string EdgeLabel(MapEdge e)
    {
        var lines = new List<string>
        {
            $"{(e.Port != 0 ? $"{e.Protocol}/{e.Port}" : e.Protocol)} · {FormatRate(e.PerSecond)} ({e.Flows} {(e.Flows == 1 ? "flow" : "flows")})",
        };
        var via = e.ViaService < e.Flows ? $" ({e.ViaService} of {e.Flows})" : "";
        lines.AddRange(e.Services.Select(s => $"via {s}{via}"));
        if (e.Forwarded > 0 && e.Verdict != EdgeVerdict.Forwarded) lines.Add($"✓ {e.Forwarded} forwarded");
        if (e.Dropped > 0) lines.Add($"✗ {e.Dropped} dropped{Reasons(e.DropReasons)}");
        if (e.Audit > 0) lines.Add($"⚠ {e.Audit} audit{Reasons(e.AuditReasons)}");
        return string.Join('\n', lines);
    }

    private static string Reasons(IReadOnlyList<string> r) => r.Count == 0 ? "" : $" ({string.Join(", ", r)})";

    private static string NodeLine(MapNode n)
    {
        var lines = new List<string> { n.Kind == NodeKind.Cidr ? $"cidr {n.Name}" : n.Name };
        if (n.Kind == NodeKind.Workload)
        {
            if (n.Pods.Count > 1) lines.Add($"{n.Pods.Count} pods");
            else if (n.Pods.Count == 1 && n.Pods[0] != n.Name) lines.Add($"pod {n.Pods[0]}");
        }
        if (n.Ips.Count > 0) lines.Add(n.Ips.Count <= 3 ? string.Join(", ", n.Ips) : $"{string.Join(", ", n.Ips.Take(3))} +{n.Ips.Count - 3} more");
        var attrs = n.Kind switch
        {
            NodeKind.Workload => "",
            NodeKind.Unknown => ", shape=ellipse, fillcolor=\"#eeeeee\", color=\"#757575\"",
            _ => ", shape=ellipse, fillcolor=\"#fff8e1\", color=\"#8d6e63\"",
        };
        return $"{Quote(n.Id)} [label={Quote(string.Join('\n', lines))}{attrs}];";
    }

    /// <summary>"1.2/s", "35/s", "0.6/min" (under 0.1/s), "&lt;0.1/min".</summary>
    public static string FormatRate(double perSecond)
    {
        var c = CultureInfo.InvariantCulture;
        if (perSecond >= 10) return perSecond.ToString("0", c) + "/s";
        if (perSecond >= 0.1) return perSecond.ToString("0.0", c) + "/s";
        double perMinute = perSecond * 60;
        return perMinute >= 0.1 ? perMinute.ToString("0.0", c) + "/min" : "<0.1/min";
    }

    /// <summary>"5m", "30s", "1h30m".</summary>
    public static string FormatWindow(TimeSpan t)
    {
        var parts = new List<string>();
        if ((int)t.TotalHours > 0) parts.Add($"{(int)t.TotalHours}h");
        if (t.Minutes > 0) parts.Add($"{t.Minutes}m");
        if (t.Seconds > 0 || parts.Count == 0) parts.Add($"{t.Seconds}s");
        return string.Join("", parts);
    }

    /// <summary>Text inside a DOT HTML-like label (&amp;, &lt;, &gt;, quotes escaped; line breaks dropped).</summary>
    public static string Html(string s) =>
        System.Net.WebUtility.HtmlEncode(new string(s.Where(c => c >= ' ' && c != '\u007f').ToArray()));

    /// <summary>A DOT quoted string (an ID or an escString label): backslash and double quote escaped, line breaks
    /// as \n (centred lines), other control characters dropped. Anything is safe to pass.</summary>
    public static string Quote(string s)
    {
        var sb = new StringBuilder(s.Length + 2).Append('"');
        foreach (var ch in s)
        {
            switch (ch)
            {
                case '\\': sb.Append(@"\\"); break;
                case '"': sb.Append("\\\""); break;
                case '\n': sb.Append(@"\n"); break;
                case '\r': break;
                case < ' ' or '\u007f': break;
                default: sb.Append(ch); break;
            }
        }
        return sb.Append('"').ToString();
    }
}
