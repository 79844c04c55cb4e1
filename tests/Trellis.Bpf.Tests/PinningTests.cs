namespace Trellis.Bpf.Tests;

/// <summary>Needs root and bpffs. Maps declared LIBBPF_PIN_BY_NAME live under PinRoot beyond the object.</summary>
public sealed class PinningTests : IDisposable
{
    private readonly PinDir _pins = new("pinning");

    public void Dispose() => _pins.Dispose();

    [Fact]
    public void Pinned_map_survives_dispose_and_a_second_load_reuses_it()
    {
        uint firstId;
        using (var obj = TestPrograms.Load(_pins.Path))
        {
            var m = obj.Map("test_pinned");
            m.Update(2u, 4242UL);
            firstId = m.Id;
        }
        Assert.True(File.Exists(Path.Combine(_pins.Path, "test_pinned")));
        // Only the map declared with pinning is pinned.
        Assert.False(File.Exists(Path.Combine(_pins.Path, "test_hash")));

        using var again = TestPrograms.Load(_pins.Path);
        var reused = again.Map("test_pinned");
        Assert.Equal(firstId, reused.Id);
        Assert.True(reused.TryLookup(2u, out ulong v));
        Assert.Equal(4242UL, v);
    }

    [Fact]
    public void OpenPinned_sees_what_the_object_wrote()
    {
        using var obj = TestPrograms.Load(_pins.Path);
        obj.Map("test_pinned").Update(1u, 11UL);

        using var pinned = BpfMap.OpenPinned(Path.Combine(_pins.Path, "test_pinned"));
        Assert.Equal("test_pinned", pinned.Name);
        Assert.Equal(BpfMapType.Array, pinned.Type);
        Assert.True(pinned.TryLookup(1u, out ulong v));
        Assert.Equal(11UL, v);
        pinned.Update(0u, 5UL);
        Assert.True(obj.Map("test_pinned").TryLookup(0u, out ulong w));
        Assert.Equal(5UL, w);
    }

    [Fact]
    public void Explicit_Pin_of_map_and_program_replaces_an_older_pin()
    {
        using var obj = TestPrograms.Load();
        var mapPin = Path.Combine(_pins.Path, "hash");
        obj.Map("test_hash").Pin(mapPin);
        obj.Map("test_hash").Pin(mapPin); // replacing is allowed
        obj.Program("pass_all").Pin(Path.Combine(_pins.Path, "prog"));
        Assert.True(File.Exists(Path.Combine(_pins.Path, "prog")));
        using var pinned = BpfMap.OpenPinned(mapPin);
        Assert.Equal(obj.Map("test_hash").Id, pinned.Id);
    }

    [Fact]
    public void BpfFs_recognises_bpffs_and_not_other_filesystems()
    {
        Assert.True(BpfFs.IsRoot);
        Assert.True(BpfFs.IsBpfFs("/sys/fs/bpf"));
        Assert.True(BpfFs.IsBpfFs(_pins.Path));
        Assert.False(BpfFs.IsBpfFs("/tmp"));
        Assert.False(BpfFs.IsBpfFs("/does/not/exist"));
    }
}
