using Trellis.Api;
using Trellis.Integration.Infrastructure;
using static Trellis.Integration.Infrastructure.Labs;

namespace Trellis.Integration.PolicyLanguage;

/// <summary>Audit mode lets policy drops pass and reports them as AUDIT, per endpoint and node-wide.</summary>
[Collection(LabCollectionA.Name)]
[Trait("Requires", "root")]
public sealed class AuditModeTests
{
    [Fact]
    public async Task Audit_mode_lets_denied_connections_pass_reported_as_AUDIT_and_turning_it_off_blocks_again()
    {
        await using var lab = await ShopAsync();
        var intruder = lab.Pod("data", "intruder");
        var serverIp = await lab.IpAsync("shop", "server");
        var intruderIp = await lab.IpAsync("data", "intruder");
        await lab.ApplyPolicyAsync(ServerIngressFromClient("server-from-client", (TcpEcho, "TCP")));

        var since = DateTimeOffset.UtcNow;
        await intruder.AssertBlockedAsync(serverIp, TcpEcho, "policy allows only shop/client");
        var drop = await lab.WaitForFlowSinceAsync(since, f => Probes.Syn(f, intruderIp, serverIp, TcpEcho) && f.Verdict == "DROPPED", "DROPPED before audit");
        Assert.Equal("policy denied", drop.DropReason);

        // Per endpoint.
        since = DateTimeOffset.UtcNow;
        var ep = await lab.Agent.SetEndpointConfigAsync("shop", "server", new EndpointConfigDto(true));
        Assert.True(ep.PolicyAuditMode);
        await intruder.AssertConnectsAsync(serverIp, TcpEcho, "server endpoint in audit mode");
        var audit = await lab.WaitForFlowSinceAsync(since, f => Probes.Syn(f, intruderIp, serverIp, TcpEcho) && f.Verdict == "AUDIT", "AUDIT with endpoint audit mode");
        Assert.Equal("INGRESS", audit.Direction);
        var trace = await lab.Agent.TraceAsync(new("data", "intruder", null, "shop", "server", null, TcpEcho, "TCP"));
        Assert.False(trace.Allowed, "audit mode does not make the policy allow it");
        Assert.Contains(trace.Steps, s => s.Verdict.Contains("audit mode"));

        since = DateTimeOffset.UtcNow;
        await lab.Agent.SetEndpointConfigAsync("shop", "server", new EndpointConfigDto(false));
        await intruder.AssertBlockedAsync(serverIp, TcpEcho, "endpoint audit mode off again");
        await lab.WaitForFlowSinceAsync(since, f => Probes.Syn(f, intruderIp, serverIp, TcpEcho) && f.Verdict == "DROPPED", "DROPPED after endpoint audit off");

        // Node-wide.
        since = DateTimeOffset.UtcNow;
        var config = await lab.Agent.SetConfigAsync(new ConfigDto(true));
        Assert.True(config.PolicyAuditMode);
        await intruder.AssertConnectsAsync(serverIp, TcpEcho, "node in audit mode");
        await lab.WaitForFlowSinceAsync(since, f => Probes.Syn(f, intruderIp, serverIp, TcpEcho) && f.Verdict == "AUDIT", "AUDIT with node audit mode");
        Assert.True((await lab.Agent.StatusAsync()).PacketsAudited > 0);

        since = DateTimeOffset.UtcNow;
        await lab.Agent.SetConfigAsync(new ConfigDto(false));
        await intruder.AssertBlockedAsync(serverIp, TcpEcho, "node audit mode off again");
        var again = await lab.WaitForFlowSinceAsync(since, f => Probes.Syn(f, intruderIp, serverIp, TcpEcho) && f.Verdict == "DROPPED", "DROPPED after node audit off");
        Assert.Equal("policy denied", again.DropReason);
    }
}
