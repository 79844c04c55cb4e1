using System.Diagnostics;
using Trellis.Integration.Infrastructure;
using static Trellis.Integration.Infrastructure.Labs;

namespace Trellis.Integration;

/// <summary>Policy changes reach traffic that is already flowing, not only new connections.</summary>
[Collection(LabCollectionB.Name)]
[Trait("Requires", "root")]
public sealed class LivePolicyTests
{
    [Fact]
    public async Task Open_connection_is_cut_when_policy_stops_allowing_it_and_resumes_when_policy_is_deleted()
    {
        await using var lab = await ShopAsync();
        var client = lab.Pod("shop", "client");
        var serverIp = await lab.IpAsync("shop", "server");

        var conn = client.OpenEcho(serverIp, TcpEcho);
        await conn.AssertWorksAsync("without policy");

        // Allows the client, but only on another port: the open connection to 7000 is no longer allowed.
        await lab.ApplyPolicyAsync(ServerIngressFromClient("other-port-only", (TcpEcho2, "TCP")));
        var applied = DateTime.UtcNow;

        // New connections follow at once (within 1 s of the API call returning).
        var newDenied = await client.TcpConnectAsync(serverIp, TcpEcho, timeoutSeconds: 1);
        Assert.False(newDenied.Ok, $"a new connection to {TcpEcho} is refused after the policy: {newDenied}");
        var newAllowed = await ConnectsWithinAsync(client, serverIp, TcpEcho2, TimeSpan.FromSeconds(1));
        Assert.True(newAllowed, $"a new connection to {TcpEcho2} (allowed) works after the policy");

        // The open connection stops carrying echoes within ~2 s.
        var cutBy = applied + TimeSpan.FromSeconds(2);
        if (DateTime.UtcNow < cutBy) await Task.Delay(cutBy - DateTime.UtcNow);
        Assert.False(await conn.EchoesSinceAsync(DateTime.UtcNow, TimeSpan.FromSeconds(1.5)),
            $"the open connection still carried echoes more than 2 s after the policy (last at {conn.LastEcho:HH:mm:ss.fff}, applied {applied:HH:mm:ss.fff})");
        Assert.True(conn.LastEcho < cutBy, $"last echo {conn.LastEcho:HH:mm:ss.fff} is later than 2 s after the policy ({applied:HH:mm:ss.fff})");
        await lab.WaitForFlowAsync(f => f.Verdict == "DROPPED" && f.Source.Pod == "client" && f.Destination.Port == TcpEcho
            && f.DropReason == "policy denied" && !f.TcpFlags.Contains("SYN"), "DROPPED (established) shop/client -> server:7000");

        await lab.Agent.DeletePolicyAsync("shop", "other-port-only");
        var deleted = DateTime.UtcNow;
        Assert.True(await ConnectsWithinAsync(client, serverIp, TcpEcho, TimeSpan.FromSeconds(1)),
            $"a new connection to {TcpEcho} works within 1 s of deleting the policy");
        // The stalled connection resumes at its next retransmission (exponential backoff: allow a few seconds).
        Assert.True(await conn.EchoesSinceAsync(deleted, TimeSpan.FromSeconds(12)),
            $"the open connection resumed after the policy was deleted (last echo {conn.LastEcho:HH:mm:ss.fff}, deleted {deleted:HH:mm:ss.fff})");
        await conn.AssertWorksAsync("after it resumed");
        Assert.False(conn.Exited);
    }

    private static async Task<bool> ConnectsWithinAsync(Pod from, string ip, int port, TimeSpan within)
    {
        var sw = Stopwatch.StartNew();
        do
        {
            if ((await from.TcpConnectAsync(ip, port, timeoutSeconds: 1)).Ok) return true;
            await Task.Delay(50);
        } while (sw.Elapsed < within);
        return false;
    }
}
