using System.CommandLine;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Trellis.Agent;
using Trellis.Api;

namespace Trellis.Cli.Commands;

internal static class AgentCommand
{
    public static Command Create()
    {
        var podCidr = new Option<string>("--pod-cidr") { Description = "IPv4 CIDR the node's pods get addresses from", DefaultValueFactory = _ => "10.200.0.0/24" };
        var flowStore = new Option<int>("--flow-store-size") { Description = "How many recent flows the agent keeps", DefaultValueFactory = _ => 4096 };
        var lbAlgorithm = new Option<string>("--lb-algorithm") { Description = "Backend selection for NodePort traffic when a service does not choose (annotation service.cilium.io/lb-algorithm): random or maglev", DefaultValueFactory = _ => "random" };
        lbAlgorithm.AcceptOnlyFromAmong("random", "maglev");
        var metricsAddress = new Option<string>("--metrics-address")
        {
            Description = "HOST:PORT serving Prometheus metrics at /metrics (:PORT = every address), or 'off'",
            DefaultValueFactory = _ => Trellis.Agent.Metrics.MetricsServer.DefaultAddress,
        };
        metricsAddress.Validators.Add(r =>
        {
            var v = r.GetValueOrDefault<string>();
            if (v is null || v == "off") return;
            try { Trellis.Agent.Metrics.MetricsServer.ParseAddress(v); }
            catch (FormatException e) { r.AddError($"--metrics-address: {e.Message}"); }
        });
        var hubbleAddress = new Option<string>("--hubble-address")
        {
            Description = "HOST:PORT where Hubble's observer gRPC API also listens over TCP (:PORT = every address), or 'off' for the unix socket only",
            DefaultValueFactory = _ => Trellis.Agent.Observer.HubbleServer.DefaultAddress,
        };
        hubbleAddress.Validators.Add(r =>
        {
            var v = r.GetValueOrDefault<string>();
            if (v is null || v == "off") return;
            try { Trellis.Agent.Observer.HubbleServer.ParseAddress(v); }
            catch (FormatException e) { r.AddError($"--hubble-address: {e.Message}"); }
        });
        var proxyPort = new Option<ushort>("--proxy-port")
        {
            Description = "Port of the node's L7 proxy (trellis-proxy, started and supervised by the agent) on 127.0.0.1 in the node's network namespace; 0 = no proxy, and policies with HTTP rules are refused",
            DefaultValueFactory = _ => 15001,
        };
        var etcd = Global.EtcdOption("Join a cluster: client URLs of its etcd members, comma-separated (http://HOST:PORT; https is not supported yet). " +
            "Identities are then allocated cluster-wide and the node is registered with a lease. Without it: one node, embedded store");
        var cluster = Global.ClusterOption();
        var etcdNetns = new Option<string>("--etcd-netns")
        {
            Description = "Connect to etcd from this network namespace (a path, e.g. /proc/1/ns/net); 'trellis lab up' sets it, as its nodes have no network to the host",
        };
        var cmd = new Command("agent", """
            Run the node agent (a daemon, as root): loads the datapath, manages endpoints, identities, policy and flows,
            and serves the API on /run/trellis/NODE/agent.sock, Prometheus metrics on http://127.0.0.1:9962/metrics and
            Hubble's observer gRPC API (for hubble observe, Hubble UI) on /run/trellis/NODE/hubble.sock and 127.0.0.1:4244
            (the TCP addresses are inside the node's network namespace in a lab). It also starts the node's L7 proxy
            (trellis-proxy, for policies with HTTP rules) and restarts it if it dies. 'trellis lab up' starts the agent for you.

            Example:
              trellis agent --node node1 --pod-cidr 10.200.0.0/24
              trellis agent --node node2 --pod-cidr 10.200.1.0/24 --etcd http://10.0.0.1:2379,http://10.0.0.2:2379 --cluster lab
            """);
        cmd.Options.Add(podCidr);
        cmd.Options.Add(flowStore);
        cmd.Options.Add(lbAlgorithm);
        cmd.Options.Add(metricsAddress);
        cmd.Options.Add(hubbleAddress);
        cmd.Options.Add(proxyPort);
        cmd.Options.Add(etcd);
        cmd.Options.Add(cluster);
        cmd.Options.Add(etcdNetns);
        cmd.SetAction((r, ct) => Global.Run(async () =>
        {
            var node = r.GetValue(Global.Node)!;
            if (!Trellis.Bpf.BpfFs.IsRoot)
                throw new Trellis.Datapath.DatapathException("trellis agent must run as root (it loads BPF programs and configures network devices)");
            var options = new AgentOptions
            {
                Node = node,
                PodCidr = r.GetValue(podCidr)!,
                FlowStoreSize = r.GetValue(flowStore),
                LbAlgorithm = r.GetValue(lbAlgorithm) == "maglev" ? Trellis.Policy.LbAlgorithm.Maglev : Trellis.Policy.LbAlgorithm.Random,
                MetricsAddress = r.GetValue(metricsAddress) is "off" or "" ? null : r.GetValue(metricsAddress),
                HubbleAddress = r.GetValue(hubbleAddress) is "off" or "" ? null : r.GetValue(hubbleAddress),
                ProxyPort = r.GetValue(proxyPort),
                EtcdEndpoints = r.GetValue(etcd) is { } urls ? Trellis.Agent.State.Etcd.EtcdOptions.ParseEndpoints(urls) : null,
                Cluster = r.GetValue(cluster)!,
                EtcdNetworkNamespace = r.GetValue(etcdNetns),
            };
            using var loggers = LoggerFactory.Create(b => b
                .AddSimpleConsole(o => { o.SingleLine = true; o.TimestampFormat = "HH:mm:ss.fff "; })
                .SetMinimumLevel(LogLevel.Information));
            Directory.CreateDirectory(AgentPaths.RunDir(node));
            var pidFile = Path.Combine(AgentPaths.RunDir(node), "agent.pid");
            File.WriteAllText(pidFile, Environment.ProcessId.ToString());
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
            using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Cancel(); });
            try
            {
                await AgentHost.RunAsync(options, loggers, stop.Token);
            }
            finally
            {
                if (File.Exists(pidFile) && File.ReadAllText(pidFile).Trim() == Environment.ProcessId.ToString())
                    File.Delete(pidFile);
            }
            return 0;
        }));
        return cmd;
    }
}
