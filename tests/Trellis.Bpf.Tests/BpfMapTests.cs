namespace Trellis.Bpf.Tests;

/// <summary>Needs root. Typed map access against maps of tests/Trellis.Bpf.Tests/bpf/testprogs.c.</summary>
public sealed class BpfMapTests : IDisposable
{
    private readonly BpfObject _obj = TestPrograms.Load();

    public void Dispose() => _obj.Dispose();

    [Fact]
    public void Update_lookup_delete_round_trip_through_the_kernel()
    {
        var m = _obj.Map("test_hash");
        Assert.False(m.TryLookup(7u, out ulong _));
        m.Update(7u, 700UL);
        m.Update(8u, 800UL);
        Assert.True(m.TryLookup(7u, out ulong v));
        Assert.Equal(700UL, v);
        Assert.Equal(2, m.Count());
        Assert.Equal([7u, 8u], m.Keys<uint>().Order());

        Assert.True(m.Delete(7u));
        Assert.False(m.Delete(7u));
        Assert.False(m.TryLookup(7u, out ulong _));
        Assert.Equal([8u], m.Keys<uint>());
    }

    [Fact]
    public void UpdateBatch_writes_every_entry_in_one_call()
    {
        var m = _obj.Map("test_hash");
        var keys = Enumerable.Range(1, 50).Select(i => (uint)i).ToArray();
        m.UpdateBatch<uint, ulong>(keys, keys.Select(k => k * 10UL).ToArray());
        Assert.Equal(keys, m.Keys<uint>().Order());
        Assert.True(m.TryLookup(37u, out ulong v));
        Assert.Equal(370UL, v);
        Assert.Throws<ArgumentException>(() => m.UpdateBatch<uint, ulong>(keys, [1UL]));
    }

    [Fact]
    public void Update_flags_NoExist_and_Exist_are_enforced_by_the_kernel()
    {
        var m = _obj.Map("test_hash");
        var e = Assert.Throws<BpfException>(() => m.Update(1u, 1UL, MapUpdate.Exist));
        Assert.Equal(2, e.Errno); // ENOENT
        m.Update(1u, 1UL, MapUpdate.NoExist);
        e = Assert.Throws<BpfException>(() => m.Update(1u, 2UL, MapUpdate.NoExist));
        Assert.Equal(17, e.Errno); // EEXIST
        m.Update(1u, 3UL, MapUpdate.Exist);
        Assert.True(m.TryLookup(1u, out ulong v));
        Assert.Equal(3UL, v);
    }

    [Fact]
    public void Key_size_mismatch_throws_ArgumentException_naming_both_sizes()
    {
        var m = _obj.Map("test_hash");
        var e = Assert.Throws<ArgumentException>(() => m.Update(1UL, 1UL));
        Assert.Contains("UInt64 is 8 bytes", e.Message);
        Assert.Contains("key is 4", e.Message);
        Assert.Throws<ArgumentException>(() => m.Delete((ushort)1));
        Assert.Throws<ArgumentException>(() => m.Keys<ulong>());
    }

    [Fact]
    public void Value_size_mismatch_throws_ArgumentException_naming_both_sizes()
    {
        var m = _obj.Map("test_hash");
        var e = Assert.Throws<ArgumentException>(() => m.Update(1u, 1u));
        Assert.Contains("UInt32 is 4 bytes", e.Message);
        Assert.Contains("value is 8", e.Message);
        Assert.Throws<ArgumentException>(() => m.TryLookup(1u, out uint _));
    }

    [Fact]
    public void Per_cpu_lookup_returns_one_value_per_possible_cpu()
    {
        var m = _obj.Map("test_percpu");
        var values = m.LookupPerCpu<uint, ulong>(0u);
        var possible = ParseCpuList(File.ReadAllText("/sys/devices/system/cpu/possible"));
        Assert.Equal(possible, values.Length);
        Assert.All(values, v => Assert.Equal(0UL, v));
    }

    [Fact]
    public void Array_map_has_every_key_and_cannot_delete()
    {
        var m = _obj.Map("test_pinned");
        Assert.Equal(4, m.Count());
        Assert.True(m.TryLookup(3u, out ulong v));
        Assert.Equal(0UL, v);
        var e = Assert.Throws<BpfException>(() => m.Delete(3u));
        Assert.Equal(22, e.Errno); // EINVAL
    }

    [Fact]
    public void Standalone_map_can_be_created_filled_and_opened_by_id()
    {
        using var m = BpfMap.Create(BpfMapType.Hash, "trellis_test_standalone_long_name", 8, 8, 16);
        Assert.Equal(BpfMapType.Hash, m.Type);
        Assert.Equal(16u, m.MaxEntries);
        m.Update(5UL, 50UL);

        using var byId = BpfMap.FromId(m.Id);
        Assert.True(byId.TryLookup(5UL, out ulong v));
        Assert.Equal(50UL, v);
        Assert.Equal(m.Id, byId.Id);
    }

    [Fact]
    public void Standalone_map_with_invalid_sizes_fails_with_BpfException()
    {
        var e = Assert.Throws<BpfException>(() => BpfMap.Create(BpfMapType.Hash, "bad", 0, 8, 16));
        Assert.Equal(22, e.Errno);
        Assert.Contains("create map bad", e.Message);
    }

    [Fact]
    public void Opening_a_missing_pin_fails_with_ENOENT()
    {
        var e = Assert.Throws<BpfException>(() => BpfMap.OpenPinned("/sys/fs/bpf/trellis-test-does-not-exist"));
        Assert.Equal(2, e.Errno);
    }

    private static int ParseCpuList(string list)
    {
        int n = 0;
        foreach (var part in list.Trim().Split(','))
        {
            var r = part.Split('-');
            n += r.Length == 1 ? 1 : int.Parse(r[1]) - int.Parse(r[0]) + 1;
        }
        return n;
    }
}
