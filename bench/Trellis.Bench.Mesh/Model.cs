namespace Trellis.Bench.Mesh;

/// <summary>One load pattern. HTTP cases run wrk; <see cref="Tcp"/> runs iperf3 (one stream, client to server).</summary>
internal sealed record Case(string Key, string Name, int Threads, int Connections, bool CloseEach = false, bool Tcp = false)
{
    public static readonly IReadOnlyList<Case> All =
    [
        new("ka1", "HTTP keep-alive, 1 connection", 1, 1),
        new("ka16", "HTTP keep-alive, 16 connections", 2, 16),
        new("ka64", "HTTP keep-alive, 64 connections", 2, 64),
        new("close16", "HTTP, new connection per request, 16 connections", 2, 16, CloseEach: true),
        new("tcp", "TCP throughput, 1 stream (iperf3)", 1, 1, Tcp: true),
    ];

    public string Label => Tcp ? Name : $"{Name} (wrk -t{Threads} -c{Connections}{(CloseEach ? ", Connection: close" : "")})";
}

internal enum Kind { Baseline, L4, Accel, L7, Sidecars, NodeProxy }

/// <summary>A way for the client pod's requests to reach the server pod. <see cref="Short"/> labels the chart.</summary>
internal sealed record Scenario(Kind Kind, string Key, string Name, string Short)
{
    public static readonly Scenario Baseline = new(Kind.Baseline, "baseline", "baseline (no mesh)", "baseline");
    public static readonly IReadOnlyList<Scenario> All =
    [
        Baseline,
        new(Kind.L4, "l4", "Trellis L3/L4", "Trellis L3/L4"),
        new(Kind.Accel, "accel", "Trellis + socket acceleration", "socket accel."),
        new(Kind.L7, "l7", "Trellis L7 (node proxy)", "L7 proxy"),
        new(Kind.Sidecars, "sidecars", "sidecars (2x HAProxy, nftables)", "sidecars"),
        new(Kind.NodeProxy, "node-haproxy", "node-local HAProxy hop", "node HAProxy"),
    ];

    /// <summary>Raw TCP cannot cross the L7 proxy: it parses HTTP (a TCP flow on a port with HTTP rules fails).</summary>
    public bool Supports(Case c) => !(c.Tcp && Kind == Kind.L7);
}

/// <summary>CPU time (USER_HZ ticks) of the processes a path involves, over one run.</summary>
internal sealed record CpuUse(long Agent, long NodeProxy, long Sidecars)
{
    public long Total => Agent + NodeProxy + Sidecars;
}

/// <summary>One measured run. HTTP runs fill the wrk figures, TCP runs <see cref="BitsPerSecond"/> and <see cref="Bytes"/>.
/// <see cref="TcPackets"/>: packets Trellis's TC programs forwarded during the run (the agent's counter).
/// <see cref="Programs"/>: run time and runs of each of the node's programs the agent lists (with --bpf-stats).</summary>
internal sealed record Run(int Round, Case Case, Scenario Scenario, double WallSeconds, CpuUse Cpu,
    double RequestsPerSec = 0, long Requests = 0, double P50Us = 0, double P99Us = 0, double BitsPerSecond = 0, long Bytes = 0, long TcPackets = 0,
    IReadOnlyDictionary<string, (ulong Ns, ulong Runs)>? Programs = null);
