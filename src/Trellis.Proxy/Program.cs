using System.Net;
using Trellis.Proxy.Node;

namespace Trellis.Proxy;

/// <summary>
/// `trellis-proxy`: the node-local L7 proxy process. The agent starts and supervises it (one per node); it is not
/// meant to be started by hand, but can be for debugging.
/// </summary>
internal static class Program
{
    private const string Usage =
        "usage: trellis-proxy --node NAME --policy-file FILE --records-socket PATH --pin-root DIR [--listen IP:PORT] [--pid-file FILE]\n" +
        "Started by `trellis agent` (one per node); runs in the node's network namespace, as root.\n" +
        "example: trellis-proxy --node lab --listen 127.0.0.1:15001 --policy-file /run/trellis/lab/proxy/policy.json \\\n" +
        "           --records-socket /run/trellis/lab/l7.sock --pin-root /sys/fs/bpf/trellis/lab";

    private static async Task<int> Main(string[] args)
    {
        string? node = null, policy = null, records = null, pinRoot = null, pidFile = null;
        var listen = new IPEndPoint(IPAddress.Loopback, 15001);
        for (var i = 0; i < args.Length; i++)
        {
            var value = i + 1 < args.Length ? args[i + 1] : null;
            switch (args[i])
            {
                case "-h" or "--help":
                    Console.WriteLine(Usage);
                    return 0;
                case "--listen" when value is not null && IPEndPoint.TryParse(value, out var l):
                    listen = l;
                    break;
                case "--node" when value is not null:
                    node = value;
                    break;
                case "--policy-file" when value is not null:
                    policy = value;
                    break;
                case "--records-socket" when value is not null:
                    records = value;
                    break;
                case "--pin-root" when value is not null:
                    pinRoot = value;
                    break;
                case "--pid-file" when value is not null:
                    pidFile = value;
                    break;
                default:
                    Console.Error.WriteLine($"trellis-proxy: bad argument '{args[i]}'{(value is null ? "" : $" '{value}'")}.\n{Usage}");
                    return 2;
            }
            i++;
        }
        if (node is null || policy is null || records is null || pinRoot is null)
        {
            Console.Error.WriteLine($"trellis-proxy: --node, --policy-file, --records-socket and --pin-root are required.\n{Usage}");
            return 2;
        }
        using var stop = NodeProxy.StopOnSignals();
        try
        {
            return await NodeProxy.RunAsync(new NodeProxyOptions(node, listen, policy, records, pinRoot, pidFile), stop.Token);
        }
        catch (Exception e) when (e is IOException or Trellis.Bpf.BpfException or System.Net.Sockets.SocketException)
        {
            Console.Error.WriteLine($"trellis-proxy: {e.Message}");
            return 1;
        }
    }
}
