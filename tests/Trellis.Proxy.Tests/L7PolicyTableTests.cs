using System.Net;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Primitives;
using Trellis.Policy;

namespace Trellis.Proxy.Tests;

public sealed class L7PolicyTableTests
{
    private static readonly IPAddress A = IPAddress.Parse("10.0.0.1"); // identity 100 (client side)
    private static readonly IPAddress B = IPAddress.Parse("10.0.0.2"); // identity 200 (server side)
    private static readonly IPAddress C = IPAddress.Parse("10.0.0.3"); // identity 300
    private static readonly IPAddress Remote = IPAddress.Parse("10.1.0.9"); // not local: identity 900 from the "ipcache"

    private static uint IdentityOf(IPAddress address) => address.Equals(Remote) ? 900u : ReservedIdentity.World;

    private static HttpRule Rule(string? method = null, string? path = null, string? host = null, params HeaderMatch[] headers) =>
        new(method, path, host, headers);

    private static PolicyKey Tcp(Direction direction, uint peer, ushort port, ushort? endPort = null) =>
        new(peer, direction, L4Proto.Tcp, port, endPort ?? port);

    /// <summary>Allow entries for every key; HTTP rules for the keys that have some (null = L4-only allow).</summary>
    private static EndpointPolicy Policy(params (PolicyKey Key, HttpRule[]? Rules)[] keys)
    {
        var entries = new Dictionary<PolicyKey, PolicyEntry>();
        var http = new Dictionary<PolicyKey, IReadOnlyList<HttpRule>>();
        foreach (var (key, rules) in keys)
        {
            entries[key] = new PolicyEntry(1, Deny: false);
            if (rules is not null)
                http[key] = rules;
        }
        var ingress = keys.Any(k => k.Key.Direction == Direction.Ingress);
        var egress = keys.Any(k => k.Key.Direction == Direction.Egress);
        return new EndpointPolicy(ingress, egress, entries) { HttpRules = http };
    }

    private static readonly EndpointPolicy NoPolicy = new(false, false, new Dictionary<PolicyKey, PolicyEntry>());

    private static L7PolicyTable Table(EndpointPolicy? a = null, EndpointPolicy? b = null, EndpointPolicy? c = null) =>
        new([new L7Endpoint(A, 100, a ?? NoPolicy), new L7Endpoint(B, 200, b ?? NoPolicy), new L7Endpoint(C, 300, c ?? NoPolicy)], IdentityOf);

    private static L7Request Request(
        IPAddress? client, uint clientIdentity, IPAddress destination, int port, string method = "GET", string path = "/",
        string query = "", string host = "svc", IHeaderDictionary? headers = null) =>
        new(clientIdentity, new IPEndPoint(destination, port), method, path, query, host, headers ?? new HeaderDictionary())
        {
            Client = client is null ? null : new IPEndPoint(client, 40000),
        };

    private static void Allowed(Decision decision) => Assert.Equal(Decision.Allow, decision);

    private static void Denied(Decision decision, string reason = L7Record.PolicyDeniedReason)
    {
        Assert.False(decision.Allowed);
        Assert.Equal(reason, decision.Reason);
    }

    [Fact]
    public void Egress_rules_of_the_client_apply_to_local_and_remote_destinations()
    {
        var table = Table(a: Policy(
            (Tcp(Direction.Egress, 200, 80), [Rule("GET", "/api/.*")]),
            (Tcp(Direction.Egress, 900, 8080), [Rule("POST")])));

        Allowed(table.Check(Request(A, 100, B, 80, "GET", "/api/items")));
        Denied(table.Check(Request(A, 100, B, 80, "POST", "/api/items")));
        Denied(table.Check(Request(A, 100, B, 80, "GET", "/other")));

        // A remote destination's identity comes from the lookup delegate.
        Allowed(table.Check(Request(A, 100, Remote, 8080, "POST")));
        Denied(table.Check(Request(A, 100, Remote, 8080, "GET")));

        // Another client (not A) to the same destination: no side has rules.
        Denied(table.Check(Request(C, 300, B, 80, "GET", "/api/items")), L7PolicyTable.NoPolicyReason);
        // Without the client's address the egress side is unknown.
        Denied(table.Check(Request(null, 100, B, 80, "GET", "/api/items")), L7PolicyTable.NoPolicyReason);
    }

