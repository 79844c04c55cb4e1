using System.CommandLine;
using Spectre.Console;

namespace Trellis.Cli.Commands;

internal static class StatusCommands
{
    public static Command CreateStatus()
    {
        var cmd = new Command("status", """
            Show the agent's health: kernel and BPF features, endpoints, identities, programs, map fill levels, counters,
            and the state store: embedded (one node) or etcd, with its health and the cluster's nodes.

            Example:
              trellis status
              trellis status -o json
            """);
        var output = Global.OutputOption();
        cmd.Options.Add(output);
        cmd.SetAction((r, ct) => Global.Run(async () =>
        {
            using var c = Global.Client(r);
            var s = await c.StatusAsync(ct);
            if (Global.PrintedJson(r, output, s)) return 0;
            var o = Global.Out;
            o.MarkupLine($"[bold]Agent[/]:       [green]OK[/] node {s.Node}, up since {s.StartedAt.ToLocalTime():u}");
            o.MarkupLine($"[bold]Kernel[/]:      {Markup.Escape(s.Kernel)}");
            o.MarkupLine($"[bold]Features[/]:    {string.Join(", ", s.Features.Select(f => f.Supported ? Markup.Escape(f.Name) : $"[red]{Markup.Escape(f.Name)} (missing)[/]"))}");
            o.MarkupLine($"[bold]Pod CIDR[/]:    {s.PodCidr} (router {s.RouterIp})");
            o.MarkupLine($"[bold]Endpoints[/]:   {s.Endpoints}    [bold]Identities[/]: {s.Identities}    [bold]Policies[/]: {s.Policies}");
            o.MarkupLine($"[bold]Datapath[/]:    {s.PacketsForwarded} packets forwarded, {s.PacketsDropped} dropped, {s.PacketsAudited} audited, {s.EventsLost} events lost");
            o.MarkupLine($"[bold]Policy audit[/]: {(s.PolicyAuditMode ? "[yellow]on (policy drops pass, reported as AUDIT)[/]" : "off")}");
            o.MarkupLine($"[bold]Flows[/]:       {s.FlowsSeen} seen, {s.FlowStoreSize}/{s.FlowStoreCapacity} in store");
            o.MarkupLine($"[bold]Policy maps[/]: {s.PolicyMapWrites} written since start");
            o.MarkupLine($"[bold]Services[/]:    {s.Services}; {s.ServiceConnectsTranslated} connections load-balanced, {s.ServiceConnectsRefused} refused (no backend)");
            o.MarkupLine($"[bold]Socket accel[/]: {(s.SocketAcceleration ? $"on, {s.AcceleratedSockets} spliced sockets (same-node TCP skipping TCP/IP and TC)" : "off")}");
            if (s.Proxy is { } px)
                o.MarkupLine(px.Port == 0 ? "[bold]L7 proxy[/]:    disabled (--proxy-port 0): policies with HTTP rules are refused"
                    : $"[bold]L7 proxy[/]:    {(px.Pid != 0 ? $"[green]running[/] pid {px.Pid}" : "[red]not running[/] (flows that need it are refused)")} on 127.0.0.1:{px.Port}, "
                      + $"{px.L7Endpoints} endpoint(s) with HTTP rules, {px.Records} requests seen, {px.RecordsLost} records lost, {px.Restarts} restarts");
            o.MarkupLine($"[bold]Pins[/]:        {Markup.Escape(s.PinRoot)}    [bold]State[/]: {Markup.Escape(s.StateDir)}");
            if (s.Cluster is { } cl) WriteCluster(o, cl);
            var progs = new Table().AddColumns("PROGRAM", "ID", "ATTACHED VETHS", "RUNS", "AVG NS");
            foreach (var p in s.Programs)
                progs.AddRow(p.Name, p.Id.ToString(), p.AttachedInterfaces.ToString(), p.RunCount.ToString(), p.RunCount == 0 ? "-" : (p.RunTimeNs / p.RunCount).ToString());
            o.Write(progs);
            var maps = new Table().AddColumns("MAP", "ENTRIES", "MAX", "FILL");
            foreach (var m in s.Maps)
                maps.AddRow(m.Name, m.Entries.ToString(), m.MaxEntries.ToString(), $"{100.0 * m.Entries / m.MaxEntries:0.0}%");
            o.Write(maps);
            return 0;
        }));
        return cmd;
    }

