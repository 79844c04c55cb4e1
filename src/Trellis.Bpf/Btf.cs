using System.Runtime.InteropServices;
using Trellis.Bpf.Interop;

namespace Trellis.Bpf;

public sealed record BtfStruct(string Name, int Size, IReadOnlyDictionary<string, int> MemberOffsets);

/// <summary>Reads struct layouts from an object's BTF — how tests check that C# mirrors match the C structs.</summary>
public sealed unsafe class Btf : IDisposable
{
    private IntPtr _btf;
    private const uint KindStruct = 4;

    private Btf(IntPtr btf) => _btf = btf;

    public static Btf ParseElf(string path) =>
        new(BpfException.CheckPtr(LibBpf.BtfParseElf(path, IntPtr.Zero), $"parse BTF of {path}"));

    public BtfStruct Struct(string name)
    {
        int id = LibBpf.BtfFindByNameKind(_btf, name, KindStruct);
        if (id < 0) throw new KeyNotFoundException($"BTF has no struct {name}");
        BtfType* t = LibBpf.BtfTypeById(_btf, (uint)id);
        int vlen = (int)(t->Info & 0xffff);
        bool kflag = (t->Info >> 31) != 0;
        var members = (BtfMember*)(t + 1);
        var offsets = new Dictionary<string, int>();
        for (int i = 0; i < vlen; i++)
        {
            var bits = kflag ? members[i].Offset & 0xffffff : members[i].Offset;
            var mname = Marshal.PtrToStringUTF8((IntPtr)LibBpf.BtfNameByOffset(_btf, members[i].NameOff)) ?? "";
            offsets[mname] = (int)(bits / 8);
        }
        return new BtfStruct(name, (int)t->SizeOrType, offsets);
    }

    public void Dispose()
    {
        var b = Interlocked.Exchange(ref _btf, IntPtr.Zero);
        if (b != IntPtr.Zero) LibBpf.BtfFree(b);
    }
}
