namespace Trellis.Policy.Tests;


public class IdentityAllocatorTests
{
    private static readonly Labels A = Labels.From(("app", "a"));
    private static readonly Labels B = Labels.From(("app", "b"));
    private static readonly Labels C = Labels.From(("app", "c"));

    [Fact]
    public void First_identity_is_256_and_reserved_ids_are_never_handed_out()
    {
        var alloc = new IdentityAllocator();
        Assert.Equal(256u, alloc.GetOrAllocate(A));
        Assert.Equal(1u, ReservedIdentity.Host);
        Assert.Equal(2u, ReservedIdentity.World);
    }

    [Fact]
    public void Same_labels_get_the_same_identity()
    {
        var alloc = new IdentityAllocator();
        var id = alloc.GetOrAllocate(A);
        alloc.GetOrAllocate(B);
        Assert.Equal(id, alloc.GetOrAllocate(Labels.From(("app", "a"))));
    }

    [Fact]
    public void Released_identity_is_reused_as_the_lowest_free_id()
    {
        var alloc = new IdentityAllocator();
        alloc.GetOrAllocate(A);
        alloc.GetOrAllocate(B);
        alloc.GetOrAllocate(C);
        Assert.True(alloc.Release(A));
        Assert.False(alloc.Release(A));
        Assert.Equal(256u, alloc.GetOrAllocate(Labels.From(("app", "d"))));
        Assert.Equal(259u, alloc.GetOrAllocate(Labels.From(("app", "e"))));
    }

    [Fact]
    public void Existing_allocations_are_kept_and_gaps_filled_first()
    {
        var alloc = new IdentityAllocator(new Dictionary<Labels, uint> { [A] = 256, [B] = 258 });
        Assert.Equal(258u, alloc.GetOrAllocate(B));
        Assert.Equal(257u, alloc.GetOrAllocate(C));
        Assert.Equal(259u, alloc.GetOrAllocate(Labels.From(("app", "d"))));
    }

    [Fact]
    public void Snapshot_round_trips_into_a_new_allocator()
    {
        var alloc = new IdentityAllocator();
        alloc.GetOrAllocate(A);
        alloc.GetOrAllocate(B);
        var again = new IdentityAllocator(alloc.Snapshot);
        Assert.Equal(alloc.GetOrAllocate(B), again.GetOrAllocate(B));
        Assert.Equal(2, again.Snapshot.Count);
    }

    [Fact]
    public void Existing_allocations_with_reserved_or_duplicate_ids_are_rejected()
    {
        Assert.Throws<ArgumentException>(() => new IdentityAllocator(new Dictionary<Labels, uint> { [A] = 2 }));
        Assert.Throws<ArgumentException>(() => new IdentityAllocator(new Dictionary<Labels, uint> { [A] = 300, [B] = 300 }));
    }
}
