using System.Text.Json;
using Trellis.Integration.Infrastructure;
using static Trellis.Integration.Infrastructure.Labs;

namespace Trellis.Integration;

[Collection(LabCollectionB.Name)]
[Trait("Requires", "root")]
public sealed class ObserveCliTests
{
    [Fact]
    public async Task Observe_json_prints_one_object_per_line_including_the_drop_of_a_denied_connect()
    {
        await using var lab = await ShopAsync();
        var serverIp = await lab.IpAsync("shop", "server");
        await lab.ApplyPolicyAsync(ServerIngressFromClient("server-from-client", (TcpEcho, "TCP")));
        Assert.True((await lab.Pod("shop", "client").TcpConnectAsync(serverIp, TcpEcho)).Ok);
        Assert.False((await lab.Pod("data", "intruder").TcpConnectAsync(serverIp, TcpEcho)).Ok);
        await lab.WaitForFlowAsync(f => f.Verdict == "DROPPED" && f.Source.Pod == "intruder", "DROPPED from data/intruder");

        var r = await TrellisCli.RunAsync("observe", "-o", "json", "--last", "50", "--node", lab.Node);

        Assert.True(r.Ok, $"trellis observe: {r}");
        var lines = r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.InRange(lines.Length, 2, 50);
        var flows = lines.Select(l =>
        {
            using var doc = JsonDocument.Parse(l); // throws if a line is not one whole JSON value
            Assert.Equal(JsonValueKind.Object, doc.RootElement.ValueKind);
            return doc.RootElement.Clone();
        }).ToList();
        var drops = flows.Where(f => f.GetProperty("verdict").GetString() == "DROPPED"
            && f.GetProperty("source").GetProperty("pod").GetString() == "intruder").ToList();
        Assert.NotEmpty(drops);
        var drop = drops[^1];
        Assert.Equal("policy denied", drop.GetProperty("dropReason").GetString());
        Assert.Equal("data", drop.GetProperty("source").GetProperty("namespace").GetString());
        Assert.Equal("server", drop.GetProperty("destination").GetProperty("pod").GetString());
        Assert.Equal(TcpEcho, drop.GetProperty("destination").GetProperty("port").GetInt32());
        Assert.Equal(lab.Node, drop.GetProperty("node").GetString());
        Assert.Contains(flows, f => f.GetProperty("verdict").GetString() == "FORWARDED"
            && f.GetProperty("source").GetProperty("pod").GetString() == "client");
    }
}
