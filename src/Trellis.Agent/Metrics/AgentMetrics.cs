using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Prometheus;
using Trellis.Agent.Flows;
using Trellis.Bpf;
using Trellis.Datapath;

namespace Trellis.Agent.Metrics;

/// <summary>The datapath's own counters (per-CPU slots of trellis_counters, summed).</summary>
public readonly record struct DatapathCounters(
    ulong Forwarded, ulong Dropped, ulong Audit, ulong LbTranslated, ulong LbNoBackend, ulong LbNat, ulong EventsLost);

/// <summary>What the agent reports about itself at scrape time (<see cref="NodeAgent.Health"/>).</summary>
public sealed record AgentHealth(
    int Endpoints,
    int Identities,
    int CidrIdentities,
    int Policies,
    int Services,
    IReadOnlyList<MapFill> Maps,
    IReadOnlyList<BpfProgramInfo> Programs,
    DatapathCounters Counters,
    long FlowEventsReceived,
    long PolicyMapWrites,
    Trellis.Api.ProxyStatusDto? Proxy = null);

/// <summary>The agent's Prometheus metrics, in a registry of their own (several agents can live in one process,
/// as in tests). Names follow Hubble (<c>hubble_*</c>: counted from flows) and the Cilium agent (<c>cilium_*</c>)
/// where a metric with the same meaning exists there; the rest are <c>trellis_*</c>.
/// <list type="bullet">
/// <item>Flow metrics are counted from every flow the monitor stores (<see cref="OnFlow"/>, hooked to
/// <see cref="FlowStore.OnAdd"/>): one flow = one event of the ring buffer, i.e. one new connection per direction
/// or one dropped packet. Events the kernel could not queue are not in them; <c>trellis_flow_events_lost_total</c>
/// counts those.</item>
/// <item>Agent and datapath health is read when Prometheus scrapes (<see cref="AgentHealth"/>).</item>
/// </list></summary>
public sealed class AgentMetrics
{
    public CollectorRegistry Registry { get; } = Prometheus.Metrics.NewCustomRegistry();

    // --- counted from flows (the flow monitor's thread) ---
    private readonly Counter _flows;
    private readonly Counter _drops;
    private readonly Counter _dropCount;
    private readonly Counter _policyVerdicts;
    private readonly Counter.Child[] _tcpFlags = new Counter.Child[TcpFlagNames.Length];
    private readonly ConcurrentDictionary<int, Counter.Child> _flowChildren = new();
    private readonly ConcurrentDictionary<int, Counter.Child> _dropChildren = new();
    private readonly ConcurrentDictionary<int, Counter.Child> _dropCountChildren = new();
    private readonly ConcurrentDictionary<int, Counter.Child> _verdictChildren = new();

    // --- scrape time ---
    private readonly Func<AgentHealth>? _health;
    private readonly ILogger? _log;
    private readonly Gauge _endpoints, _identities, _policies, _services, _mapEntries, _mapMax, _mapPressure, _bpfStatsEnabled;
    private readonly Counter _eventsLost, _eventsReceived, _policyMapWrites, _packets, _lbTranslations, _lbNoBackend, _lbNat;
    private readonly Counter _progRunSeconds, _progRuns;
    private readonly Gauge _proxyUp;
    private readonly Counter _proxyRestarts, _l7Records, _l7RecordsLost;

    /// <summary>The Hubble HTTP metric families, from the node proxy's L7 flows (one per request).</summary>
    public Counter HttpRequests { get; }
    public Histogram HttpRequestDuration { get; }

    private static readonly string[] TcpFlagNames = ["SYN", "SYN-ACK", "FIN", "RST"];
    private const byte TcpFin = 0x01, TcpSyn = 0x02, TcpRst = 0x04, TcpAck = 0x10;