    private static void WriteCluster(IAnsiConsole o, Trellis.Api.ClusterStatusDto cl)
    {
        if (cl.Store == "embedded")
        {
            o.MarkupLine("[bold]Store[/]:       embedded (this node only)");
            return;
        }
        var health = cl.Healthy ? "[green]healthy[/]"
            : $"[red]unreachable[/] since {cl.UnreachableSince?.ToLocalTime():u}: {Markup.Escape(cl.Error ?? "")} [yellow](degraded: enforcing the last known state)[/]";
        o.MarkupLine($"[bold]Store[/]:       etcd {Markup.Escape(string.Join(",", cl.Endpoints))} {health}");
        o.MarkupLine($"[bold]Cluster[/]:     {Markup.Escape(cl.Cluster ?? "")}, {cl.Nodes.Count} node(s){(cl.Healthy ? "" : $" as of {cl.NodesAsOf?.ToLocalTime():u}")}");
        var nodes = new Table().AddColumns("NODE", "POD CIDR", "ROUTER", "AGE", "HEALTH");
        var now = DateTimeOffset.UtcNow;
        foreach (var n in cl.Nodes)
            nodes.AddRow(Markup.Escape(n.Name) + (n.Self ? " (this node)" : ""), n.PodCidr, n.RouterIp, Age(now - n.StartedAt),
                cl.Healthy ? "[green]alive[/] (lease renewed)" : "[yellow]unknown[/] (store unreachable)");
        o.Write(nodes);
    }

    private static string Age(TimeSpan t) =>
        t.TotalSeconds < 120 ? $"{Math.Max(0, (int)t.TotalSeconds)}s" : t.TotalMinutes < 120 ? $"{(int)t.TotalMinutes}m" : $"{(int)t.TotalHours}h";

    public static Command CreateEndpoint()
    {
        var list = new Command("list", """
            List the endpoints (pods) on the node with their identity and policy enforcement.

            Example:
              trellis endpoint list
            """);
        var output = Global.OutputOption();
        list.Options.Add(output);
        list.SetAction((r, ct) => Global.Run(async () =>
        {
            using var c = Global.Client(r);
            var eps = await c.EndpointsAsync(ct);
            if (Global.PrintedJson(r, output, eps)) return 0;
            var t = new Table().AddColumns("ID", "NAMESPACE", "POD", "IPv4", "IDENTITY", "INGRESS ENFORCED", "EGRESS ENFORCED", "AUDIT", "INTERFACE", "STATUS", "LABELS");
            foreach (var e in eps)
                t.AddRow(e.Id.ToString(), e.Namespace, e.Pod, e.Ip, e.Identity.ToString(), Enf(e.IngressEnforced), Enf(e.EgressEnforced), e.PolicyAuditMode ? "on" : "off", e.Ifname, e.State,
                    Markup.Escape(string.Join(",", e.Labels.Select(l => $"{l.Key}={l.Value}"))));
            Global.Out.Write(t);
            return 0;
        }));
        var cmd = new Command("endpoint", "Endpoints (pods) managed by the agent.");
        cmd.Subcommands.Add(list);
        cmd.Subcommands.Add(ConfigCommands.CreateEndpointConfig());
        cmd.Subcommands.Add(CreateEndpointGet());
        cmd.Subcommands.Add(EndpointLabelCommand.Create());
        return cmd;
    }

