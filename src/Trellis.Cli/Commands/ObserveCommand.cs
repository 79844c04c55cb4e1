using System.CommandLine;
using System.Text.Json;
using Spectre.Console;
using Trellis.Api;

namespace Trellis.Cli.Commands;

internal static class ObserveCommand
{
    public static Command Create()
    {
        static Option<string[]> Many(string name, string description, params string[] aliases) =>
            new(name, aliases) { Description = description, Arity = ArgumentArity.OneOrMore };
        var ns = Many("--namespace", "Flows from or to pods in this namespace", "-n");
        var pod = Many("--pod", "Flows from or to this pod ([namespace/]name prefix)");
        var fromPod = Many("--from-pod", "Flows from this pod ([namespace/]name prefix)");
        var toPod = Many("--to-pod", "Flows to this pod ([namespace/]name prefix)");
        var label = Many("--label", "Flows from or to endpoints with this label (key=value, key!=value or key)", "-l");
        var fromLabel = Many("--from-label", "Flows from endpoints with this label");
        var toLabel = Many("--to-label", "Flows to endpoints with this label");
        var identity = Many("--identity", "Flows from or to this security identity (number)");
        var fromIdentity = Many("--from-identity", "Flows from this security identity");
        var toIdentity = Many("--to-identity", "Flows to this security identity");
        var ip = Many("--ip", "Flows from or to this IP or CIDR");
        var fromIp = Many("--from-ip", "Flows from this IP or CIDR");
        var toIp = Many("--to-ip", "Flows to this IP or CIDR");
        var port = Many("--port", "Flows from or to this port");
        var toPort = Many("--to-port", "Flows to this port");
        var toService = Many("--to-service", "Flows load-balanced through this service ([namespace/]name prefix)");
        var verdict = Many("--verdict", "FORWARDED, DROPPED, AUDIT, REDIRECTED, ERROR or TRANSLATED");
        var protocol = Many("--protocol", "tcp, udp, icmp, sctp, or http, dns (flows with that L7 record)");
        var httpStatus = Many("--http-status", "HTTP status code, or a prefix like 5+");
        var httpMethod = Many("--http-method", "HTTP method (GET, POST, ...)");
        var direction = Many("--traffic-direction", "ingress or egress");
        var dropReason = Many("--drop-reason", "Drop reason, e.g. \"policy denied\" (see 'trellis observe --help')");
        var since = new Option<string?>("--since") { Description = "Only flows after this: a duration ago (30s, 5m, 1h30m) or a time (2026-11-23T10:00:00Z)" };
        var until = new Option<string?>("--until") { Description = "Only flows before this (same forms as --since); not with --follow" };
        var follow = new Option<bool>("--follow", "-f") { Description = "Keep printing new flows as they happen" };
        var output = new Option<string>("--output", "-o") { Description = "compact (one line a flow, coloured on a terminal), dict (one block a flow) or json (one object a line)", DefaultValueFactory = _ => "compact" };
        output.AcceptOnlyFromAmong("compact", "dict", "json");
        var last = new Option<int>("--last") { Description = "How many recent matching flows to show first", DefaultValueFactory = _ => 20 };
        var cmd = new Command("observe", $$"""
            Show flows the datapath saw: every new connection, every drop and every service translation, with
            identities, the service used, and the policy that allowed or denied it. Filters combine as in Hubble:
            different options must all match, repeating an option matches any of its values, and options without
            from-/to- (--pod, --label, --namespace, ...) match either side of the flow.

            Drop reasons: {{string.Join(", ", Enum.GetValues<Trellis.Datapath.DropReason>().Where(d => d != Trellis.Datapath.DropReason.None).Select(Trellis.Datapath.DropReasons.Describe))}}.

            Examples:
              trellis observe --last 50
              trellis observe --verdict DROPPED --follow
              trellis observe --from-pod shop/frontend --to-pod data/db --verdict DROPPED
              trellis observe -n shop --protocol tcp --port 8080 --since 5m -o dict
              trellis observe --label app=web --to-service shop/web -o json
            """);
        Option[] all = [ns, pod, fromPod, toPod, label, fromLabel, toLabel, identity, fromIdentity, toIdentity, ip, fromIp, toIp, port, toPort,
            toService, verdict, protocol, httpStatus, httpMethod, direction, dropReason, since, until, follow, output, last];
        foreach (var o in all) cmd.Options.Add(o);
        cmd.SetAction((r, ct) => Global.Run(async () =>
        {
            if (r.GetValue(last) < 0) throw new Trellis.Lab.LabException("--last must be 0 or more");
            var b = new FlowFilterBuilder();
            var namespaces = r.GetValue(ns) ?? [];
            string Qualify(string p) => p.Contains('/') || namespaces.Length != 1 ? p : $"{namespaces[0]}/{p}";
            foreach (var p in r.GetValue(fromPod) ?? []) b.From(f => f with { SourcePod = [.. f.SourcePod ?? [], Qualify(p)] });
            foreach (var p in r.GetValue(toPod) ?? []) b.To(f => f with { DestinationPod = [.. f.DestinationPod ?? [], Qualify(p)] });
            foreach (var l in r.GetValue(fromLabel) ?? []) b.From(f => f with { SourceLabel = [.. f.SourceLabel ?? [], l] });
            foreach (var l in r.GetValue(toLabel) ?? []) b.To(f => f with { DestinationLabel = [.. f.DestinationLabel ?? [], l] });
            foreach (var i in Identities(r.GetValue(fromIdentity))) b.From(f => f with { SourceIdentity = [.. f.SourceIdentity ?? [], i] });
            foreach (var i in Identities(r.GetValue(toIdentity))) b.To(f => f with { DestinationIdentity = [.. f.DestinationIdentity ?? [], i] });
            foreach (var a in r.GetValue(fromIp) ?? []) b.From(f => f with { SourceIp = [.. f.SourceIp ?? [], a] });
            foreach (var a in r.GetValue(toIp) ?? []) b.To(f => f with { DestinationIp = [.. f.DestinationIp ?? [], a] });
            foreach (var p in r.GetValue(toPort) ?? []) b.To(f => f with { DestinationPort = [.. f.DestinationPort ?? [], p] });
            foreach (var svc in r.GetValue(toService) ?? []) b.To(f => f with { DestinationService = [.. f.DestinationService ?? [], Qualify(svc)] });
            // Either side: the pod (or label, ...) as source in one filter, as destination in the other.
            var podsEither = (r.GetValue(pod) ?? []).Select(Qualify).ToList();
            if (r.GetValue(pod) is not { Length: > 0 } && namespaces.Length > 0) podsEither.AddRange(namespaces.Select(n => n + "/"));
            if (podsEither.Count > 0) b.Either(f => f with { SourcePod = [.. f.SourcePod ?? [], .. podsEither] }, f => f with { DestinationPod = [.. f.DestinationPod ?? [], .. podsEither] });
            if (r.GetValue(label) is { Length: > 0 } ls) b.Either(f => f with { SourceLabel = [.. f.SourceLabel ?? [], .. ls] }, f => f with { DestinationLabel = [.. f.DestinationLabel ?? [], .. ls] });
            if (Identities(r.GetValue(identity)) is { Count: > 0 } ids) b.Either(f => f with { SourceIdentity = [.. f.SourceIdentity ?? [], .. ids] }, f => f with { DestinationIdentity = [.. f.DestinationIdentity ?? [], .. ids] });
            if (r.GetValue(ip) is { Length: > 0 } ips) b.Either(f => f with { SourceIp = [.. f.SourceIp ?? [], .. ips] }, f => f with { DestinationIp = [.. f.DestinationIp ?? [], .. ips] });
            if (r.GetValue(port) is { Length: > 0 } ports) b.Either(f => f with { SourcePort = [.. f.SourcePort ?? [], .. ports] }, f => f with { DestinationPort = [.. f.DestinationPort ?? [], .. ports] });
            // Not tied to a side.
            if (r.GetValue(verdict) is { Length: > 0 } vs) b.Both(f => f with { Verdict = vs.Select(v => v.ToUpperInvariant()).ToList() });
            if (r.GetValue(protocol) is { Length: > 0 } ps) b.Both(f => f with { Protocol = ps });
            if (r.GetValue(httpStatus) is { Length: > 0 } hs) b.Both(f => f with { HttpStatusCode = hs });
            if (r.GetValue(httpMethod) is { Length: > 0 } hm) b.Both(f => f with { HttpMethod = hm });
            if (r.GetValue(direction) is { Length: > 0 } ds) b.Both(f => f with { TrafficDirection = ds.Select(d => d.ToUpperInvariant()).ToList() });
            if (r.GetValue(dropReason) is { Length: > 0 } rs) b.Both(f => f with { DropReason = rs });

            var filters = b.Build();
            foreach (var f in filters)
                if (FlowFilters.Validate(f) is { } problem) throw new Trellis.Lab.LabException(problem);
            var now = DateTimeOffset.UtcNow;
            var request = new FlowsRequest
            {
                Last = r.GetValue(last),
                Follow = r.GetValue(follow),
                Since = r.GetValue(since) is { } s ? ParseTime(s, "--since", now) : null,
                Until = r.GetValue(until) is { } u ? ParseTime(u, "--until", now) : null,
                Whitelist = filters,
            };
            if (request.Follow && request.Until is not null) throw new Trellis.Lab.LabException("--until cannot be used with --follow");
            using var c = new AgentClient(AgentPaths.Socket(r.GetValue(Global.Node)!), Timeout.InfiniteTimeSpan);
            var mode = r.GetValue(output);
            await foreach (var f in c.FlowsAsync(request, ct))
            {
                if (mode == "json") Console.WriteLine(JsonSerializer.Serialize(f, AgentClient.Json));
                else if (mode == "dict") Console.Write(Dict(f));
                else Global.Out.MarkupLine(Compact(f));
            }
            return 0;
        }));
        return cmd;
    }