    /// <param name="health">Read at every scrape; null exports only the flow metrics (unit tests).</param>
    public AgentMetrics(Func<AgentHealth>? health = null, ILogger? log = null)
    {
        _health = health;
        _log = log;
        var f = Prometheus.Metrics.WithCustomRegistry(Registry);

        _flows = f.CreateCounter("hubble_flows_processed_total",
            "Flows processed, by protocol, type (Trace: a new connection seen at the endpoint, subtype from-endpoint " +
            "for its egress and to-endpoint for its ingress; Drop: a dropped packet; SockTrace: a connect() load-balanced " +
            "to a service backend) and verdict", "protocol", "type", "subtype", "verdict");
        _drops = f.CreateCounter("hubble_drop_total", "Dropped packets reported by the datapath, by drop reason and protocol",
            "reason", "protocol");
        _dropCount = f.CreateCounter("cilium_drop_count_total",
            "Dropped packets reported by the datapath, by drop reason and direction (INGRESS: towards the pod, EGRESS: from it)",
            "reason", "direction");
        _policyVerdicts = f.CreateCounter("hubble_policy_verdicts_total",
            "Policy decisions on new connections and policy drops, by direction, match (rule: a policy rule decided, allow " +
            "or deny; none: no rule allowed it, default deny; all: the direction is not enforced) and action (forwarded, " +
            "dropped, audit)", "direction", "match", "action");
        var tcpFlags = f.CreateCounter("hubble_tcp_flags_total", "TCP flags of the packets flows were reported for", "flag", "family");
        for (int i = 0; i < TcpFlagNames.Length; i++)
            _tcpFlags[i] = tcpFlags.WithLabels(TcpFlagNames[i], "IPv4");

        HttpRequests = f.CreateCounter("hubble_http_requests_total",
            "HTTP requests seen by the node's L7 proxy, by method, protocol, status, reporter (server: the destination's ingress rules sent it to the proxy; client: the source's egress rules) and workloads (namespace/pod)",
            "method", "protocol", "status", "reporter", "source_workload", "destination_workload");
        HttpRequestDuration = f.CreateHistogram("hubble_http_request_duration_seconds",
            "HTTP request duration at the node's L7 proxy (arrival to end of response), by method, status, reporter and workloads",
            new HistogramConfiguration
            {
                LabelNames = ["method", "status", "reporter", "source_workload", "destination_workload"],
                Buckets = Histogram.ExponentialBuckets(0.0005, 2, 16), // 0.5 ms .. ~16 s
            });

        _endpoints = f.CreateGauge("cilium_endpoint", "Endpoints (pods) managed by this agent");
        _identities = f.CreateGauge("cilium_identity",
            "Security identities in use, by type (cluster_local: allocated from pod labels; node_local: one per CIDR a policy names)", "type");
        _policies = f.CreateGauge("cilium_policy", "Policies currently loaded");
        _services = f.CreateGauge("trellis_services", "Services known to the agent");
        _mapEntries = f.CreateGauge("trellis_bpf_map_entries", "Entries in a BPF map", "map_name");
        _mapMax = f.CreateGauge("trellis_bpf_map_max_entries", "Capacity of a BPF map", "map_name");
        _mapPressure = f.CreateGauge("cilium_bpf_map_pressure", "Fill level of a BPF map: entries / max entries", "map_name");
        _eventsLost = f.CreateCounter("trellis_flow_events_lost_total",
            "Flow events the datapath could not report because the ring buffer was full");
        _eventsReceived = f.CreateCounter("trellis_flow_events_received_total", "Flow events the agent read from the ring buffer");
        _policyMapWrites = f.CreateCounter("trellis_policy_map_writes_total",
            "Endpoint policy maps (re)written into the datapath since the agent started");
        _packets = f.CreateCounter("trellis_datapath_packets_total",
            "Packets the pod programs decided, by verdict (forwarded also counts replies; audit: would-be policy drops let through)", "verdict");
        _lbTranslations = f.CreateCounter("trellis_lb_socket_translations_total",
            "Socket connects/sends translated from a service address to a backend");
        _lbNoBackend = f.CreateCounter("trellis_lb_no_backend_total", "Connections to a service that had no backend");
        _lbNat = f.CreateCounter("trellis_lb_nat_packets_total",
            "Packets translated per packet at TC (NodePort DNAT and its reverse)");
        _progRunSeconds = f.CreateCounter("trellis_bpf_program_run_seconds_total",
            "Time the kernel spent running a BPF program (0 unless kernel.bpf_stats_enabled=1)", "program");
        _progRuns = f.CreateCounter("trellis_bpf_program_runs_total",
            "Runs of a BPF program (0 unless kernel.bpf_stats_enabled=1)", "program");
        _bpfStatsEnabled = f.CreateGauge("trellis_bpf_stats_enabled",
            "1 when the kernel counts BPF program run time and runs (sysctl kernel.bpf_stats_enabled)");

        _proxyUp = f.CreateGauge("trellis_proxy_up", "1 when the node's L7 proxy process is running (0 also when disabled)");
        _proxyRestarts = f.CreateCounter("trellis_proxy_restarts_total", "Times the agent found the L7 proxy dead and started it again");
        _l7Records = f.CreateCounter("trellis_l7_records_received_total", "L7 (HTTP) records received from the node's proxy");
        _l7RecordsLost = f.CreateCounter("trellis_l7_records_lost_total",
            "L7 records the proxy could not deliver (its bounded queue was full, or no agent was listening)");

        if (health is not null)
        {
            DotNetStats.Register(Registry); // process_* and dotnet_* of the agent process
            Registry.AddBeforeCollectCallback(Collect);
        }
    }

