namespace Trellis.Bpf.Tests;

/// <summary>Needs root and CAP_NET_ADMIN: a veth pair in the root netns with a unique short name,
/// deleted in Dispose (which also removes its clsact qdisc and filters).</summary>
public sealed class TcTests : IDisposable
{
    private readonly BpfObject _obj = TestPrograms.Load();
    private readonly string _dev = "trt" + Guid.NewGuid().ToString("N")[..8];
    private readonly int _ifindex;

    public TcTests()
    {
        Shell.Check("ip", "link", "add", _dev, "type", "veth", "peer", "name", _dev + "p");
        _ifindex = BpfFs.IfNameToIndex(_dev);
    }

    public void Dispose()
    {
        Shell.Run("ip", "link", "del", _dev);
        _obj.Dispose();
    }

    [Fact]
    public void Attach_then_Query_returns_the_attached_program_id()
    {
        Assert.True(_ifindex > 0);
        var prog = _obj.Program("record_packet");
        var filter = Tc.Attach(_ifindex, TcAttachPoint.Ingress, prog);
        Assert.Equal(prog.Info().Id, filter.ProgramId);
        Assert.Equal(_ifindex, filter.Ifindex);
        Assert.Equal(filter.ProgramId, Tc.Query(_ifindex, TcAttachPoint.Ingress));
        Assert.Null(Tc.Query(_ifindex, TcAttachPoint.Egress));
        // The kernel agrees: tc shows a bpf filter with our program on ingress.
        var shown = Shell.Check("tc", "filter", "show", "dev", _dev, "ingress");
        Assert.Contains("record_packet", shown);
    }

    [Fact]
    public void Attach_at_the_same_handle_replaces_the_program_in_place()
    {
        Tc.Attach(_ifindex, TcAttachPoint.Egress, _obj.Program("record_packet"));
        var second = Tc.Attach(_ifindex, TcAttachPoint.Egress, _obj.Program("pass_all"));
        Assert.Equal(_obj.Program("pass_all").Info().Id, Tc.Query(_ifindex, TcAttachPoint.Egress));
        Assert.Equal(second.ProgramId, Tc.Query(_ifindex, TcAttachPoint.Egress));
        var shown = Shell.Check("tc", "filter", "show", "dev", _dev, "egress");
        Assert.Contains("pass_all", shown);
        Assert.DoesNotContain("record_packet", shown);
    }

    [Fact]
    public void Detach_removes_the_filter_and_a_second_Detach_reports_nothing_there()
    {
        Tc.Attach(_ifindex, TcAttachPoint.Ingress, _obj.Program("pass_all"));
        Tc.Attach(_ifindex, TcAttachPoint.Egress, _obj.Program("pass_all"));
        Assert.True(Tc.Detach(_ifindex, TcAttachPoint.Ingress));
        Assert.Null(Tc.Query(_ifindex, TcAttachPoint.Ingress));
        Assert.NotNull(Tc.Query(_ifindex, TcAttachPoint.Egress));
        Assert.False(Tc.Detach(_ifindex, TcAttachPoint.Ingress));

        Tc.DestroyHooks(_ifindex);
        Assert.Null(Tc.Query(_ifindex, TcAttachPoint.Egress));
        Tc.DestroyHooks(_ifindex); // idempotent
    }

    [Fact]
    public void Filter_outlives_the_object_that_attached_it()
    {
        uint id;
        using (var other = TestPrograms.Load())
            id = Tc.Attach(_ifindex, TcAttachPoint.Ingress, other.Program("pass_all")).ProgramId;
        Assert.Equal(id, Tc.Query(_ifindex, TcAttachPoint.Ingress));
    }

    [Fact]
    public void Query_on_a_device_without_clsact_returns_null()
    {
        Assert.Null(Tc.Query(_ifindex, TcAttachPoint.Ingress));
        Assert.False(Tc.Detach(_ifindex, TcAttachPoint.Egress));
    }

    [Fact]
    public void Attach_to_a_missing_device_fails_with_BpfException()
    {
        var e = Assert.Throws<BpfException>(() => Tc.Attach(0x7ffffff0, TcAttachPoint.Ingress, _obj.Program("pass_all")));
        Assert.Contains("ifindex", e.Message);
    }
}
