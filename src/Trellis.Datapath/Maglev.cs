using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace Trellis.Datapath;

/// <summary>Maglev consistent hashing (Eisenbud et al., NSDI 2016, section 3.4): every backend gets a
/// permutation of the table's slots from two hashes of its name, and backends take turns claiming their
/// next free slot. Removing one backend moves only the slots it held (about 1/N of the flows); the others
/// keep theirs almost entirely. The datapath indexes the table with a hash of the flow's 5-tuple.</summary>
public static class Maglev
{
    /// <summary>Builds a table of <paramref name="size"/> (a prime) entries naming backends by index into
    /// <paramref name="backendNames"/>. Names, not positions, decide the permutations, so the order of the
    /// list does not matter and a backend keeps its slots wherever it moves in the list.</summary>
    public static int[] Build(IReadOnlyList<string> backendNames, int size = Lb4Frontend.MaglevTableSize)
    {
        var table = new int[size];
        Array.Fill(table, -1);
        int n = backendNames.Count;
        if (n == 0) return table;
        var offset = new long[n];
        var skip = new long[n];
        var next = new long[n];
        Span<byte> h = stackalloc byte[32];
        for (int i = 0; i < n; i++)
        {
            SHA256.HashData(Encoding.UTF8.GetBytes(backendNames[i]), h);
            offset[i] = (long)(BinaryPrimitives.ReadUInt64LittleEndian(h) % (ulong)size);
            skip[i] = (long)(BinaryPrimitives.ReadUInt64LittleEndian(h[8..]) % (ulong)(size - 1)) + 1;
        }
        // Ties between equal names are impossible to break fairly; order by name so the result never depends
        // on the caller's order.
        var order = Enumerable.Range(0, n).OrderBy(i => backendNames[i], StringComparer.Ordinal).ToArray();
        int filled = 0;
        while (true)
        {
            foreach (var i in order)
            {
                long c = (offset[i] + next[i] * skip[i]) % size;
                while (table[c] >= 0)
                {
                    next[i]++;
                    c = (offset[i] + next[i] * skip[i]) % size;
                }
                table[c] = i;
                next[i]++;
                if (++filled == size) return table;
            }
        }
    }
}
