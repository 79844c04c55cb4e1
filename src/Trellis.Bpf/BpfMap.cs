using System.Runtime.CompilerServices;
using System.Text;
using Trellis.Bpf.Interop;

namespace Trellis.Bpf;

public enum BpfMapType : uint
{
    Hash = 1,
    Array = 2,
    PerCpuHash = 5,
    PerCpuArray = 6,
    LruHash = 9,
    LpmTrie = 11,
    HashOfMaps = 13,
    SockHash = 18,
    RingBuf = 27,
}

public enum MapUpdate : ulong
{
    Any = 0,
    NoExist = 1,
    Exist = 2,
}

/// <summary>A live BPF map: either one of a loaded <see cref="BpfObject"/> or one opened/created on its own.
/// Typed access checks that the C# key/value sizes equal the kernel's.</summary>
public sealed unsafe class BpfMap : IDisposable
{
    private readonly BpfObject? _owner;
    private readonly IntPtr _map;
    private FdHandle? _fd;
    private BpfMapInfo _info;
    private bool _haveInfo;

    public string Name { get; }

    internal BpfMap(BpfObject owner, IntPtr map, string name)
    {
        _owner = owner;
        _map = map;
        Name = name;
    }

    private BpfMap(FdHandle fd, string name)
    {
        _fd = fd;
        Name = name;
    }

    /// <summary>Creates a standalone map (e.g. a per-endpoint inner map).</summary>
    public static BpfMap Create(BpfMapType type, string name, uint keySize, uint valueSize, uint maxEntries, uint flags = 0)
    {
        var opts = new BpfMapCreateOpts { Sz = (nuint)sizeof(BpfMapCreateOpts), MapFlags = flags };
        var nameBytes = Encoding.UTF8.GetBytes((name.Length > 15 ? name[..15] : name) + "\0");
        fixed (byte* pName = nameBytes)
        {
            int fd = BpfException.Check(LibBpf.MapCreate((int)type, pName, keySize, valueSize, maxEntries, &opts), $"create map {name}");
            return new BpfMap(new FdHandle(fd, ownsHandle: true), name);
        }
    }

    /// <summary>Attaches a program to this map (sockmap/sockhash verdict programs); a second attach replaces the first.</summary>
    public void AttachProgram(BpfProgram program, BpfMapAttachType type) =>
        BpfException.Check(LibBpf.ProgAttach(program.Fd, Fd, (int)type, 0), $"attach {program.Name} to map {Name} ({type})");

    /// <summary>Opens a map pinned on bpffs.</summary>
    public static BpfMap OpenPinned(string path)
    {
        int fd = BpfException.Check(LibBpf.ObjGet(path), $"open pinned map {path}");
        var m = new BpfMap(new FdHandle(fd, ownsHandle: true), Path.GetFileName(path));
        return m;
    }

    /// <summary>Opens a map by its kernel id (e.g. the value read from a map of maps).</summary>
    public static BpfMap FromId(uint id)
    {
        int fd = BpfException.Check(LibBpf.MapGetFdById(id), $"open map id {id}");
        return new BpfMap(new FdHandle(fd, ownsHandle: true), $"id:{id}");
    }

    public FdHandle Handle
    {
        get
        {
            if (_fd is not null) return _fd;
            _ = _owner!.Handle; // throws once the object is disposed
            int fd = LibBpf.MapFd(_map);
            if (fd < 0)
                throw new InvalidOperationException($"BPF map {Name} is not created yet: call BpfObject.Load first");
            return _fd = new FdHandle(fd, ownsHandle: false);
        }
    }

    public int Fd => Handle.Fd;

    private ref readonly BpfMapInfo Info
    {
        get
        {
            if (!_haveInfo)
            {
                BpfMapInfo info = default;
                uint len = (uint)sizeof(BpfMapInfo);
                BpfException.Check(LibBpf.ObjGetInfoByFd(Fd, &info, &len), $"get info of map {Name}");
                _info = info;
                _haveInfo = true;
            }
            return ref _info;
        }
    }

    public uint Id => Info.Id;
    public BpfMapType Type => (BpfMapType)Info.Type;
    public uint KeySize => Info.KeySize;
    public uint ValueSize => Info.ValueSize;
    public uint MaxEntries => Info.MaxEntries;

    public void Pin(string path)
    {
        if (File.Exists(path)) File.Delete(path);
        BpfException.Check(LibBpf.ObjPin(Fd, path), $"pin map {Name} at {path}");
    }

    private void CheckSizes<TKey, TValue>(bool perCpu = false) where TKey : unmanaged where TValue : unmanaged
    {
        if (sizeof(TKey) != KeySize)
            throw new ArgumentException($"map {Name}: key type {typeof(TKey).Name} is {sizeof(TKey)} bytes, the kernel map's key is {KeySize}");
        var vs = Type == BpfMapType.HashOfMaps ? 4u : ValueSize; // map-of-maps values are fds in, ids out
        if (!perCpu && sizeof(TValue) != vs)
            throw new ArgumentException($"map {Name}: value type {typeof(TValue).Name} is {sizeof(TValue)} bytes, the kernel map's value is {vs}");
    }

    public void Update<TKey, TValue>(in TKey key, in TValue value, MapUpdate flags = MapUpdate.Any)
        where TKey : unmanaged where TValue : unmanaged
    {
        CheckSizes<TKey, TValue>();
        fixed (TKey* k = &key)
        fixed (TValue* v = &value)
        {
            int r;
            using (var h = Handle.Acquire()) r = LibBpf.MapUpdate(h.Fd, k, v, (ulong)flags);
            BpfException.Check(r, $"update map {Name}");
        }
    }