    /// <summary>Counts one flow. Runs on the flow monitor's thread for every flow: no allocation once the label
    /// combination has been seen (children are cached by a small integer key).</summary>
    public void OnFlow(StoredFlow flow)
    {
        var e = flow.Raw;
        if (flow.L7?.Http is { } http)
        {
            OnHttp(flow, http);
            return;
        }
        var verdict = (Verdict)e.Verdict;
        int dir = e.Dir & 1;
        _flowChildren.GetOrAdd(e.Verdict << 9 | dir << 8 | e.Proto, static (k, m) => m._flows.WithLabels(
            FlowConverter.Protocol((byte)k), TypeOf((Verdict)(k >> 9)), SubtypeOf((Verdict)(k >> 9), (k >> 8) & 1),
            ((Verdict)(k >> 9)).ToString().ToUpperInvariant()), this).Inc();

        if (verdict == Verdict.Dropped)
        {
            _dropChildren.GetOrAdd(e.Reason << 8 | e.Proto, static (k, m) =>
                m._drops.WithLabels(DropReasons.Describe((DropReason)(k >> 8)), FlowConverter.Protocol((byte)k)), this).Inc();
            _dropCountChildren.GetOrAdd(e.Reason << 1 | dir, static (k, m) =>
                m._dropCount.WithLabels(DropReasons.Describe((DropReason)(k >> 1)), DirectionName(k & 1)), this).Inc();
        }

        if (PolicyMatch(e) is int match)
            _verdictChildren.GetOrAdd(e.Verdict << 3 | dir << 2 | match, static (k, m) => m._policyVerdicts.WithLabels(
                DirectionName((k >> 2) & 1).ToLowerInvariant(), MatchNames[k & 3], ((Verdict)(k >> 3)).ToString().ToLowerInvariant()), this).Inc();

        if (e.Proto == 6)
        {
            byte flags = e.TcpFlags;
            if ((flags & TcpSyn) != 0) _tcpFlags[(flags & TcpAck) != 0 ? 1 : 0].Inc();
            if ((flags & TcpFin) != 0) _tcpFlags[2].Inc();
            if ((flags & TcpRst) != 0) _tcpFlags[3].Inc();
        }
    }

    private void OnHttp(in StoredFlow flow, Trellis.Api.HttpRecordDto http)
    {
        var e = flow.Raw;
        var verdict = ((Verdict)e.Verdict).ToString().ToUpperInvariant();
        _flows.WithLabels("HTTP", "L7", "HTTP", verdict).Inc();
        if ((Verdict)e.Verdict == Verdict.Dropped)
        {
            _drops.WithLabels(DropReasons.Describe((DropReason)e.Reason), "HTTP").Inc();
            _dropCount.WithLabels(DropReasons.Describe((DropReason)e.Reason), DirectionName(e.Dir & 1)).Inc();
        }
        var status = http.Code.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var reporter = e.Dir == (byte)TrafficDirection.Ingress ? "server" : "client";
        var source = flow.Source is { } s ? $"{s.Namespace}/{s.Pod}" : "";
        var destination = flow.Destination is { } d ? $"{d.Namespace}/{d.Pod}" : "";
        HttpRequests.WithLabels(http.Method, http.Protocol, status, reporter, source, destination).Inc();
        HttpRequestDuration.WithLabels(http.Method, status, reporter, source, destination).Observe(flow.L7!.LatencyNs / 1e9);
    }

