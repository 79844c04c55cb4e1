using Microsoft.Extensions.Logging;
using Trellis.Agent.Api;
using Trellis.Agent.Metrics;
using Trellis.Agent.Observer;

namespace Trellis.Agent;

/// <summary>Runs the agent until cancelled (SIGTERM/SIGINT in `trellis agent`).</summary>
public static class AgentHost
{
    public static async Task RunAsync(AgentOptions options, ILoggerFactory loggers, CancellationToken ct)
    {
        var log = loggers.CreateLogger("trellis.agent");
        using var agent = new NodeAgent(options, log);
        // Metrics count every flow from the first one, so they are hooked up before the flow monitor starts.
        var metricsAddress = string.IsNullOrEmpty(options.MetricsAddress) ? null : MetricsServer.ParseAddress(options.MetricsAddress);
        var metrics = metricsAddress is null ? null : new AgentMetrics(agent.Health, log);
        var hubbleAddress = options.HubbleAddress is null or "" or "off" ? null : HubbleServer.ParseAddress(options.HubbleAddress);
        if (metrics is not null) agent.Flows.OnAdd = metrics.OnFlow;
        agent.Start();
        // Before the API: once the API answers (what `lab up` waits for), the observer does too.
        await using var hubble = await HubbleServer.StartAsync(agent, options.HubbleSocket, hubbleAddress, new ForwardingProvider(loggers), ct);
        log.LogInformation("Hubble observer API (gRPC) on unix://{Socket}{Tcp}", hubble.SocketPath,
            hubble.Address is null ? "" : $" and {HubbleServer.Format(hubble.Address)}");
        await using var app = ApiServer.Build(agent, options.SocketPath, new ForwardingProvider(loggers));
        await app.StartAsync(ct);
        log.LogInformation("API listening on {Socket}", options.SocketPath);
        await using var metricsServer = metrics is null ? null : await MetricsServer.StartAsync(metrics, metricsAddress!, new ForwardingProvider(loggers), ct);
        if (metricsServer is not null) log.LogInformation("metrics on http://{Address}/metrics", MetricsServer.Format(metricsServer.Address));
        try
        {
            await Task.Delay(Timeout.Infinite, ct);
        }
        catch (OperationCanceledException)
        {
        }
        await hubble.StopAsync();
        if (metricsServer is not null) await metricsServer.StopAsync();
        await app.StopAsync(CancellationToken.None);
        try { File.Delete(options.SocketPath); } catch (IOException) { }
        log.LogInformation("agent stopped; the datapath stays loaded and keeps enforcing");
    }

    private sealed class ForwardingProvider(ILoggerFactory f) : ILoggerProvider
    {
        public ILogger CreateLogger(string categoryName) => f.CreateLogger(categoryName);
        public void Dispose() { }
    }
}
