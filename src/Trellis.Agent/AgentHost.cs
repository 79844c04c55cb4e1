using Microsoft.Extensions.Logging;
using Trellis.Agent.Api;

namespace Trellis.Agent;

/// <summary>Runs the agent until cancelled (SIGTERM/SIGINT in `trellis agent`).</summary>
public static class AgentHost
{
    public static async Task RunAsync(AgentOptions options, ILoggerFactory loggers, CancellationToken ct)
    {
        var log = loggers.CreateLogger("trellis.agent");
        using var agent = new NodeAgent(options, log);
        agent.Start();
        await using var app = ApiServer.Build(agent, options.SocketPath, new ForwardingProvider(loggers));
        await app.StartAsync(ct);
        log.LogInformation("API listening on {Socket}", options.SocketPath);
        try
        {
            await Task.Delay(Timeout.Infinite, ct);
        }
        catch (OperationCanceledException)
        {
        }
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