    private static readonly string[] MatchNames = ["rule", "none", "all"];

    /// <summary>Which policy verdict a flow is (index into <see cref="MatchNames"/>), or null when policy did not
    /// decide it (a non-policy drop, a socket translation).</summary>
    private static int? PolicyMatch(in FlowEvent e) => (Verdict)e.Verdict switch
    {
        Verdict.Forwarded => e.PolicyId != 0 ? 0 : 2,
        Verdict.Dropped or Verdict.Audit => (DropReason)e.Reason switch
        {
            DropReason.PolicyDenyRule => 0,
            DropReason.PolicyDenied => 1,
            _ => null,
        },
        _ => null,
    };

    private static string TypeOf(Verdict v) => v switch
    {
        Verdict.Dropped => "Drop",
        Verdict.Translated => "SockTrace",
        _ => "Trace",
    };

    private static string SubtypeOf(Verdict v, int dir) => v switch
    {
        Verdict.Dropped or Verdict.Translated => "",
        _ => dir == (int)TrafficDirection.Egress ? "from-endpoint" : "to-endpoint",
    };

    private static string DirectionName(int dir) => dir == (int)TrafficDirection.Ingress ? "INGRESS" : "EGRESS";

    // --- scrape time ---

    private void Collect()
    {
        AgentHealth h;
        try
        {
            h = _health!();
        }
        catch (Exception e)
        {
            // A failed read leaves the last values in place; the flow metrics are still served.
            _log?.LogWarning(e, "reading the agent's state for metrics failed");
            return;
        }
        _endpoints.Set(h.Endpoints);
        _identities.WithLabels("cluster_local").Set(h.Identities);
        _identities.WithLabels("node_local").Set(h.CidrIdentities);
        _policies.Set(h.Policies);
        _services.Set(h.Services);
        foreach (var m in h.Maps)
        {
            _mapEntries.WithLabels(m.Name).Set(m.Entries);
            _mapMax.WithLabels(m.Name).Set(m.MaxEntries);
            _mapPressure.WithLabels(m.Name).Set(m.MaxEntries == 0 ? 0 : (double)m.Entries / m.MaxEntries);
        }
        foreach (var p in h.Programs)
        {
            _progRunSeconds.WithLabels(p.Name).IncTo(p.RunTimeNs / 1e9);
            _progRuns.WithLabels(p.Name).IncTo(p.RunCount);
        }
        _bpfStatsEnabled.Set(BpfStatsEnabled() ? 1 : 0);
        var c = h.Counters;
        _packets.WithLabels("forwarded").IncTo(c.Forwarded);
        _packets.WithLabels("dropped").IncTo(c.Dropped);
        _packets.WithLabels("audit").IncTo(c.Audit);
        _lbTranslations.IncTo(c.LbTranslated);
        _lbNoBackend.IncTo(c.LbNoBackend);
        _lbNat.IncTo(c.LbNat);
        _eventsLost.IncTo(c.EventsLost);
        _eventsReceived.IncTo(h.FlowEventsReceived);
        _policyMapWrites.IncTo(h.PolicyMapWrites);
        if (h.Proxy is { } proxy)
        {
            _proxyUp.Set(proxy.Pid != 0 ? 1 : 0);
            _proxyRestarts.IncTo(proxy.Restarts);
            _l7Records.IncTo(proxy.Records);
            _l7RecordsLost.IncTo(proxy.RecordsLost);
        }
    }

    private static bool BpfStatsEnabled()
    {
        try { return File.ReadAllText("/proc/sys/kernel/bpf_stats_enabled").Trim() == "1"; }
        catch (IOException) { return false; }
        catch (UnauthorizedAccessException) { return false; }
    }

    /// <summary>The registry in Prometheus' text format, as a scrape returns it.</summary>
    public async Task<string> ExportAsTextAsync(CancellationToken ct = default)
    {
        using var s = new MemoryStream();
        await Registry.CollectAndExportAsTextAsync(s, ct);
        return System.Text.Encoding.UTF8.GetString(s.ToArray());
    }
}
