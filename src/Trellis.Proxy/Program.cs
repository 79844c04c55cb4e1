using System.Globalization;
using System.Net;

namespace Trellis.Proxy;

/// <summary>
/// `trellis-proxy --listen 127.0.0.1:15001 --to 10.200.0.3:8080 [--identity 1234] [--deny-path-prefix /admin]`:
/// the proxy as a process, with a static original destination (no datapath redirection yet). Prints one line per request.
/// </summary>
internal static class Program
{
    private const string Usage =
        "usage: trellis-proxy --listen IP:PORT [--listen IP:PORT ...] --to IP:PORT [--identity N] [--deny-path-prefix PREFIX ...]\n" +
        "example: trellis-proxy --listen 127.0.0.1:15001 --to 127.0.0.1:8080 --deny-path-prefix /admin";

    private static async Task<int> Main(string[] args)
    {
        var listen = new List<IPEndPoint>();
        var deny = new List<string>();
        IPEndPoint? to = null;
        uint identity = 0;
        for (var i = 0; i < args.Length; i++)
        {
            var value = i + 1 < args.Length ? args[i + 1] : null;
            switch (args[i])
            {
                case "--listen" when value is not null && IPEndPoint.TryParse(value, out var l):
                    listen.Add(l);
                    i++;
                    break;
                case "--to" when value is not null && IPEndPoint.TryParse(value, out var t):
                    to = t;
                    i++;
                    break;
                case "--identity" when value is not null && uint.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var n):
                    identity = n;
                    i++;
                    break;
                case "--deny-path-prefix" when value is not null:
                    deny.Add(value);
                    i++;
                    break;
                case "-h" or "--help":
                    Console.WriteLine(Usage);
                    return 0;
                default:
                    Console.Error.WriteLine($"trellis-proxy: bad argument '{args[i]}'{(value is null ? "" : $" '{value}'")}.\n{Usage}");
                    return 2;
            }
        }
        if (listen.Count == 0 || to is null)
        {
            Console.Error.WriteLine($"trellis-proxy: --listen and --to are required.\n{Usage}");
            return 2;
        }

        var resolver = new StaticOriginalDestinationResolver { Default = new OriginalDestination(to, identity) };
        using var stop = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) =>
        {
            e.Cancel = true;
            stop.Cancel();
        };

        await using var proxy = await L7Proxy.StartAsync(
            new ProxyOptions { Listen = listen }, resolver, new PathPrefixDenyPolicy(deny.ToArray()), Print, cancellationToken: stop.Token);
        foreach (var endPoint in proxy.ListenEndPoints)
        {
            Console.WriteLine($"listening on {endPoint}, forwarding to {to}");
        }
        try
        {
            await Task.Delay(Timeout.Infinite, stop.Token);
        }
        catch (OperationCanceledException)
        {
        }
        return 0;
    }

    private static void Print(L7Record r) =>
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{r.Time:O} {r.Source} -> {r.Destination} id={r.ClientIdentity} {r.Protocol} {r.Method} {r.Url} {r.StatusCode} {r.Latency.TotalMilliseconds:F1}ms {r.Verdict.ToString().ToUpperInvariant()}{(r.Reason is null ? "" : " (" + r.Reason + ")")}"));

    private sealed class PathPrefixDenyPolicy(string[] prefixes) : IL7Policy
    {
        public Decision Check(L7Request request)
        {
            foreach (var prefix in prefixes)
            {
                if (request.Path.StartsWith(prefix, StringComparison.Ordinal))
                {
                    return Decision.Deny();
                }
            }
            return Decision.Allow;
        }
    }
}
