using System.Buffers;
using System.Net;
using Trellis.Policy;
using Trellis.Proxy.Node;

namespace Trellis.Proxy.Tests;

/// <summary>The two formats between agent and proxy: the policy file and the L7 record datagram.</summary>
public sealed class NodeProxyWireTests
{
    private static PolicyKey Key(uint id, Direction d, ushort port) => new(id, d, L4Proto.Tcp, port, port);

    [Fact]
    public void Policy_file_round_trips_rules_entries_and_visibility_and_keeps_the_table_semantics()
    {
        var http = Key(300, Direction.Ingress, 80);
        var l4 = Key(301, Direction.Ingress, 81);
        var visible = Key(0, Direction.Egress, 8080);
        var policy = new EndpointPolicy(true, false, new Dictionary<PolicyKey, PolicyEntry>
        {
            [http] = new(1, false),
            [l4] = new(2, false),
            [Key(302, Direction.Ingress, 80)] = new(3, true),
            [visible] = new(0, false),
            [new PolicyKey(0, Direction.Ingress, L4Proto.Udp, 53, 53)] = new(4, false), // not TCP: left out
        })
        {
            HttpRules = new Dictionary<PolicyKey, IReadOnlyList<HttpRule>>
            {
                [http] = [new HttpRule("GET", "/api/.*", "shop\\.local", [new HeaderMatch("X-Token", "s3cret"), new HeaderMatch("X-Trace", null)])],
                [visible] = [HttpRule.AllowAll],
            },
            VisibilityOnly = new HashSet<PolicyKey> { visible },
        };
        var text = ProxyPolicyFile.Serialize([new L7Endpoint(IPAddress.Parse("10.200.0.5"), 1000, policy)]);
        var back = Assert.Single(ProxyPolicyFile.Parse(text, "policy.json"));

        Assert.Equal(IPAddress.Parse("10.200.0.5"), back.Address);
        Assert.Equal(1000u, back.Identity);
        Assert.True(back.Policy.IngressEnforced);
        Assert.Equal(policy.Entries.Keys.Where(k => k.Proto == L4Proto.Tcp).Order(), back.Policy.Entries.Keys.Order());
        Assert.Equal(policy.HttpRules[http], back.Policy.HttpRules[http]);
        Assert.Equal([visible], back.Policy.VisibilityOnly);
        foreach (var (peer, port) in new[] { (300u, (ushort)80), (301u, (ushort)81), (302u, (ushort)80), (999u, (ushort)8080) })
        {
            var dir = port == 8080 ? Direction.Egress : Direction.Ingress;
            Assert.Equal(policy.HttpRulesFor(dir, peer, L4Proto.Tcp, port), back.Policy.HttpRulesFor(dir, peer, L4Proto.Tcp, port));
        }
        Assert.Equal(text, ProxyPolicyFile.Serialize([back])); // stable: the agent compares text to skip rewrites
    }

    [Theory]
    [InlineData("not json", "not a proxy policy file")]
    [InlineData("{\"version\":2,\"endpoints\":[]}", "version must be 1")]
    [InlineData("{\"version\":1,\"endpoints\":[{\"address\":\"nope\",\"identity\":1}]}", "endpoint address 'nope'")]
    public void Bad_policy_files_are_refused_with_the_reason(string json, string message)
    {
        var e = Assert.Throws<FormatException>(() => ProxyPolicyFile.Parse(json, "/run/x/policy.json"));
        Assert.StartsWith("/run/x/policy.json: ", e.Message, StringComparison.Ordinal);
        Assert.Contains(message, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Record_datagram_round_trips_with_the_drop_count()
    {
        var record = new L7Record(
            new DateTimeOffset(2026, 11, 23, 15, 0, 1, 234, TimeSpan.Zero).AddTicks(5670),
            257, IPEndPoint.Parse("10.200.0.3:40000"), IPEndPoint.Parse("10.200.0.2:8080"), "POST",
            "http://10.200.0.2:8080/api?q=1", "HTTP/2", 403, TimeSpan.FromTicks(12345), L7Verdict.Dropped, L7Record.PolicyDeniedReason);
        var buffer = new ArrayBufferWriter<byte>();
        L7RecordWire.Write(buffer, record, dropped: 42);
        var (back, dropped) = L7RecordWire.Read(buffer.WrittenSpan);
        Assert.Equal(record with { Time = back.Time }, back);
        Assert.Equal(record.Time.ToUnixTimeMilliseconds(), back.Time.ToUnixTimeMilliseconds());
        Assert.Equal(record.Time.Ticks / 10, back.Time.Ticks / 10); // microseconds kept
        Assert.Equal(42, dropped);

        L7RecordWire.Write(buffer, record with { Verdict = L7Verdict.Forwarded, Reason = null, StatusCode = 200 }, 0);
        Assert.Equal((L7Verdict.Forwarded, (string?)null, 200), (L7RecordWire.Read(buffer.WrittenSpan).Record.Verdict,
            L7RecordWire.Read(buffer.WrittenSpan).Record.Reason, L7RecordWire.Read(buffer.WrittenSpan).Record.StatusCode));
    }

    [Theory]
    [InlineData("{}")]
    [InlineData("{\"t\":1,\"id\":1,\"src\":\"x\",\"dst\":\"10.0.0.1:80\",\"method\":\"GET\",\"url\":\"u\",\"proto\":\"HTTP/1.1\",\"code\":200,\"latencyNs\":1,\"verdict\":\"forwarded\"}")]
    [InlineData("{\"t\":1,\"id\":1,\"src\":\"10.0.0.2:1\",\"dst\":\"10.0.0.1:80\",\"method\":\"GET\",\"url\":\"u\",\"proto\":\"HTTP/1.1\",\"code\":200,\"latencyNs\":1,\"verdict\":\"maybe\"}")]
    [InlineData("garbage")]
    public void Malformed_datagrams_are_a_format_error(string text)
    {
        Assert.Throws<FormatException>(() => L7RecordWire.Read(System.Text.Encoding.UTF8.GetBytes(text)));
    }
}
