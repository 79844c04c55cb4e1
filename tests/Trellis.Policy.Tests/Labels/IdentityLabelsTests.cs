namespace Trellis.Policy.Tests;


public class IdentityLabelsTests
{
    [Fact]
    public void Identity_labels_are_pod_labels_plus_namespace_and_namespace_labels()
    {
        var id = IdentityLabels.For("shop", Labels.From(("app", "web")), Labels.From(("team", "blue")));

        Assert.Equal("web", id["app"]);
        Assert.Equal("shop", id["io.kubernetes.pod.namespace"]);
        Assert.Equal("blue", id["io.cilium.k8s.namespace.labels.team"]);
        Assert.Equal("shop", id["io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name"]);
        Assert.Equal(4, id.Count);
    }

    [Fact]
    public void A_pod_label_cannot_claim_another_namespace()
    {
        var id = IdentityLabels.For("shop", Labels.From((IdentityLabelKeys.PodNamespace, "kube-system")), Labels.Empty);
        Assert.Equal("shop", id[IdentityLabelKeys.PodNamespace]);
    }

    [Fact]
    public void Same_inputs_give_equal_identity_labels()
    {
        var a = IdentityLabels.For("ns", Labels.From(("a", "1"), ("b", "2")), Labels.Empty);
        var b = IdentityLabels.For("ns", Labels.From(("b", "2"), ("a", "1")), Labels.Empty);
        Assert.Equal(a, b);
    }
}
