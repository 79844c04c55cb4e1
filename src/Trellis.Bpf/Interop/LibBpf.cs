using System.Runtime.InteropServices;

namespace Trellis.Bpf.Interop;

// Debian 12's libbpf.so.1 (1.1.2). Conventions of libbpf 1.x: int-returning calls return
// -errno on failure; pointer-returning calls return NULL and set errno.
internal static unsafe partial class LibBpf
{
    private const string Lib = "libbpf.so.1";

    // --- objects ---
    [LibraryImport(Lib, EntryPoint = "bpf_object__open_mem", SetLastError = true)]
    internal static partial IntPtr ObjectOpenMem(byte* buf, nuint size, BpfObjectOpenOpts* opts);

    [LibraryImport(Lib, EntryPoint = "bpf_object__load")]
    internal static partial int ObjectLoad(IntPtr obj);

    [LibraryImport(Lib, EntryPoint = "bpf_object__close")]
    internal static partial void ObjectClose(IntPtr obj);

    [LibraryImport(Lib, EntryPoint = "bpf_object__next_program")]
    internal static partial IntPtr ObjectNextProgram(IntPtr obj, IntPtr prev);

    [LibraryImport(Lib, EntryPoint = "bpf_object__next_map")]
    internal static partial IntPtr ObjectNextMap(IntPtr obj, IntPtr prev);

    // --- programs ---
    [LibraryImport(Lib, EntryPoint = "bpf_program__name")]
    internal static partial byte* ProgramName(IntPtr prog);

    [LibraryImport(Lib, EntryPoint = "bpf_program__section_name")]
    internal static partial byte* ProgramSectionName(IntPtr prog);

    [LibraryImport(Lib, EntryPoint = "bpf_program__fd")]
    internal static partial int ProgramFd(IntPtr prog);

    [LibraryImport(Lib, EntryPoint = "bpf_program__type")]
    internal static partial int ProgramType(IntPtr prog);

    [LibraryImport(Lib, EntryPoint = "bpf_prog_test_run_opts")]
    internal static partial int ProgTestRun(int progFd, BpfTestRunOpts* opts);

    [LibraryImport(Lib, EntryPoint = "bpf_prog_attach")]
    internal static partial int ProgAttach(int progFd, int targetFd, int attachType, uint flags);

    [LibraryImport(Lib, EntryPoint = "bpf_prog_detach2")]
    internal static partial int ProgDetach2(int progFd, int targetFd, int attachType);

    [LibraryImport(Lib, EntryPoint = "bpf_prog_query")]
    internal static partial int ProgQuery(int targetFd, int attachType, uint queryFlags, uint* attachFlags, uint* progIds, uint* progCount);

    [LibraryImport(Lib, EntryPoint = "bpf_prog_get_fd_by_id")]
    internal static partial int ProgGetFdById(uint id);

    // --- maps ---
    [LibraryImport(Lib, EntryPoint = "bpf_map__name")]
    internal static partial byte* MapName(IntPtr map);

    [LibraryImport(Lib, EntryPoint = "bpf_map__fd")]
    internal static partial int MapFd(IntPtr map);

    [LibraryImport(Lib, EntryPoint = "bpf_map_create")]
    internal static partial int MapCreate(int type, byte* name, uint keySize, uint valueSize, uint maxEntries, BpfMapCreateOpts* opts);

    [LibraryImport(Lib, EntryPoint = "bpf_map_update_elem")]
    internal static partial int MapUpdate(int fd, void* key, void* value, ulong flags);

    // opts may be NULL (element flags 0). *count: in, how many; out, how many were written.
    [LibraryImport(Lib, EntryPoint = "bpf_map_update_batch")]
    internal static partial int MapUpdateBatch(int fd, void* keys, void* values, uint* count, void* opts);

    [LibraryImport(Lib, EntryPoint = "bpf_map_lookup_elem")]
    internal static partial int MapLookup(int fd, void* key, void* value);

    [LibraryImport(Lib, EntryPoint = "bpf_map_delete_elem")]
    internal static partial int MapDelete(int fd, void* key);

    [LibraryImport(Lib, EntryPoint = "bpf_map_get_next_key")]
    internal static partial int MapGetNextKey(int fd, void* key, void* nextKey);

    [LibraryImport(Lib, EntryPoint = "bpf_map_get_fd_by_id")]
    internal static partial int MapGetFdById(uint id);

    [LibraryImport(Lib, EntryPoint = "bpf_obj_get_info_by_fd")]
    internal static partial int ObjGetInfoByFd(int fd, void* info, uint* infoLen);

