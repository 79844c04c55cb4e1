namespace Trellis.Bpf.Tests;

/// <summary>Needs root: loads tests/Trellis.Bpf.Tests/bpf/testprogs.c into the kernel.</summary>
public sealed class BpfObjectTests
{
    [Fact]
    public void Open_lists_programs_and_maps_by_name_before_load()
    {
        using var obj = TestPrograms.Open();
        Assert.False(obj.Loaded);
        Assert.Equal(["deny_ports", "pass_all", "record_packet"], obj.Programs.Select(p => p.Name).Order());
        Assert.Contains("test_hash", obj.Maps.Select(m => m.Name));
        Assert.Equal("cgroup/connect4", obj.Program("deny_ports").SectionName);
        Assert.Equal("tc", obj.Program("record_packet").SectionName);
    }

    [Fact]
    public void Load_creates_every_program_and_map_in_the_kernel()
    {
        using var obj = TestPrograms.Load();
        Assert.True(obj.Loaded);
        Assert.Equal(BpfProgramType.SchedCls, obj.Program("record_packet").Type);
        Assert.Equal(BpfProgramType.CgroupSockAddr, obj.Program("deny_ports").Type);
        Assert.True(obj.Program("pass_all").Fd > 0);
        var info = obj.Program("pass_all").Info();
        Assert.True(info.Id > 0);

        var hash = obj.Map("test_hash");
        Assert.Equal(BpfMapType.Hash, hash.Type);
        Assert.Equal(4u, hash.KeySize);
        Assert.Equal(8u, hash.ValueSize);
        Assert.Equal(64u, hash.MaxEntries);
        Assert.Equal(BpfMapType.RingBuf, obj.Map("test_events").Type);
        Assert.Equal(BpfMapType.PerCpuArray, obj.Map("test_percpu").Type);
    }

    [Fact]
    public void Missing_program_name_throws_KeyNotFound_listing_what_exists()
    {
        using var obj = TestPrograms.Open();
        var e = Assert.Throws<KeyNotFoundException>(() => obj.Program("nope"));
        Assert.Contains("'nope'", e.Message);
        Assert.Contains("record_packet", e.Message);
        Assert.Contains("deny_ports", e.Message);
    }

    [Fact]
    public void Missing_map_name_throws_KeyNotFound_listing_what_exists()
    {
        using var obj = TestPrograms.Open();
        var e = Assert.Throws<KeyNotFoundException>(() => obj.Map("nope"));
        Assert.Contains("'nope'", e.Message);
        Assert.Contains("test_hash", e.Message);
        Assert.Contains("test_events", e.Message);
    }

    [Fact]
    public void Program_fd_before_load_says_to_call_Load()
    {
        using var obj = TestPrograms.Open();
        var e = Assert.Throws<InvalidOperationException>(() => obj.Program("pass_all").Fd);
        Assert.Contains("BpfObject.Load", e.Message);
    }

    [Fact]
    public void Program_of_a_disposed_object_throws_ObjectDisposed()
    {
        var obj = TestPrograms.Load();
        var prog = obj.Program("pass_all");
        obj.Dispose();
        Assert.Throws<ObjectDisposedException>(() => prog.Fd);
    }

    [Fact]
    public void Garbage_elf_fails_to_open_with_BpfException()
    {
        var e = Assert.Throws<BpfException>(() => BpfObject.Open(new byte[64], "garbage"));
        Assert.Contains("open BPF object garbage", e.Message);
        Assert.True(e.Errno > 0);
    }

    [Fact]
    public void TestRun_returns_the_program_verdict_and_runs_repeat_times()
    {
        using var obj = TestPrograms.Load();
        var r = obj.Program("pass_all").TestRun(Packets.Udp());
        Assert.Equal(0u, r.ReturnValue); // TC_ACT_OK
        Assert.Equal(Packets.Udp().Length, r.DataOut.Length);

        obj.Program("record_packet").TestRun(Packets.Udp(), repeat: 5);
        var perCpu = obj.Map("test_percpu").LookupPerCpu<uint, ulong>(0u);
        Assert.Equal(5UL, perCpu.Aggregate(0UL, (a, b) => a + b));
    }
}
