using System.Net;
using Trellis.Agent.Flows;
using Trellis.Agent.Metrics;
using Trellis.Datapath;

namespace Trellis.Agent.Tests.Metrics;

public sealed class AgentMetricsTests
{
    private const byte Tcp = 6, Udp = 17;
    private const byte Syn = 0x02, Ack = 0x10, Fin = 0x01, Rst = 0x04;

    private static StoredFlow Flow(Verdict verdict, TrafficDirection dir, byte proto = Tcp, DropReason reason = DropReason.None,
        uint policyId = 0, byte tcpFlags = 0) =>
        new(new FlowEvent
        {
            Verdict = (byte)verdict,
            Dir = (byte)dir,
            Proto = proto,
            Reason = (byte)reason,
            PolicyId = policyId,
            TcpFlags = tcpFlags,
            SAddr = 0x0100000a,
            DAddr = 0x0200000a,
            SPort = 40000,
            DPort = 8080,
        }, DateTimeOffset.UnixEpoch, null, null, null, null, null);

    /// <summary>The value of one series in the text exposition, matched on its full label set; null when absent.</summary>
    private static double? Value(string text, string series)
    {
        foreach (var line in text.Split('\n'))
            if (line.StartsWith(series + " ", StringComparison.Ordinal))
                return double.Parse(line[(series.Length + 1)..].Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
        return null;
    }

    [Fact]
    public async Task Flows_are_counted_by_verdict_type_reason_direction_and_flags()
    {
        var m = new AgentMetrics();
        // 3 allowed TCP connections out of a pod (a rule of policy 7 allowed them), SYN seen.
        for (int i = 0; i < 3; i++) m.OnFlow(Flow(Verdict.Forwarded, TrafficDirection.Egress, policyId: 7, tcpFlags: Syn));
        // 1 allowed into a pod whose ingress is not enforced, SYN-ACK.
        m.OnFlow(Flow(Verdict.Forwarded, TrafficDirection.Ingress, tcpFlags: Syn | Ack));
        // 2 TCP packets dropped at ingress by default deny, one dropped by a deny rule, a UDP one at egress.
        m.OnFlow(Flow(Verdict.Dropped, TrafficDirection.Ingress, reason: DropReason.PolicyDenied, tcpFlags: Syn));
        m.OnFlow(Flow(Verdict.Dropped, TrafficDirection.Ingress, reason: DropReason.PolicyDenied, tcpFlags: Syn));
        m.OnFlow(Flow(Verdict.Dropped, TrafficDirection.Ingress, reason: DropReason.PolicyDenyRule, policyId: 9, tcpFlags: Fin | Ack));
        m.OnFlow(Flow(Verdict.Dropped, TrafficDirection.Egress, proto: Udp, reason: DropReason.PolicyDenied));
        // Not a policy decision: an invalid source address, and a socket translation.
        m.OnFlow(Flow(Verdict.Dropped, TrafficDirection.Egress, reason: DropReason.InvalidSource, tcpFlags: Rst));
        m.OnFlow(Flow(Verdict.Translated, TrafficDirection.Egress));
        // Audit: a would-be default-deny drop let through.
        m.OnFlow(Flow(Verdict.Audit, TrafficDirection.Ingress, reason: DropReason.PolicyDenied, tcpFlags: Syn));

        var text = await m.ExportAsTextAsync();

        Assert.Equal(3, Value(text, """hubble_flows_processed_total{protocol="TCP",type="Trace",subtype="from-endpoint",verdict="FORWARDED"}"""));
        Assert.Equal(1, Value(text, """hubble_flows_processed_total{protocol="TCP",type="Trace",subtype="to-endpoint",verdict="FORWARDED"}"""));
        Assert.Equal(4, Value(text, """hubble_flows_processed_total{protocol="TCP",type="Drop",subtype="",verdict="DROPPED"}"""));
        Assert.Equal(1, Value(text, """hubble_flows_processed_total{protocol="UDP",type="Drop",subtype="",verdict="DROPPED"}"""));
        Assert.Equal(1, Value(text, """hubble_flows_processed_total{protocol="TCP",type="SockTrace",subtype="",verdict="TRANSLATED"}"""));
        Assert.Equal(1, Value(text, """hubble_flows_processed_total{protocol="TCP",type="Trace",subtype="to-endpoint",verdict="AUDIT"}"""));

        Assert.Equal(2, Value(text, """hubble_drop_total{reason="policy denied",protocol="TCP"}"""));
        Assert.Equal(1, Value(text, """hubble_drop_total{reason="policy denied",protocol="UDP"}"""));
        Assert.Equal(1, Value(text, """hubble_drop_total{reason="policy deny rule",protocol="TCP"}"""));
        Assert.Equal(1, Value(text, """hubble_drop_total{reason="invalid source address",protocol="TCP"}"""));
        Assert.Equal(2, Value(text, """cilium_drop_count_total{reason="policy denied",direction="INGRESS"}"""));
        Assert.Equal(1, Value(text, """cilium_drop_count_total{reason="policy denied",direction="EGRESS"}"""));
        Assert.Equal(1, Value(text, """cilium_drop_count_total{reason="policy deny rule",direction="INGRESS"}"""));
        Assert.Equal(1, Value(text, """cilium_drop_count_total{reason="invalid source address",direction="EGRESS"}"""));

        Assert.Equal(3, Value(text, """hubble_policy_verdicts_total{direction="egress",match="rule",action="forwarded"}"""));
        Assert.Equal(1, Value(text, """hubble_policy_verdicts_total{direction="ingress",match="all",action="forwarded"}"""));
        Assert.Equal(2, Value(text, """hubble_policy_verdicts_total{direction="ingress",match="none",action="dropped"}"""));
        Assert.Equal(1, Value(text, """hubble_policy_verdicts_total{direction="ingress",match="rule",action="dropped"}"""));
        Assert.Equal(1, Value(text, """hubble_policy_verdicts_total{direction="egress",match="none",action="dropped"}"""));
        Assert.Equal(1, Value(text, """hubble_policy_verdicts_total{direction="ingress",match="none",action="audit"}"""));
        // 9 policy decisions in all: the invalid-source drop and the translation are not policy verdicts.
        Assert.Equal(9, text.Split('\n').Where(l => l.StartsWith("hubble_policy_verdicts_total{", StringComparison.Ordinal))
            .Sum(l => double.Parse(l.Split(' ')[^1], System.Globalization.CultureInfo.InvariantCulture)));

        Assert.Equal(6, Value(text, """hubble_tcp_flags_total{flag="SYN",family="IPv4"}"""));
        Assert.Equal(1, Value(text, """hubble_tcp_flags_total{flag="SYN-ACK",family="IPv4"}"""));
        Assert.Equal(1, Value(text, """hubble_tcp_flags_total{flag="FIN",family="IPv4"}"""));
        Assert.Equal(1, Value(text, """hubble_tcp_flags_total{flag="RST",family="IPv4"}"""));
    }

    [Fact]
    public async Task Http_families_are_declared_but_have_no_series_without_an_L7_proxy()
    {
        var m = new AgentMetrics();
        m.OnFlow(Flow(Verdict.Forwarded, TrafficDirection.Egress, tcpFlags: Syn));
        var text = await m.ExportAsTextAsync();
        Assert.DoesNotContain("hubble_http_requests_total{", text);
        Assert.DoesNotContain("hubble_http_request_duration_seconds_bucket{", text);
        Assert.Equal(["method", "protocol", "status", "reporter", "source_workload", "destination_workload"], m.HttpRequests.LabelNames);
    }

    [Fact]
    public async Task Agent_health_is_read_at_scrape_time()
    {
        int scrapes = 0;
        var m = new AgentMetrics(() =>
        {
            scrapes++;
            return new AgentHealth(3, 5, 1, 2, 4,
                [new MapFill("trellis_ct", 25, 100), new MapFill("trellis_ipcache", 0, 512)],
                [new Trellis.Bpf.BpfProgramInfo(42, "from_container", 2_500_000_000, 10)],
                new DatapathCounters(Forwarded: 100, Dropped: 7, Audit: 1, LbTranslated: 3, LbNoBackend: 2, LbNat: 5, EventsLost: 4),
                FlowEventsReceived: 11 * scrapes, PolicyMapWrites: 6);
        });
        var text = await m.ExportAsTextAsync();
        Assert.Equal(1, scrapes);
        Assert.Equal(3, Value(text, "cilium_endpoint"));
        Assert.Equal(5, Value(text, """cilium_identity{type="cluster_local"}"""));
        Assert.Equal(1, Value(text, """cilium_identity{type="node_local"}"""));
        Assert.Equal(2, Value(text, "cilium_policy"));
        Assert.Equal(4, Value(text, "trellis_services"));
        Assert.Equal(25, Value(text, """trellis_bpf_map_entries{map_name="trellis_ct"}"""));
        Assert.Equal(100, Value(text, """trellis_bpf_map_max_entries{map_name="trellis_ct"}"""));
        Assert.Equal(0.25, Value(text, """cilium_bpf_map_pressure{map_name="trellis_ct"}"""));
        Assert.Equal(2.5, Value(text, """trellis_bpf_program_run_seconds_total{program="from_container"}"""));
        Assert.Equal(10, Value(text, """trellis_bpf_program_runs_total{program="from_container"}"""));
        Assert.Equal(100, Value(text, """trellis_datapath_packets_total{verdict="forwarded"}"""));
        Assert.Equal(7, Value(text, """trellis_datapath_packets_total{verdict="dropped"}"""));
        Assert.Equal(1, Value(text, """trellis_datapath_packets_total{verdict="audit"}"""));
        Assert.Equal(3, Value(text, "trellis_lb_socket_translations_total"));
        Assert.Equal(2, Value(text, "trellis_lb_no_backend_total"));
        Assert.Equal(5, Value(text, "trellis_lb_nat_packets_total"));
        Assert.Equal(4, Value(text, "trellis_flow_events_lost_total"));
        Assert.Equal(11, Value(text, "trellis_flow_events_received_total"));
        Assert.Equal(6, Value(text, "trellis_policy_map_writes_total"));
        Assert.NotNull(Value(text, "trellis_bpf_stats_enabled"));
        Assert.Contains("process_start_time_seconds", text);

        // A second scrape reads again.
        text = await m.ExportAsTextAsync();
        Assert.Equal(2, scrapes);
        Assert.Equal(22, Value(text, "trellis_flow_events_received_total"));
    }

    [Theory]
    [InlineData("127.0.0.1:9962", "127.0.0.1", 9962)]
    [InlineData(":9962", "0.0.0.0", 9962)]
    [InlineData("localhost:1", "127.0.0.1", 1)]
    [InlineData("[::1]:9962", "::1", 9962)]
    [InlineData("10.0.0.1:0", "10.0.0.1", 0)]
    public void Metrics_addresses_parse(string text, string ip, int port)
    {
        var ep = MetricsServer.ParseAddress(text);
        Assert.Equal(IPAddress.Parse(ip), ep.Address);
        Assert.Equal(port, ep.Port);
    }

    [Theory]
    [InlineData("9962", "is not HOST:PORT")]
    [InlineData("127.0.0.1:", "port '' is not a number")]
    [InlineData("127.0.0.1:99999", "port '99999' is not a number from 0 to 65535")]
    [InlineData("127.0.0.1:-1", "port '-1'")]
    [InlineData("example.org:9962", "host 'example.org' is not an IPv4 address")]
    [InlineData("::1:9962", "host '::1' is not")]
    [InlineData("127.1:9962", "host '127.1' is not")]
    public void Bad_metrics_addresses_are_refused_with_a_reason(string text, string message)
    {
        var e = Assert.Throws<FormatException>(() => MetricsServer.ParseAddress(text));
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public async Task The_server_serves_the_registry_over_http_and_refuses_a_taken_address()
    {
        var m = new AgentMetrics();
        m.OnFlow(Flow(Verdict.Dropped, TrafficDirection.Ingress, reason: DropReason.PolicyDenied));
        await using var server = await MetricsServer.StartAsync(m, new IPEndPoint(IPAddress.Loopback, 0));
        Assert.NotEqual(0, server.Address.Port);
        using var http = new HttpClient();
        var response = await http.GetAsync($"http://{MetricsServer.Format(server.Address)}/metrics");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.StartsWith("text/plain", response.Content.Headers.ContentType?.MediaType);
        var body = await response.Content.ReadAsStringAsync();
        Assert.Equal(1, Value(body, """hubble_drop_total{reason="policy denied",protocol="TCP"}"""));

        var e = await Assert.ThrowsAsync<AgentException>(() => MetricsServer.StartAsync(new AgentMetrics(), server.Address));
        Assert.Contains($"cannot listen on {MetricsServer.Format(server.Address)} (the address is in use)", e.Message);
    }
}
