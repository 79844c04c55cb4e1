// Run (as root): dotnet run -c Release --project bench/Trellis.Bench.ServiceMaps [--services N] [--backends M]
using System.Diagnostics;
using Trellis.Agent.Endpoints;
using Trellis.Agent.Services;
using Trellis.Agent.State;
using Trellis.Datapath;
using Trellis.Policy;

// Loads S services x B backends into the kernel maps with the agent's ServiceManager.Sync (the code a
// real agent runs), in a scratch pin root and state dir that are removed afterwards.
int services = Arg("--services", 10_000), backends = Arg("--backends", 10);
var pinRoot = $"/sys/fs/bpf/trellis-bench-{Environment.ProcessId}";
// /var/tmp, not /tmp: persistence is the point of the apply figure, and /tmp may be tmpfs.
var stateDir = $"/var/tmp/trellis-bench-{Environment.ProcessId}";
try
{
    using var dp = NodeDatapath.Load(pinRoot);
    var store = new FileStateStore(stateDir);
    var manager = new ServiceManager(store, dp, "10.96.0.0/12", "bench", LbAlgorithm.Random);

    // Endpoints: one app label per service, B pods each.
    var endpoints = new List<EndpointState>(services * backends);
    for (int s = 0; s < services; s++)
        for (int b = 0; b < backends; b++)
        {
            int n = s * backends + b;
            endpoints.Add(new EndpointState
            {
                Id = (uint)n + 1, Namespace = "bench", Pod = $"p{n}", Labels = new() { ["app"] = $"svc{s}" },
                Ip = $"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}", Ifname = "-", NetnsPath = "-", CgroupPath = "-", Identity = 256,
            });
        }
    var sw = Stopwatch.StartNew();
    var yaml = string.Join("---\n", Enumerable.Range(0, services).Select(s => $$"""
        apiVersion: v1
        kind: Service
        metadata: {name: svc{{s}}, namespace: bench}
        spec:
          selector: {app: svc{{s}}}
          ports: [{port: 80, targetPort: 8080}]

        """));
    var parsed = ManifestParser.Parse(yaml, "bench.yaml").OfType<ServiceResource>().ToList();
    var parseMs = sw.Elapsed.TotalMilliseconds;
    sw.Restart();
    manager.Apply(parsed, "bench.yaml", yaml); // one batch, as `trellis service apply -f` of one file
    var applyMs = sw.Elapsed.TotalMilliseconds;

    sw.Restart();
    manager.Sync(endpoints);
    var syncMs = sw.Elapsed.TotalMilliseconds;
    sw.Restart();
    manager.Sync(endpoints); // nothing changed: the steady-state cost of a resync
    var resyncMs = sw.Elapsed.TotalMilliseconds;

    Console.WriteLine($"{services} services x {backends} backends: parse {parseMs:0} ms, apply+persist {applyMs:0} ms, " +
        $"map load {syncMs:0} ms ({dp.Lb4Frontends.Count()} frontends, {dp.Lb4Backends.Count()} backend slots), full resync {resyncMs:0} ms");
}
finally
{
    NodeDatapath.RemovePins(pinRoot);
    if (Directory.Exists(stateDir)) Directory.Delete(stateDir, recursive: true);
}

int Arg(string name, int dflt)
{
    var i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length && int.TryParse(args[i + 1], out var v) ? v : dflt;
}
