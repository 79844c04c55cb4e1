namespace Trellis.Policy.Tests;

public class HttpRuleMatcherTests
{
    private static readonly KeyValuePair<string, string>[] NoHeaders = [];

    private static bool Allows(HttpRule rule, string method, string path, string? host = null, params (string, string)[] headers) =>
        new HttpRuleMatcher([rule]).Allows(method, path, host, headers.Select(h => KeyValuePair.Create(h.Item1, h.Item2)));

    private static HttpRule Rule(string? method = null, string? path = null, string? host = null, params HeaderMatch[] headers) =>
        new(method, path, host, headers);

    [Theory]
    [InlineData("GET", "GET", true)]
    [InlineData("GET", "GETX", false)]
    [InlineData("GET", "XGET", false)]
    [InlineData("GET", "get", false)]
    [InlineData("GET", "GET\n", false)]
    [InlineData("GET|HEAD", "HEAD", true)]
    [InlineData("GET|HEAD", "GETHEAD", false)]
    [InlineData("P.*", "PUT", true)]
    public void Method_is_a_fully_anchored_regex(string regex, string method, bool allowed) =>
        Assert.Equal(allowed, Allows(Rule(method: regex), method, "/"));

    [Theory]
    [InlineData("/public", "/public", true)]
    [InlineData("/public", "/public/x", false)]
    [InlineData("/public", "/x/public", false)]
    [InlineData("/public", "/public?a=1", false)]
    [InlineData("/public/.*", "/public/x", true)]
    [InlineData("/public/.*", "/public", false)]
    [InlineData("/public(/.*)?", "/public", true)]
    [InlineData("/v[0-9]+/items", "/v12/items", true)]
    [InlineData("/v[0-9]+/items", "/v/items", false)]
    public void Path_is_a_fully_anchored_regex(string regex, string path, bool allowed) =>
        Assert.Equal(allowed, Allows(Rule(path: regex), "GET", path));

    [Theory]
    [InlineData("shop\\.example\\.com", "shop.example.com", true)]
    [InlineData("shop\\.example\\.com", "shop.example.com.evil", false)]
    [InlineData("shop\\.example\\.com", "xshop.example.com", false)]
    [InlineData(".*\\.example\\.com", "api.example.com", true)]
    [InlineData("shop\\.example\\.com", null, false)]
    public void Host_is_a_fully_anchored_regex_and_needs_a_host(string regex, string? host, bool allowed) =>
        Assert.Equal(allowed, Allows(Rule(host: regex), "GET", "/", host));

    [Fact]
    public void Unset_fields_match_anything()
    {
        var rule = Rule(method: "GET");
        Assert.True(Allows(rule, "GET", "/anything/at/all", null));
        Assert.True(Allows(rule, "GET", "/", "any.host", ("X", "y")));
    }

    [Fact]
    public void Header_presence_and_value_names_ignore_case_values_do_not()
    {
        var present = Rule(headers: new HeaderMatch("X-Trace", null));
        Assert.True(Allows(present, "GET", "/", null, ("x-trace", "")));
        Assert.True(Allows(present, "GET", "/", null, ("X-TRACE", "1")));
        Assert.False(Allows(present, "GET", "/", null, ("X-Other", "1")));
        Assert.False(Allows(present, "GET", "/"));

        var value = Rule(headers: new HeaderMatch("X-Env", "prod"));
        Assert.True(Allows(value, "GET", "/", null, ("x-env", "prod")));
        Assert.False(Allows(value, "GET", "/", null, ("X-Env", "Prod")));
        Assert.False(Allows(value, "GET", "/", null, ("X-Env", "prod2")));
        Assert.False(Allows(value, "GET", "/", null, ("X-Env", "")));
        // A repeated header passes when one of its values matches.
        Assert.True(Allows(value, "GET", "/", null, ("X-Env", "dev"), ("X-Env", "prod")));
    }

    [Fact]
    public void A_rule_needs_all_its_fields_and_all_its_headers()
    {
        var rule = Rule("GET", "/api/.*", "api", new HeaderMatch("A", null), new HeaderMatch("B", "1"));
        Assert.True(Allows(rule, "GET", "/api/x", "api", ("A", "z"), ("B", "1")));
        Assert.False(Allows(rule, "POST", "/api/x", "api", ("A", "z"), ("B", "1")));
        Assert.False(Allows(rule, "GET", "/other", "api", ("A", "z"), ("B", "1")));
        Assert.False(Allows(rule, "GET", "/api/x", "web", ("A", "z"), ("B", "1")));
        Assert.False(Allows(rule, "GET", "/api/x", "api", ("B", "1")));
        Assert.False(Allows(rule, "GET", "/api/x", "api", ("A", "z"), ("B", "2")));
    }

    [Theory]
    [InlineData("GET", "/public", true)]
    [InlineData("POST", "/submit", true)]
    [InlineData("POST", "/public", false)]
    [InlineData("GET", "/submit", false)]
    [InlineData("DELETE", "/", false)]
    public void Any_matching_rule_allows(string method, string path, bool allowed)
    {
        var matcher = new HttpRuleMatcher([Rule("GET", "/public"), Rule("POST", "/submit")]);
        Assert.Equal(allowed, matcher.Allows(method, path, null, NoHeaders));
    }

    [Fact]
    public void The_empty_rule_allows_everything_and_no_rule_nothing()
    {
        var all = new HttpRuleMatcher([HttpRule.AllowAll]);
        Assert.True(all.Allows("BREW", "/coffee?x", null, NoHeaders));
        Assert.True(new HttpRuleMatcher([Rule("GET", "/x"), HttpRule.AllowAll]).Allows("PUT", "/y", "h", NoHeaders));
        Assert.False(new HttpRuleMatcher([]).Allows("GET", "/", null, NoHeaders));
    }

    [Theory]
    [InlineData("GET", null)]
    [InlineData("(a|b)*c", null)]
    [InlineData("GET(", "Invalid pattern")]
    [InlineData("(a)\\1", "")] // backreferences are not linear-time (and not in RE2 either)
    [InlineData("(?=a)a", "")]
    public void Regex_errors_come_from_the_same_compilation_as_matching(string regex, string? error)
    {
        var actual = HttpRuleMatcher.RegexError(regex);
        if (error is null)
            Assert.Null(actual);
        else
            Assert.Contains(error, actual);
    }

    [Fact]
    public void Matching_is_linear_time_on_pathological_input()
    {
        // (a+)+$ backtracks exponentially in a backtracking engine; NonBacktracking answers at once.
        var matcher = new HttpRuleMatcher([Rule(path: "(a+)+b")]);
        Assert.False(matcher.Allows("GET", new string('a', 50_000), null, NoHeaders));
    }
}
