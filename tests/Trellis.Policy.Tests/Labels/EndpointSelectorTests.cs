namespace Trellis.Policy.Tests;


public class EndpointSelectorTests
{
    private static readonly Labels Web = Labels.From(("app", "web"), ("tier", "front"));

    private static EndpointSelector Expr(string key, SelectorOperator op, params string[] values) =>
        new(Labels.Empty, [new LabelSelectorRequirement(key, op, values)]);

    [Fact]
    public void Empty_selector_matches_everything()
    {
        Assert.True(EndpointSelector.All.Matches(Web));
        Assert.True(EndpointSelector.All.Matches(Labels.Empty));
    }

    [Fact]
    public void MatchLabels_needs_every_label_with_equal_value()
    {
        Assert.True(EndpointSelector.FromLabels(("app", "web")).Matches(Web));
        Assert.False(EndpointSelector.FromLabels(("app", "web"), ("env", "prod")).Matches(Web));
        Assert.False(EndpointSelector.FromLabels(("app", "api")).Matches(Web));
    }

    [Fact]
    public void In_matches_when_the_key_has_one_of_the_values()
    {
        Assert.True(Expr("app", SelectorOperator.In, "api", "web").Matches(Web));
        Assert.False(Expr("app", SelectorOperator.In, "api").Matches(Web));
        Assert.False(Expr("env", SelectorOperator.In, "prod").Matches(Web));
    }

    [Fact]
    public void NotIn_matches_when_the_key_is_absent_or_has_another_value()
    {
        Assert.True(Expr("app", SelectorOperator.NotIn, "api").Matches(Web));
        Assert.True(Expr("env", SelectorOperator.NotIn, "prod").Matches(Web));
        Assert.False(Expr("app", SelectorOperator.NotIn, "web").Matches(Web));
    }

    [Fact]
    public void Exists_and_DoesNotExist_look_only_at_the_key()
    {
        Assert.True(Expr("app", SelectorOperator.Exists).Matches(Web));
        Assert.False(Expr("env", SelectorOperator.Exists).Matches(Web));
        Assert.True(Expr("env", SelectorOperator.DoesNotExist).Matches(Web));
        Assert.False(Expr("app", SelectorOperator.DoesNotExist).Matches(Web));
    }

    [Fact]
    public void Operators_validate_their_values()
    {
        Assert.Throws<ArgumentException>(() => new LabelSelectorRequirement("a", SelectorOperator.In, []));
        Assert.Throws<ArgumentException>(() => new LabelSelectorRequirement("a", SelectorOperator.NotIn, []));
        Assert.Throws<ArgumentException>(() => new LabelSelectorRequirement("a", SelectorOperator.Exists, ["x"]));
        Assert.Throws<ArgumentException>(() => new LabelSelectorRequirement("a", SelectorOperator.DoesNotExist, ["x"]));
    }

    [Fact]
    public void MatchLabels_and_matchExpressions_must_all_hold()
    {
        var s = new EndpointSelector(Labels.From(("app", "web")), [new LabelSelectorRequirement("tier", SelectorOperator.In, ["back"])]);
        Assert.False(s.Matches(Web));
        Assert.True(s.Matches(Web.With("tier", "back")));
    }

    [Theory]
    [InlineData("k8s:app", "app")]
    [InlineData("any:app", "app")]
    [InlineData("app", "app")]
    [InlineData("k8s:io.kubernetes.pod.namespace", "io.kubernetes.pod.namespace")]
    public void K8s_and_any_source_prefixes_are_stripped(string raw, string expected)
    {
        Assert.Equal(expected, LabelSource.NormalizeSelectorKey(raw, out var error));
        Assert.Null(error);
    }

    [Fact]
    public void Reserved_source_prefix_is_refused()
    {
        LabelSource.NormalizeSelectorKey("reserved:host", out var error);
        Assert.Equal("reserved labels are not supported yet; use fromEntities (issue 3)", error);
    }
}