    private static List<uint> Identities(string[]? values) =>
        (values ?? []).Select(v => uint.TryParse(v, out var id) ? id : throw new Trellis.Lab.LabException($"identity '{v}' is not a number (see 'trellis identity list')")).ToList();

    /// <summary>A duration ago ("90s", "5m", "1h30m", "2d") or an absolute time (ISO 8601).</summary>
    internal static DateTimeOffset ParseTime(string text, string option, DateTimeOffset now)
    {
        var m = System.Text.RegularExpressions.Regex.Match(text, @"^(?:(\d+)(ms|s|m|h|d))+$");
        if (m.Success)
        {
            var total = TimeSpan.Zero;
            for (int i = 0; i < m.Groups[1].Captures.Count; i++)
            {
                var n = long.Parse(m.Groups[1].Captures[i].Value);
                total += m.Groups[2].Captures[i].Value switch
                {
                    "ms" => TimeSpan.FromMilliseconds(n),
                    "s" => TimeSpan.FromSeconds(n),
                    "m" => TimeSpan.FromMinutes(n),
                    "h" => TimeSpan.FromHours(n),
                    _ => TimeSpan.FromDays(n),
                };
            }
            return now - total;
        }
        if (DateTimeOffset.TryParse(text, System.Globalization.CultureInfo.InvariantCulture,
                System.Globalization.DateTimeStyles.AssumeUniversal, out var t))
            return t;
        throw new Trellis.Lab.LabException($"{option} '{text}' is neither a duration (30s, 5m, 1h30m) nor a time (2026-11-23T10:00:00Z)");
    }