    private static Command CreateEndpointGet()
    {
        var pod = new Argument<string>("pod") { Description = "Pod name" };
        var ns = new Option<string>("--namespace", "-n") { Description = "Pod namespace", DefaultValueFactory = _ => "default" };
        var cmd = new Command("get", """
            Show one endpoint and the policy installed for it in the kernel: per direction, which peers may reach it
            (or it may reach) on which ports, allowed or denied, and by which policy.

            Example:
              trellis endpoint get backend -n shop
            """);
        cmd.Arguments.Add(pod);
        cmd.Options.Add(ns);
        cmd.SetAction((r, ct) => Global.Run(async () =>
        {
            using var c = Global.Client(r);
            var d = await c.GetEndpointAsync(r.GetValue(ns)!, r.GetValue(pod)!, ct);
            var e = d.Endpoint;
            var o = Global.Out;
            o.MarkupLine($"[bold]Endpoint[/] {e.Id}: {e.Namespace}/{e.Pod}  {e.Ip}  identity {e.Identity}  interface {e.Ifname}");
            o.MarkupLine($"[bold]Labels[/]: {Markup.Escape(string.Join(", ", e.Labels.Select(l => $"{l.Key}={l.Value}")))}");
            o.MarkupLine($"[bold]Ingress[/]: {(e.IngressEnforced ? "enforced (default deny)" : "not enforced (all allowed)")}   [bold]Egress[/]: {(e.EgressEnforced ? "enforced (default deny)" : "not enforced (all allowed)")}   [bold]Audit[/]: {(e.PolicyAuditMode ? "on" : "off")}");
            var sel = new Table().AddColumns("SELECTED BY", "RULE", "DIRECTIONS", "DEFAULT DENY", "WRITTEN AT");
            foreach (var s in d.SelectedBy ?? [])
                sel.AddRow(Markup.Escape($"{s.Kind} {(s.Namespace is null ? "" : s.Namespace + "/")}{s.Name}"),
                    Markup.Escape($"#{s.RuleIndex}{(s.Description is null ? "" : " " + s.Description)}"),
                    string.Join(", ", new[] { s.Ingress ? "ingress" : null, s.Egress ? "egress" : null }.OfType<string>()),
                    string.Join(", ", new[] { s.IngressDefaultDeny ? "ingress" : null, s.EgressDefaultDeny ? "egress" : null }.OfType<string>()),
                    Markup.Escape(s.Source));
            if (d.SelectedBy is { Count: > 0 }) o.Write(sel);
            else o.MarkupLine("No policy selects this endpoint.");
            var t = new Table().AddColumns("DIRECTION", "PEER IDENTITY", "PEER LABELS", "PROTOCOL", "PORTS", "VERDICT", "POLICY");
            foreach (var p in d.Policy.OrderBy(p => p.Direction).ThenBy(p => p.PeerIdentity))
                t.AddRow(p.Direction, p.PeerIdentity == 0 ? "any" : p.PeerIdentity.ToString(), Markup.Escape(string.Join(Environment.NewLine, p.PeerLabels)),
                    p.Protocol, p.Ports, p.Verdict == "DENY" ? "[red]DENY[/]" : "[green]ALLOW[/]",
                    Markup.Escape(p.PolicyName is null ? "" : (p.PolicyNamespace is null ? "" : p.PolicyNamespace + "/") + p.PolicyName));
            o.Write(t);
            return 0;
        }));
        return cmd;
    }

    private static string Enf(bool on) => on ? "[yellow]Enabled[/]" : "Disabled";

    public static Command CreateIdentity()
    {
        var list = new Command("list", """
            List security identities: one number per distinct label set (namespace included).

            Example:
              trellis identity list
            """);
        list.SetAction((r, ct) => Global.Run(async () =>
        {
            using var c = Global.Client(r);
            var t = new Table().AddColumns("ID", "ENDPOINTS", "LABELS");
            t.AddRow("1", "-", "reserved:host");
            t.AddRow("2", "-", "reserved:world");
            foreach (var i in await c.IdentitiesAsync(ct))
                t.AddRow(i.Id.ToString(), i.Endpoints.ToString(), Markup.Escape(string.Join(Environment.NewLine, i.Labels.OrderBy(l => l.Key).Select(l => $"k8s:{l.Key}={l.Value}"))));
            Global.Out.Write(t);
            return 0;
        }));
        var cmd = new Command("identity", "Security identities.");
        cmd.Subcommands.Add(list);
        return cmd;
    }
}