    [LibraryImport(Lib, EntryPoint = "bpf_link_create")]
    internal static partial int LinkCreate(int progFd, int targetFd, int attachType, void* opts);

    [LibraryImport(Lib, EntryPoint = "bpf_link_update")]
    internal static partial int LinkUpdate(int linkFd, int newProgFd, void* opts);

    [LibraryImport(Lib, EntryPoint = "bpf_obj_pin", StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int ObjPin(int fd, string path);

    [LibraryImport(Lib, EntryPoint = "bpf_obj_get", StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int ObjGet(string path);

    [LibraryImport(Lib, EntryPoint = "libbpf_num_possible_cpus")]
    internal static partial int NumPossibleCpus();

    // --- ring buffer ---
    [LibraryImport(Lib, EntryPoint = "ring_buffer__new", SetLastError = true)]
    internal static partial IntPtr RingBufferNew(int mapFd, delegate* unmanaged<IntPtr, IntPtr, nuint, int> sampleCb, IntPtr ctx, IntPtr opts);

    [LibraryImport(Lib, EntryPoint = "ring_buffer__poll")]
    internal static partial int RingBufferPoll(IntPtr rb, int timeoutMs);

    [LibraryImport(Lib, EntryPoint = "ring_buffer__consume")]
    internal static partial int RingBufferConsume(IntPtr rb);

    [LibraryImport(Lib, EntryPoint = "ring_buffer__free")]
    internal static partial void RingBufferFree(IntPtr rb);

    // --- TC ---
    [LibraryImport(Lib, EntryPoint = "bpf_tc_hook_create")]
    internal static partial int TcHookCreate(BpfTcHook* hook);

    [LibraryImport(Lib, EntryPoint = "bpf_tc_hook_destroy")]
    internal static partial int TcHookDestroy(BpfTcHook* hook);

    [LibraryImport(Lib, EntryPoint = "bpf_tc_attach")]
    internal static partial int TcAttach(BpfTcHook* hook, BpfTcOpts* opts);

    [LibraryImport(Lib, EntryPoint = "bpf_tc_detach")]
    internal static partial int TcDetach(BpfTcHook* hook, BpfTcOpts* opts);

    [LibraryImport(Lib, EntryPoint = "bpf_tc_query")]
    internal static partial int TcQuery(BpfTcHook* hook, BpfTcOpts* opts);

    // --- features ---
    [LibraryImport(Lib, EntryPoint = "libbpf_probe_bpf_prog_type")]
    internal static partial int ProbeProgType(int progType, IntPtr opts);

    [LibraryImport(Lib, EntryPoint = "libbpf_probe_bpf_map_type")]
    internal static partial int ProbeMapType(int mapType, IntPtr opts);

    // --- logging ---
    [LibraryImport(Lib, EntryPoint = "libbpf_set_print")]
    internal static partial IntPtr SetPrint(delegate* unmanaged<int, byte*, IntPtr, int> fn);

    // --- BTF ---
    [LibraryImport(Lib, EntryPoint = "btf__parse_elf", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    internal static partial IntPtr BtfParseElf(string path, IntPtr btfExt);

    [LibraryImport(Lib, EntryPoint = "btf__free")]
    internal static partial void BtfFree(IntPtr btf);

    [LibraryImport(Lib, EntryPoint = "btf__find_by_name_kind", StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int BtfFindByNameKind(IntPtr btf, string name, uint kind);

    [LibraryImport(Lib, EntryPoint = "btf__type_by_id")]
    internal static partial BtfType* BtfTypeById(IntPtr btf, uint id);

    [LibraryImport(Lib, EntryPoint = "btf__name_by_offset")]
    internal static partial byte* BtfNameByOffset(IntPtr btf, uint offset);
}

internal static unsafe partial class LibC
{
    [LibraryImport("libc", EntryPoint = "vsnprintf")]
    internal static partial int VSnprintf(byte* buf, nuint size, byte* fmt, IntPtr args);

    [LibraryImport("libc", EntryPoint = "if_nametoindex", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    internal static partial uint IfNameToIndex(string name);

    [LibraryImport("libc", EntryPoint = "close")]
    internal static partial int Close(int fd);

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    internal static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "geteuid")]
    internal static partial uint GetEuid();

    [LibraryImport("libc", EntryPoint = "statfs", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    internal static partial int StatFs(string path, byte* buf);

    [LibraryImport("libc", EntryPoint = "mount", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    internal static partial int Mount(string source, string target, string fstype, ulong flags, IntPtr data);

    internal const int O_RDONLY = 0;
    internal const int O_DIRECTORY = 0x10000;
    internal const int O_CLOEXEC = 0x80000;
}