    /// <summary>One block a flow, like hubble observe -o dict.</summary>
    internal static string Dict(FlowDto f)
    {
        static string Who(FlowEndpointDto e) =>
            (e.Pod is not null ? $"{e.Namespace}/{e.Pod}" : e.Ip) + (e.Port != 0 ? $":{e.Port}" : "") + $" (ID:{e.Identity}, {e.Ip})";
        var sb = new System.Text.StringBuilder();
        void Row(string k, string? v) { if (!string.IsNullOrEmpty(v)) sb.Append(k.PadLeft(12)).Append(": ").Append(v).Append('\n'); }
        Row("TIMESTAMP", f.Time.ToString("O"));
        Row("NODE", f.Node);
        Row("SOURCE", Who(f.Source));
        Row("DESTINATION", Who(f.Destination));
        Row("SERVICE", f.Service);
        Row("DIRECTION", f.Direction + (f.IsReply ? " (reply)" : ""));
        Row("VERDICT", f.Verdict);
        Row("DROP REASON", f.DropReason);
        Row("POLICY", f.PolicyName is null ? null : (f.PolicyNamespace is null ? "" : f.PolicyNamespace + "/") + f.PolicyName);
        Row("SUMMARY", f.TcpFlags.Count > 0 ? $"{f.Protocol} Flags: {string.Join(", ", f.TcpFlags)}" : f.Protocol);
        if (f.L7?.Http is { } h) Row("HTTP", $"{h.Method} {h.Url} {h.Code} ({f.L7.LatencyNs / 1e6:0.###} ms)");
        if (f.L7?.Dns is { } d) Row("DNS", $"{d.Query} -> {string.Join(",", d.Ips)} (rcode {d.Rcode})");
        sb.Append("------------\n");
        return sb.ToString();
    }

    /// <summary>One line a flow, in the spirit of `hubble observe`.</summary>
    internal static string Compact(FlowDto f)
    {
        static string Who(FlowEndpointDto e) =>
            (e.Pod is not null ? $"{e.Namespace}/{e.Pod}" : e.Ip == "0.0.0.0" && e.Identity == 1 ? "host" : e.Ip) + (e.Port != 0 ? $":{e.Port}" : "") + $" (ID:{e.Identity})";
        var verdict = f.Verdict switch
        {
            "FORWARDED" => "[green]FORWARDED[/]",
            "DROPPED" => "[red]DROPPED[/]",
            var v => $"[yellow]{v}[/]",
        };
        var detail = f.L7?.Http is { } h ? $" http-{f.L7.Type.ToLowerInvariant()} {h.Method} {h.Url}{(h.Code > 0 ? $" {h.Code}" : "")}"
            : f.L7?.Dns is { } d ? $" dns {d.Query}{(d.Ips.Count > 0 ? " -> " + string.Join(",", d.Ips) : "")}"
            : f.TcpFlags.Count > 0 ? $" (TCP Flags: {string.Join(", ", f.TcpFlags)})" : $" ({f.Protocol})";
        var policy = f.PolicyName is null ? null : Markup.Escape((f.PolicyNamespace is null ? "" : f.PolicyNamespace + "/") + f.PolicyName);
        var why = f.DropReason is not null ? $" [red]{Markup.Escape(f.DropReason)}[/]{(policy is null ? "" : $" ({policy})")}"
            : policy is not null ? $" by policy {policy}" : "";
        var service = f.Service is null ? "" : $" via service {f.Service}";
        return $"{f.Time.ToLocalTime():MMM dd HH:mm:ss.fff} [[{Markup.Escape(f.Node)}]] {Markup.Escape(Who(f.Source))} -> {Markup.Escape(Who(f.Destination) + service)} " +
               $"{f.Direction.ToLowerInvariant()} {verdict}{Markup.Escape(detail)}{why}";
    }
}
