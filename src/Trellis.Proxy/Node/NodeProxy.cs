using System.Net;
using System.Runtime.InteropServices;
using Trellis.Datapath;

namespace Trellis.Proxy.Node;

/// <summary>What `trellis-proxy` is started with by the node's agent.</summary>
public sealed record NodeProxyOptions(
    string Node,
    IPEndPoint Listen,
    string PolicyFile,
    string RecordsSocket,
    string PinRoot,
    string? PidFile);

/// <summary>
/// The proxy as the node runs it: a transparent listener the datapath hands redirected connections to
/// (bpf_sk_assign keeps the original destination as the accepted socket's local address), rules from the agent's
/// policy file (reloaded when it changes; the last good rules stay on a bad file), identities from the pinned
/// ipcache, upstream connections from the client's own address marked for the datapath, records to the agent.
/// </summary>
public static class NodeProxy
{
    public static async Task<int> RunAsync(NodeProxyOptions o, CancellationToken stop)
    {
        using var ipcache = IpcacheReader.Open(o.PinRoot);
        var policy = new SwappableL7Policy();
        var loader = new PolicyLoader(o.PolicyFile, policy, ipcache);
        loader.Reload();
        await using var records = new RecordSender(o.RecordsSocket);
        var options = new ProxyOptions { Listen = [o.Listen], Transparent = true, UpstreamMark = ProxyMarks.FromProxy };
        await using var proxy = await L7Proxy.StartAsync(options, new DatapathResolver(ipcache), policy, records.Post, cancellationToken: stop)
            .ConfigureAwait(false);
        // The datapath's sk_lookup program hands the proxy new connections that meet one of its TIME_WAIT sockets.
        using (var sockmap = Trellis.Bpf.BpfMap.OpenPinned(Path.Combine(o.PinRoot, Names.ProxySock)))
            sockmap.Update(0u, (ulong)proxy.ListenSockets[0].Handle);
        if (o.PidFile is not null)
        {
            var tmp = o.PidFile + ".tmp";
            await File.WriteAllTextAsync(tmp, Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture), stop).ConfigureAwait(false);
            File.Move(tmp, o.PidFile, overwrite: true);
        }
        Console.WriteLine($"trellis-proxy for node {o.Node} listening on {proxy.ListenEndPoints[0]} (transparent), rules from {o.PolicyFile}");

        // inotify misses nothing here in practice, but a poll is what makes a missed event harmless.
        using var watcher = new FileSystemWatcher(Path.GetDirectoryName(o.PolicyFile)!, Path.GetFileName(o.PolicyFile))
        {
            NotifyFilter = NotifyFilters.LastWrite | NotifyFilters.FileName | NotifyFilters.CreationTime | NotifyFilters.Size,
        };
        watcher.Changed += (_, _) => loader.Reload();
        watcher.Created += (_, _) => loader.Reload();
        watcher.Renamed += (_, _) => loader.Reload();
        watcher.EnableRaisingEvents = true;
        try
        {
            using var timer = new PeriodicTimer(TimeSpan.FromSeconds(1));
            while (await timer.WaitForNextTickAsync(stop).ConfigureAwait(false))
                loader.Reload();
        }
        catch (OperationCanceledException)
        {
        }
        return 0;
    }

    /// <summary>The original destination is the accepted socket's local address (bpf_sk_assign); identities from the ipcache.</summary>
    private sealed class DatapathResolver(IpcacheReader ipcache) : IOriginalDestinationResolver
    {
        public bool TryResolve(IPEndPoint local, IPEndPoint remote, out OriginalDestination destination)
        {
            var client = ipcache.IdentityOf(remote.Address);
            // A destination on this node: connect from the client's address, so the server and its own policy see
            // the real client. Elsewhere: from the node (the reply would not come back through this node otherwise).
            var localDestination = ipcache.TryLookup(local.Address, out var d) && (d.Flags & IpcacheValue.FlagLocalEndpoint) != 0;
            destination = new OriginalDestination(local, client) { UpstreamSource = localDestination ? remote.Address : null };
            return true;
        }
    }

    private sealed class PolicyLoader(string path, SwappableL7Policy target, IpcacheReader ipcache)
    {
        private readonly Lock _gate = new();
        private (DateTime, long)? _loaded;

        public void Reload()
        {
            lock (_gate)
            {
                try
                {
                    var info = new FileInfo(path);
                    if (!info.Exists)
                    {
                        if (_loaded is not null)
                            Console.Error.WriteLine($"policy file {path} is gone; keeping the last rules");
                        return;
                    }
                    var stamp = (info.LastWriteTimeUtc, info.Length);
                    if (_loaded == stamp)
                        return;
                    var endpoints = ProxyPolicyFile.Parse(File.ReadAllText(path), path, out var generation);
                    target.Current = new L7PolicyTable(endpoints, ipcache.IdentityOf);
                    _loaded = stamp;
                    // Tell the agent which rules are in force: it waits for this before the datapath redirects to them.
                    var loaded = Path.Combine(Path.GetDirectoryName(path)!, ProxyPolicyFile.LoadedFileName);
                    File.WriteAllText(loaded + ".tmp", generation.ToString(System.Globalization.CultureInfo.InvariantCulture));
                    File.Move(loaded + ".tmp", loaded, overwrite: true);
                    Console.WriteLine($"loaded rules of {endpoints.Count} endpoint(s) from {path}");
                }
                catch (Exception e) when (e is IOException or FormatException or ArgumentException or UnauthorizedAccessException)
                {
                    Console.Error.WriteLine($"cannot load {path}: {e.Message}; keeping the last rules");
                }
            }
        }
    }

    /// <summary>Stops on SIGTERM/SIGINT.</summary>
    public static CancellationTokenSource StopOnSignals()
    {
        var stop = new CancellationTokenSource();
        foreach (var signal in new[] { PosixSignal.SIGTERM, PosixSignal.SIGINT })
        {
            PosixSignalRegistration.Create(signal, ctx =>
            {
                ctx.Cancel = true;
                stop.Cancel();
            });
        }
        return stop;
    }
}
