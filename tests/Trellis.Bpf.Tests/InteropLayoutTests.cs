using System.Runtime.InteropServices;
using Trellis.Bpf.Interop;

namespace Trellis.Bpf.Tests;

/// <summary>Needs gcc and libbpf-dev. Every libbpf option struct mirrored in src/Trellis.Bpf/Interop/Structs.cs
/// is compared with offsetof/sizeof from the installed headers, so a libbpf upgrade that moves a field fails here.</summary>
public sealed class InteropLayoutTests
{
    private static readonly (Type Mirror, string CStruct, (string Field, string CField)[] Fields)[] Mirrors =
    [
        (typeof(BpfObjectOpenOpts), "bpf_object_open_opts",
        [
            ("Sz", "sz"), ("ObjectName", "object_name"), ("RelaxedMaps", "relaxed_maps"), ("PinRootPath", "pin_root_path"),
            ("Kconfig", "kconfig"), ("BtfCustomPath", "btf_custom_path"), ("KernelLogBuf", "kernel_log_buf"),
            ("KernelLogSize", "kernel_log_size"), ("KernelLogLevel", "kernel_log_level"),
        ]),
        (typeof(BpfTcHook), "bpf_tc_hook",
            [("Sz", "sz"), ("Ifindex", "ifindex"), ("AttachPoint", "attach_point"), ("Parent", "parent")]),
        (typeof(BpfTcOpts), "bpf_tc_opts",
            [("Sz", "sz"), ("ProgFd", "prog_fd"), ("Flags", "flags"), ("ProgId", "prog_id"), ("Handle", "handle"), ("Priority", "priority")]),
        (typeof(BpfTestRunOpts), "bpf_test_run_opts",
        [
            ("Sz", "sz"), ("DataIn", "data_in"), ("DataOut", "data_out"), ("DataSizeIn", "data_size_in"),
            ("DataSizeOut", "data_size_out"), ("CtxIn", "ctx_in"), ("CtxOut", "ctx_out"), ("CtxSizeIn", "ctx_size_in"),
            ("CtxSizeOut", "ctx_size_out"), ("Retval", "retval"), ("Repeat", "repeat"), ("Duration", "duration"),
            ("Flags", "flags"), ("Cpu", "cpu"), ("BatchSize", "batch_size"),
        ]),
        (typeof(BpfMapCreateOpts), "bpf_map_create_opts",
            [("Sz", "sz"), ("BtfFd", "btf_fd"), ("InnerMapFd", "inner_map_fd"), ("MapFlags", "map_flags")]),
    ];

    // Kernel uapi structs we only read a prefix of: offsets must match, size may be smaller than the kernel's.
    private static readonly (Type Mirror, string CStruct, (string Field, string CField)[] Fields)[] Prefixes =
    [
        (typeof(BpfMapInfo), "bpf_map_info",
        [
            ("Type", "type"), ("Id", "id"), ("KeySize", "key_size"), ("ValueSize", "value_size"), ("MaxEntries", "max_entries"),
            ("MapFlags", "map_flags"), ("Name", "name"), ("Ifindex", "ifindex"), ("NetnsDev", "netns_dev"),
            ("NetnsIno", "netns_ino"), ("BtfId", "btf_id"), ("BtfKeyTypeId", "btf_key_type_id"),
            ("BtfValueTypeId", "btf_value_type_id"), ("MapExtra", "map_extra"),
        ]),
        (typeof(BpfProgInfo), "bpf_prog_info",
        [
            ("Type", "type"), ("Id", "id"), ("Tag", "tag"), ("JitedProgLen", "jited_prog_len"), ("XlatedProgLen", "xlated_prog_len"),
            ("LoadTime", "load_time"), ("NrMapIds", "nr_map_ids"), ("MapIds", "map_ids"), ("Name", "name"), ("Ifindex", "ifindex"),
            ("NetnsDev", "netns_dev"), ("BtfId", "btf_id"), ("NrLineInfo", "nr_line_info"), ("ProgTags", "prog_tags"),
            ("RunTimeNs", "run_time_ns"), ("RunCnt", "run_cnt"),
        ]),
    ];

    private static readonly Lazy<Dictionary<string, long>> Native = new(CompileProbe);

    /// <summary>Builds and runs a C program printing "struct[.field] value" lines for every mirror.</summary>
    private static Dictionary<string, long> CompileProbe()
    {
        var dir = Directory.CreateTempSubdirectory("trellis-interop-probe-");
        try
        {
            var src = new System.Text.StringBuilder("#include <stdio.h>\n#include <stddef.h>\n#include <bpf/libbpf.h>\n#include <bpf/bpf.h>\nint main(void) {\n");
            foreach (var (_, cs, fields) in Mirrors.Concat(Prefixes))
            {
                src.Append($"  printf(\"{cs} %zu\\n\", sizeof(struct {cs}));\n");
                foreach (var (_, cf) in fields)
                    src.Append($"  printf(\"{cs}.{cf} %zu\\n\", offsetof(struct {cs}, {cf}));\n");
            }
            src.Append("  return 0;\n}\n");
            var c = Path.Combine(dir.FullName, "probe.c");
            var exe = Path.Combine(dir.FullName, "probe");
            File.WriteAllText(c, src.ToString());
            Shell.Check("gcc", "-Wall", "-Werror", c, "-o", exe);
            return Shell.Check(exe).Split('\n', StringSplitOptions.RemoveEmptyEntries)
                .Select(l => l.Split(' '))
                .ToDictionary(p => p[0], p => long.Parse(p[1]));
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    public static TheoryData<string> MirrorNames() => new(Mirrors.Select(m => m.CStruct));
    public static TheoryData<string> PrefixNames() => new(Prefixes.Select(m => m.CStruct));

    [Theory]
    [MemberData(nameof(MirrorNames))]
    public void Libbpf_option_struct_mirror_matches_the_C_header(string cStruct)
    {
        var (mirror, _, fields) = Mirrors.Single(m => m.CStruct == cStruct);
        Assert.Equal(Native.Value[cStruct], Marshal.SizeOf(mirror));
        foreach (var (f, cf) in fields)
            Assert.True(Native.Value[$"{cStruct}.{cf}"] == Marshal.OffsetOf(mirror, f).ToInt64(),
                $"{mirror.Name}.{f} is at {Marshal.OffsetOf(mirror, f)}, {cStruct}.{cf} at {Native.Value[$"{cStruct}.{cf}"]}");
    }

    [Theory]
    [MemberData(nameof(PrefixNames))]
    public void Kernel_info_struct_prefix_matches_the_uapi_header(string cStruct)
    {
        var (mirror, _, fields) = Prefixes.Single(m => m.CStruct == cStruct);
        Assert.True(Marshal.SizeOf(mirror) <= Native.Value[cStruct], $"{mirror.Name} is larger than {cStruct}");
        foreach (var (f, cf) in fields)
            Assert.True(Native.Value[$"{cStruct}.{cf}"] == Marshal.OffsetOf(mirror, f).ToInt64(),
                $"{mirror.Name}.{f} is at {Marshal.OffsetOf(mirror, f)}, {cStruct}.{cf} at {Native.Value[$"{cStruct}.{cf}"]}");
    }

    [Fact]
    public void Every_field_of_each_option_mirror_is_checked()
    {
        foreach (var (mirror, cs, fields) in Mirrors)
        {
            var declared = mirror.GetFields(System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.Instance).Select(f => f.Name).Order();
            Assert.True(declared.SequenceEqual(fields.Select(f => f.Field).Order()), $"{mirror.Name} has fields not mapped to {cs}");
        }
    }
}
