using System.Runtime.InteropServices;

namespace Xlb.Agent.Bpf.Interop;

// Option structs of libbpf 1.1, byte for byte (x86_64): each carries its own size in sz.

[StructLayout(LayoutKind.Explicit, Size = 80)]
internal unsafe struct BpfObjectOpenOpts
{
    [FieldOffset(0)] public nuint sz;
    [FieldOffset(24)] public byte* pin_root_path;
    [FieldOffset(56)] public byte* kernel_log_buf;
    [FieldOffset(64)] public nuint kernel_log_size;
    [FieldOffset(72)] public uint kernel_log_level;
}

[StructLayout(LayoutKind.Explicit, Size = 80)]
internal unsafe struct BpfTestRunOpts
{
    [FieldOffset(0)] public nuint sz;
    [FieldOffset(8)] public void* data_in;
    [FieldOffset(16)] public void* data_out;
    [FieldOffset(24)] public uint data_size_in;
    [FieldOffset(28)] public uint data_size_out;
    [FieldOffset(32)] public void* ctx_in;
    [FieldOffset(40)] public void* ctx_out;
    [FieldOffset(48)] public uint ctx_size_in;
    [FieldOffset(52)] public uint ctx_size_out;
    [FieldOffset(56)] public uint retval;
    [FieldOffset(60)] public int repeat;
    [FieldOffset(64)] public uint duration;
    [FieldOffset(68)] public uint flags;
    [FieldOffset(72)] public uint cpu;
    [FieldOffset(76)] public uint batch_size;
}

[StructLayout(LayoutKind.Explicit, Size = 16)]
internal struct BpfXdpAttachOpts
{
    [FieldOffset(0)] public nuint sz;
    [FieldOffset(8)] public int old_prog_fd;
}

/// <summary>struct bpf_map_batch_opts.</summary>
[StructLayout(LayoutKind.Explicit, Size = 24)]
internal struct BpfMapBatchOpts
{
    [FieldOffset(0)] public ulong Sz;
    [FieldOffset(8)] public ulong ElemFlags;
    [FieldOffset(16)] public ulong Flags;
}

/// <summary>The head of struct bpf_map_info (uapi), as far as the agent reads it.</summary>
[StructLayout(LayoutKind.Explicit, Size = 88)]
internal struct BpfMapInfo
{
    [FieldOffset(0)] public uint Type;
    [FieldOffset(4)] public uint Id;
    [FieldOffset(8)] public uint KeySize;
    [FieldOffset(12)] public uint ValueSize;
    [FieldOffset(16)] public uint MaxEntries;
}
