namespace Trellis.Policy.Tests;


public class LabelsTests
{
    [Fact]
    public void Labels_are_sorted_and_compare_by_value()
    {
        var a = Labels.From(("b", "2"), ("a", "1"));
        var b = Labels.From(("a", "1"), ("b", "2"));

        Assert.Equal("a=1,b=2", a.ToString());
        Assert.Equal(a, b);
        Assert.True(a == b);
        Assert.Equal(a.GetHashCode(), b.GetHashCode());
        Assert.Equal(a.Key, b.Key);
        Assert.NotEqual(a, Labels.From(("a", "1")));
    }

    [Fact]
    public void Key_escapes_separators_so_distinct_sets_never_collide()
    {
        var one = Labels.From(("a", "1,b=2"));
        var two = Labels.From(("a", "1"), ("b", "2"));
        Assert.NotEqual(one.Key, two.Key);
    }

    [Fact]
    public void FromKey_reads_back_any_Key()
    {
        foreach (var labels in new[]
        {
            Labels.Empty,
            Labels.From(("app", "web")),
            Labels.From(("a", "1,b=2"), ("k\\,=x", "=\\"), ("k8s:io.kubernetes.pod.namespace", "shop"), ("e", "")),
        })
            Assert.Equal(labels, Labels.FromKey(labels.Key));
        Assert.Throws<FormatException>(() => Labels.FromKey("a=1,b"));
    }

    [Fact]
    public void Labels_work_as_dictionary_keys()
    {
        var map = new Dictionary<Labels, int> { [Labels.From(("x", "1"), ("y", "2"))] = 7 };
        Assert.Equal(7, map[Labels.Parse("y=2,x=1")]);
    }

    [Fact]
    public void Duplicate_keys_are_rejected()
    {
        Assert.Throws<ArgumentException>(() => Labels.From(("a", "1"), ("a", "2")));
    }

    [Fact]
    public void Lookup_and_with_behave_like_a_dictionary()
    {
        var l = Labels.From(("app", "web"));
        Assert.True(l.TryGetValue("app", out var v));
        Assert.Equal("web", v);
        Assert.False(l.ContainsKey("tier"));
        Assert.Equal("app=api", l.With("app", "api").ToString());
        Assert.Equal("app=web", l.ToString()); // unchanged
        Assert.Empty(Labels.Empty);
        Assert.Equal(Labels.Empty, Labels.Parse(""));
    }
}
