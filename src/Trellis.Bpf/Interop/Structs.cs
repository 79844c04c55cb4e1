using System.Runtime.InteropServices;

namespace Trellis.Bpf.Interop;

// Mirrors of libbpf 1.1.2's option structs; offsets checked against the C headers
// (tests/Trellis.Bpf.Tests/InteropLayoutTests.cs compiles a probe with gcc).

[StructLayout(LayoutKind.Explicit, Size = 80)]
internal unsafe struct BpfObjectOpenOpts
{
    [FieldOffset(0)] public nuint Sz;
    [FieldOffset(8)] public byte* ObjectName;
    [FieldOffset(16)] public byte RelaxedMaps;
    [FieldOffset(24)] public byte* PinRootPath;
    [FieldOffset(40)] public byte* Kconfig;
    [FieldOffset(48)] public byte* BtfCustomPath;
    [FieldOffset(56)] public byte* KernelLogBuf;
    [FieldOffset(64)] public nuint KernelLogSize;
    [FieldOffset(72)] public uint KernelLogLevel;
}

[StructLayout(LayoutKind.Explicit, Size = 24)]
internal struct BpfTcHook
{
    [FieldOffset(0)] public nuint Sz;
    [FieldOffset(8)] public int Ifindex;
    [FieldOffset(12)] public int AttachPoint;
    [FieldOffset(16)] public uint Parent;
}

[StructLayout(LayoutKind.Explicit, Size = 32)]
internal struct BpfTcOpts
{
    [FieldOffset(0)] public nuint Sz;
    [FieldOffset(8)] public int ProgFd;
    [FieldOffset(12)] public uint Flags;
    [FieldOffset(16)] public uint ProgId;
    [FieldOffset(20)] public uint Handle;
    [FieldOffset(24)] public uint Priority;
}

[StructLayout(LayoutKind.Explicit, Size = 80)]
internal unsafe struct BpfTestRunOpts
{
    [FieldOffset(0)] public nuint Sz;
    [FieldOffset(8)] public void* DataIn;
    [FieldOffset(16)] public void* DataOut;
    [FieldOffset(24)] public uint DataSizeIn;
    [FieldOffset(28)] public uint DataSizeOut;
    [FieldOffset(32)] public void* CtxIn;
    [FieldOffset(40)] public void* CtxOut;
    [FieldOffset(48)] public uint CtxSizeIn;
    [FieldOffset(52)] public uint CtxSizeOut;
    [FieldOffset(56)] public uint Retval;
    [FieldOffset(60)] public int Repeat;
    [FieldOffset(64)] public uint Duration;
    [FieldOffset(68)] public uint Flags;
    [FieldOffset(72)] public uint Cpu;
    [FieldOffset(76)] public uint BatchSize;
}

[StructLayout(LayoutKind.Explicit, Size = 48)]
internal struct BpfMapCreateOpts
{
    [FieldOffset(0)] public nuint Sz;
    [FieldOffset(8)] public uint BtfFd;
    [FieldOffset(24)] public uint InnerMapFd;
    [FieldOffset(28)] public uint MapFlags;
}

// struct bpf_map_info (uapi), the leading fields we read.
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct BpfMapInfo
{
    public uint Type;
    public uint Id;
    public uint KeySize;
    public uint ValueSize;
    public uint MaxEntries;
    public uint MapFlags;
    public fixed byte Name[16];
    public uint Ifindex;
    public uint BtfVmlinuxValueTypeId;
    public ulong NetnsDev;
    public ulong NetnsIno;
    public uint BtfId;
    public uint BtfKeyTypeId;
    public uint BtfValueTypeId;
    public uint Pad;
    public ulong MapExtra;
}

// struct bpf_prog_info (uapi), the leading fields we read.
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct BpfProgInfo
{
    public uint Type;
    public uint Id;
    public fixed byte Tag[8];
    public uint JitedProgLen;
    public uint XlatedProgLen;
    public ulong JitedProgInsns;
    public ulong XlatedProgInsns;
    public ulong LoadTime;
    public uint CreatedByUid;
    public uint NrMapIds;
    public ulong MapIds;
    public fixed byte Name[16];
    public uint Ifindex;
    public uint GplCompatible;
    public ulong NetnsDev;
    public ulong NetnsIno;
    public uint NrJitedKsyms;
    public uint NrJitedFuncLens;
    public ulong JitedKsyms;
    public ulong JitedFuncLens;
    public uint BtfId;
    public uint FuncInfoRecSize;
    public ulong FuncInfo;
    public uint NrFuncInfo;
    public uint NrLineInfo;
    public ulong LineInfo;
    public ulong JitedLineInfo;
    public uint NrJitedLineInfo;
    public uint LineInfoRecSize;
    public uint JitedLineInfoRecSize;
    public uint NrProgTags;
    public ulong ProgTags;
    public ulong RunTimeNs;
    public ulong RunCnt;
}

[StructLayout(LayoutKind.Sequential)]
internal struct BtfType
{
    public uint NameOff;
    public uint Info;
    public uint SizeOrType;
}

[StructLayout(LayoutKind.Sequential)]
internal struct BtfMember
{
    public uint NameOff;
    public uint Type;
    public uint Offset;
}
