namespace Trellis.Datapath.Tests;

/// <summary>The Maglev table builder (pure): full, balanced, independent of order, and stable when a backend leaves.</summary>
public sealed class MaglevTests
{
    private static List<string> Backends(int n) => Enumerable.Range(1, n).Select(i => $"10.200.0.{i}:8080").ToList();

    [Fact]
    public void Every_entry_is_filled_and_each_backend_gets_an_equal_share()
    {
        var names = Backends(7);
        var table = Maglev.Build(names);
        Assert.Equal(Lb4Frontend.MaglevTableSize, table.Length);
        Assert.DoesNotContain(-1, table);
        var share = Lb4Frontend.MaglevTableSize / 7.0;
        foreach (var count in table.GroupBy(i => i).Select(g => g.Count()))
            Assert.InRange(count, Math.Floor(share), Math.Ceiling(share));
    }

    [Fact]
    public void The_table_depends_on_the_names_not_their_order()
    {
        var names = Backends(5);
        var reversed = names.AsEnumerable().Reverse().ToList();
        Assert.Equal(Maglev.Build(names).Select(i => names[i]), Maglev.Build(reversed).Select(i => reversed[i]));
    }

    [Fact]
    public void Removing_a_backend_moves_its_entries_and_few_others()
    {
        var names = Backends(10);
        var before = Maglev.Build(names).Select(i => names[i]).ToArray();
        var fewer = names.Where(n => n != names[3]).ToList();
        var after = Maglev.Build(fewer).Select(i => fewer[i]).ToArray();
        int kept = 0, survivors = 0;
        for (int i = 0; i < before.Length; i++)
        {
            if (before[i] == names[3]) continue;
            survivors++;
            if (after[i] == before[i]) kept++;
        }
        // Random re-selection would keep ~1/9 of them; Maglev keeps nearly all.
        Assert.True(kept > survivors * 0.9, $"only {kept} of {survivors} entries kept their backend");
        Assert.DoesNotContain(names[3], after);
    }

    [Fact]
    public void No_backends_give_an_empty_table() => Assert.All(Maglev.Build([]), i => Assert.Equal(-1, i));
}