    /// <summary>
    /// Writes many entries with one BPF_MAP_UPDATE_BATCH. For maps of maps this matters: the kernel waits for an RCU
    /// grace period (~10 ms) after every update syscall so no program still runs with the old inner map; a batch
    /// waits once. Not atomic as a whole: on failure, the entries before the failing one are written (the exception
    /// says how many).
    /// </summary>
    public void UpdateBatch<TKey, TValue>(ReadOnlySpan<TKey> keys, ReadOnlySpan<TValue> values)
        where TKey : unmanaged where TValue : unmanaged
    {
        CheckSizes<TKey, TValue>();
        if (keys.Length != values.Length)
            throw new ArgumentException($"map {Name}: {keys.Length} keys but {values.Length} values");
        if (keys.IsEmpty) return;
        fixed (TKey* k = keys)
        fixed (TValue* v = values)
        {
            uint count = (uint)keys.Length;
            int r;
            using (var h = Handle.Acquire()) r = LibBpf.MapUpdateBatch(h.Fd, k, v, &count, null);
            BpfException.Check(r, $"batch update of map {Name} ({count} of {keys.Length} entries written)");
        }
    }

    public bool TryLookup<TKey, TValue>(in TKey key, out TValue value)
        where TKey : unmanaged where TValue : unmanaged
    {
        CheckSizes<TKey, TValue>();
        TValue v = default;
        fixed (TKey* k = &key)
        {
            int r;
            using (var h = Handle.Acquire()) r = LibBpf.MapLookup(h.Fd, k, &v);
            value = v;
            if (r == -2 /* ENOENT */) return false;
            BpfException.Check(r, $"lookup in map {Name}");
            return true;
        }
    }

    /// <summary>Per-CPU maps: one value per possible CPU.</summary>
    public TValue[] LookupPerCpu<TKey, TValue>(in TKey key) where TKey : unmanaged where TValue : unmanaged
    {
        CheckSizes<TKey, TValue>(perCpu: true);
        int cpus = BpfException.Check(LibBpf.NumPossibleCpus(), "count possible CPUs");
        int stride = (sizeof(TValue) + 7) & ~7; // the kernel rounds each CPU's value up to 8 bytes
        var buf = new byte[stride * cpus];
        fixed (TKey* k = &key)
        fixed (byte* b = buf)
        {
            int r;
            using (var h = Handle.Acquire()) r = LibBpf.MapLookup(h.Fd, k, b);
            BpfException.Check(r, $"lookup in per-CPU map {Name}");
            var result = new TValue[cpus];
            for (int i = 0; i < cpus; i++)
                result[i] = Unsafe.ReadUnaligned<TValue>(b + i * stride);
            return result;
        }
    }

    /// <summary>Deletes a key; false if it was not there.</summary>
    public bool Delete<TKey>(in TKey key) where TKey : unmanaged
    {
        if (sizeof(TKey) != KeySize)
            throw new ArgumentException($"map {Name}: key type {typeof(TKey).Name} is {sizeof(TKey)} bytes, the kernel map's key is {KeySize}");
        fixed (TKey* k = &key)
        {
            int r;
            using (var h = Handle.Acquire()) r = LibBpf.MapDelete(h.Fd, k);
            if (r == -2) return false;
            BpfException.Check(r, $"delete from map {Name}");
            return true;
        }
    }

    /// <summary>All keys, read with BPF_MAP_GET_NEXT_KEY (a snapshot that may miss concurrent changes).</summary>
    public List<TKey> Keys<TKey>() where TKey : unmanaged
    {
        if (sizeof(TKey) != KeySize)
            throw new ArgumentException($"map {Name}: key type {typeof(TKey).Name} is {sizeof(TKey)} bytes, the kernel map's key is {KeySize}");
        var keys = new List<TKey>();
        TKey cur = default, next = default;
        bool first = true;
        while (true)
        {
            int r;
            using (var h = Handle.Acquire())
                r = first ? LibBpf.MapGetNextKey(h.Fd, null, &next) : LibBpf.MapGetNextKey(h.Fd, &cur, &next);
            if (r == -2) break; // ENOENT: end
            BpfException.Check(r, $"iterate map {Name}");
            keys.Add(next);
            cur = next;
            first = false;
        }
        return keys;
    }

    /// <summary>Number of entries, whatever the key type (for fill levels).</summary>
    public int Count()
    {
        var cur = stackalloc byte[(int)KeySize];
        var next = stackalloc byte[(int)KeySize];
        int n = 0;
        bool first = true;
        using var h = Handle.Acquire();
        while (true)
        {
            int r = LibBpf.MapGetNextKey(h.Fd, first ? null : cur, next);
            if (r == -2) break;
            BpfException.Check(r, $"iterate map {Name}");
            n++;
            Buffer.MemoryCopy(next, cur, KeySize, KeySize);
            first = false;
        }
        return n;
    }

    public void Dispose()
    {
        if (_owner is null) _fd?.Dispose();
    }
}

/// <summary>Attach points of programs on sockmaps/sockhashes (enum bpf_attach_type).</summary>
public enum BpfMapAttachType
{
    SkMsgVerdict = 7,
}