    [Fact]
    public void Ingress_rules_of_the_destination_apply_to_local_and_remote_clients()
    {
        var table = Table(b: Policy(
            (Tcp(Direction.Ingress, 100, 80), [Rule(path: "/public/.*")]),
            (Tcp(Direction.Ingress, 900, 80), [Rule("HEAD")])));

        Allowed(table.Check(Request(A, 100, B, 80, "DELETE", "/public/x")));
        Denied(table.Check(Request(A, 100, B, 80, "GET", "/private")));
        Allowed(table.Check(Request(Remote, 900, B, 80, "HEAD", "/anything")));
        Allowed(table.Check(Request(null, 900, B, 80, "HEAD", "/anything")));
        Denied(table.Check(Request(Remote, 900, B, 80, "GET", "/public/x")));
    }

    [Fact]
    public void When_both_sides_have_rules_both_must_allow()
    {
        var table = Table(
            a: Policy((Tcp(Direction.Egress, 200, 80), [Rule("GET")])),
            b: Policy((Tcp(Direction.Ingress, 100, 80), [Rule(path: "/a.*")])));

        Allowed(table.Check(Request(A, 100, B, 80, "GET", "/abc")));
        Denied(table.Check(Request(A, 100, B, 80, "POST", "/abc"))); // egress says no
        Denied(table.Check(Request(A, 100, B, 80, "GET", "/b"))); // ingress says no
    }

    [Fact]
    public void A_flow_without_L7_rules_is_denied_fail_closed()
    {
        var table = Table(
            a: Policy((Tcp(Direction.Egress, 200, 80), [Rule("GET")])),
            b: Policy((Tcp(Direction.Ingress, 100, 80), [Rule("GET")])));

        Denied(table.Check(Request(A, 100, B, 81)), L7PolicyTable.NoPolicyReason); // other port
        Denied(table.Check(Request(C, 300, A, 80)), L7PolicyTable.NoPolicyReason); // rules are directional
        Denied(table.Check(Request(Remote, 900, Remote, 80)), L7PolicyTable.NoPolicyReason); // nothing local
        Denied(L7PolicyTable.Empty.Check(Request(A, 100, B, 80)), L7PolicyTable.NoPolicyReason);
    }

    [Fact]
    public void Method_path_with_query_host_and_headers_are_matched_through_the_table()
    {
        var table = Table(b: Policy((Tcp(Direction.Ingress, 100, 80),
        [
            Rule("GET", @"/items\?id=[0-9]+"),
            Rule("PUT", "/upload", "files\\.example(:80)?", new HeaderMatch("X-Token", "b"), new HeaderMatch("x-trace", null)),
        ])));

        // The path is the request target: path + query.
        Allowed(table.Check(Request(A, 100, B, 80, "GET", "/items", "?id=42")));
        Denied(table.Check(Request(A, 100, B, 80, "GET", "/items", "?id=x")));
        Denied(table.Check(Request(A, 100, B, 80, "GET", "/items")));

        static HeaderDictionary Headers(StringValues token, bool trace)
        {
            var headers = new HeaderDictionary { ["X-Token"] = token };
            if (trace)
                headers["X-Trace"] = "1";
            return headers;
        }

        // A repeated header: each value is its own header line.
        Allowed(table.Check(Request(A, 100, B, 80, "PUT", "/upload", host: "files.example", headers: Headers(new StringValues(["a", "b"]), true))));
        Allowed(table.Check(Request(A, 100, B, 80, "PUT", "/upload", host: "files.example:80", headers: Headers("b", true))));
        Denied(table.Check(Request(A, 100, B, 80, "PUT", "/upload", host: "files.example", headers: Headers("a", true))));
        Denied(table.Check(Request(A, 100, B, 80, "PUT", "/upload", host: "files.example", headers: Headers("b", false))));
        Denied(table.Check(Request(A, 100, B, 80, "PUT", "/upload", host: "other.example", headers: Headers("b", true))));
        Denied(table.Check(Request(A, 100, B, 80, "PUT", "/upload", host: "", headers: Headers("b", true)))); // no host
    }

    [Fact]
    public void Two_peers_on_the_same_port_get_their_own_rules()
    {
        var table = Table(b: Policy(
            (Tcp(Direction.Ingress, 100, 80), [Rule("GET")]),
            (Tcp(Direction.Ingress, 300, 80), [Rule("POST")])));

        Allowed(table.Check(Request(A, 100, B, 80, "GET")));
        Denied(table.Check(Request(A, 100, B, 80, "POST")));
        Allowed(table.Check(Request(C, 300, B, 80, "POST")));
        Denied(table.Check(Request(C, 300, B, 80, "GET")));
        Denied(table.Check(Request(Remote, 900, B, 80, "GET")), L7PolicyTable.NoPolicyReason);
        Assert.Equal(2, table.MatcherCount);
    }

