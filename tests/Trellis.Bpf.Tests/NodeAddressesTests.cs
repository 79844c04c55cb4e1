using System.Text.Json;

namespace Trellis.Bpf.Tests;

/// <summary>The netlink address dump the agent's device scan uses, checked against iproute2 in the same netns.</summary>
public sealed class NodeAddressesTests
{
    [Fact]
    public void Lists_the_same_ipv4_addresses_and_interfaces_as_ip_addr()
    {
        using var doc = JsonDocument.Parse(Shell.Check("ip", "-j", "-4", "addr", "show"));
        var expected = doc.RootElement.EnumerateArray()
            .SelectMany(i => i.GetProperty("addr_info").EnumerateArray()
                .Select(a => (Index: i.GetProperty("ifindex").GetInt32(), Name: i.GetProperty("ifname").GetString()!, Address: a.GetProperty("local").GetString()!)))
            .OrderBy(x => x.Index).ThenBy(x => x.Address).ToList();
        var actual = NodeAddresses.Ipv4().SelectMany(i => i.Addresses.Select(a => (Index: i.Ifindex, i.Name, Address: a.ToString())))
            .OrderBy(x => x.Index).ThenBy(x => x.Address).ToList();
        Assert.NotEmpty(actual);
        Assert.Equal(expected, actual);

        var lo = Assert.Single(NodeAddresses.Ipv4(), i => i.Addresses.Any(a => a.ToString() == "127.0.0.1"));
        Assert.True(lo.Loopback);
        Assert.True(lo.Up);
    }
}