    [Fact]
    public void Any_peer_rules_add_up_with_a_peer_s_own_and_an_L4_only_allow_lifts_them()
    {
        var table = Table(b: Policy(
            (Tcp(Direction.Ingress, ReservedIdentity.Unknown, 80), [Rule("GET")]),
            (Tcp(Direction.Ingress, 100, 80), [Rule("POST")]),
            (Tcp(Direction.Ingress, 300, 80), null), // L4-only: no L7 restriction for 300
            (Tcp(Direction.Ingress, ReservedIdentity.Unknown, 8000, 8100), [Rule("GET")]),
            (Tcp(Direction.Ingress, ReservedIdentity.Unknown, 8050), null)));

        Allowed(table.Check(Request(A, 100, B, 80, "GET")));
        Allowed(table.Check(Request(A, 100, B, 80, "POST")));
        Denied(table.Check(Request(A, 100, B, 80, "PUT")));
        Allowed(table.Check(Request(Remote, 900, B, 80, "GET")));
        Denied(table.Check(Request(Remote, 900, B, 80, "POST")));
        Assert.Null(table.MatcherFor(B, Direction.Ingress, 300, 80));
        Denied(table.Check(Request(C, 300, B, 80, "GET")), L7PolicyTable.NoPolicyReason);

        // Port ranges are cut where the covering keys change.
        var get = table.MatcherFor(B, Direction.Ingress, 900, 8000);
        Assert.NotNull(get);
        Assert.Same(get, table.MatcherFor(B, Direction.Ingress, 900, 8049));
        Assert.Null(table.MatcherFor(B, Direction.Ingress, 900, 8050));
        Assert.Same(get, table.MatcherFor(B, Direction.Ingress, 900, 8051));
        Assert.Same(get, table.MatcherFor(B, Direction.Ingress, 100, 8100));
        Assert.Null(table.MatcherFor(B, Direction.Ingress, 900, 8101));
        Assert.Null(table.MatcherFor(B, Direction.Ingress, 900, 7999));
        Assert.Same(get, table.MatcherFor(B, Direction.Ingress, 900, 80)); // same rules as 8000-8100: one matcher
    }

    [Fact]
    public void Equal_rule_lists_share_one_matcher()
    {
        HttpRule[] rules = [Rule("GET", "/x"), Rule("POST", "/y", headers: new HeaderMatch("X-A", "1"))];
        HttpRule[] sameReordered = [Rule("POST", "/y", headers: new HeaderMatch("x-a", "1")), Rule("GET", "/x")];
        var table = Table(
            a: Policy((Tcp(Direction.Egress, 200, 80), rules)),
            b: Policy((Tcp(Direction.Ingress, 100, 80), sameReordered), (Tcp(Direction.Ingress, 300, 8080), rules)),
            c: Policy((Tcp(Direction.Egress, 200, 80), [Rule("DELETE")])));

        Assert.Equal(2, table.MatcherCount);
        var shared = table.MatcherFor(A, Direction.Egress, 200, 80);
        Assert.NotNull(shared);
        Assert.Same(shared, table.MatcherFor(B, Direction.Ingress, 100, 80));
        Assert.Same(shared, table.MatcherFor(B, Direction.Ingress, 300, 8080));
        Assert.NotSame(shared, table.MatcherFor(C, Direction.Egress, 200, 80));
    }

    [Fact]
    public void IPv4_mapped_addresses_find_the_endpoint()
    {
        var table = Table(b: Policy((Tcp(Direction.Ingress, 100, 80), [Rule("GET")])));
        Allowed(table.Check(Request(A.MapToIPv6(), 100, B.MapToIPv6(), 80)));
    }

    [Fact]
    public void Endpoints_must_be_distinct_IPv4_addresses()
    {
        Assert.Throws<ArgumentException>(() => new L7PolicyTable([new L7Endpoint(A, 1, NoPolicy), new L7Endpoint(A, 2, NoPolicy)], IdentityOf));
        Assert.Throws<ArgumentException>(() => new L7PolicyTable([new L7Endpoint(IPAddress.IPv6Loopback, 1, NoPolicy)], IdentityOf));
    }

    [Fact]
    public void The_swappable_policy_denies_until_a_table_is_swapped_in()
    {
        var policy = new SwappableL7Policy();
        var request = Request(A, 100, B, 80);
        Denied(policy.Check(request), L7PolicyTable.NoPolicyReason);
        policy.Current = Table(b: Policy((Tcp(Direction.Ingress, 100, 80), [Rule("GET")])));
        Allowed(policy.Check(request));
        policy.Current = L7PolicyTable.Empty;
        Denied(policy.Check(request), L7PolicyTable.NoPolicyReason);
    }
}
