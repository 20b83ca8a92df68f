using System.Runtime.InteropServices;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using Xlb.Agent.Bpf.Interop;

namespace Xlb.Agent.Bpf;

/// <summary>An opened and loaded BPF object file: its programs and maps live as long as it does.</summary>
public sealed class BpfObject : SafeHandle
{
    private BpfObject()
        : base(0, ownsHandle: true)
    {
    }

    public override bool IsInvalid => handle == 0;

    protected override bool ReleaseHandle()
    {
        Libbpf.bpf_object__close(handle);
        return true;
    }

    /// <summary>
    /// Opens and loads <paramref name="path"/>; a verifier rejection carries the verifier's log.
    /// With <paramref name="pinRoot"/>, maps marked for pinning are pinned there by name, and maps
    /// already pinned there are reused (libbpf checks that type, sizes and flags match). Without
    /// it, nothing is pinned: every map is private to this object.
    /// </summary>
    public static unsafe BpfObject Load(string path, string? pinRoot = null) => Load(path, pinRoot, 0);

    /// <summary>The verifier's log of a load with a log level (4 = statistics only).</summary>
    public string VerifierLog { get; private set; } = "";

    /// <summary>As <see cref="Load(string, string?)"/>, asking the verifier for a log at <paramref name="logLevel"/>.</summary>
    public static BpfObject Load(string path, string? pinRoot, uint logLevel) => Load(path, pinRoot, logLevel, null);

    /// <summary>
    /// As <see cref="Load(string, string?, uint)"/>, with the capacity of some maps set before the
    /// load (<paramref name="maxEntries"/>, by map name). A pinned map of another capacity cannot be
    /// reused: the load then fails and names the map.
    /// </summary>
    public static unsafe BpfObject Load(string path, string? pinRoot, uint logLevel, IReadOnlyDictionary<string, uint>? maxEntries)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"BPF object not found: {path}", path);
        }
        const int logSize = 1 << 20;
        var log = (byte*)NativeMemory.AllocZeroed(logSize);
        var root = pinRoot is null ? null : (byte*)Marshal.StringToCoTaskMemUTF8(pinRoot);
        try
        {
            var opts = new BpfObjectOpenOpts
            {
                sz = (nuint)sizeof(BpfObjectOpenOpts),
                pin_root_path = root,
                kernel_log_buf = log,
                kernel_log_size = logSize,
                // 0: libbpf asks the kernel for a log only when a load fails.
                kernel_log_level = logLevel,
            };
            var obj = new BpfObject();
            var h = Libbpf.bpf_object__open_file(path, &opts);
            if (h == 0)
            {
                throw new BpfException("bpf_object__open_file", Marshal.GetLastPInvokeError(), path);
            }
            obj.SetHandle(h);
            if (pinRoot is null)
            {
                for (var map = Libbpf.bpf_object__next_map(h, 0); map != 0; map = Libbpf.bpf_object__next_map(h, map))
                {
                    _ = Libbpf.bpf_map__set_pin_path(map, null);
                }
            }
            foreach (var (name, entries) in maxEntries ?? new Dictionary<string, uint>())
            {
                var map = Libbpf.bpf_object__find_map_by_name(h, name);
                var set = map == 0 ? -Errnos.ENOENT : Libbpf.bpf_map__set_max_entries(map, entries);
                if (set < 0)
                {
                    obj.Dispose();
                    throw new BpfException("bpf_map__set_max_entries", -set, $"map '{name}' of {path}, {entries} entries");
                }
            }
            var rc = Libbpf.bpf_object__load(h);
            if (rc < 0)
            {
                var verifier = Marshal.PtrToStringUTF8((nint)log) ?? "";
                obj.Dispose();
                throw new BpfException("bpf_object__load", -rc, path, verifier.Length == 0 ? null : "verifier log (tail):\n" + Tail(verifier, 4000));
            }
            if (logLevel != 0)
            {
                obj.VerifierLog = Marshal.PtrToStringUTF8((nint)log) ?? "";
            }
            return obj;
        }
        finally
        {
            NativeMemory.Free(log);
            Marshal.FreeCoTaskMem((nint)root);
        }
    }

    private static string Tail(string s, int max) => s.Length <= max ? s : "…" + s[^max..];

    /// <summary>The fd of a program of this object; owned by the object.</summary>
    public int ProgramFd(string name)
    {
        var prog = Libbpf.bpf_object__find_program_by_name(handle, name);
        if (prog == 0)
        {
            throw new BpfException("bpf_object__find_program_by_name", Errnos.ENOENT, $"no program '{name}' in the object");
        }
        return Libbpf.bpf_program__fd(prog);
    }

    /// <summary>The fd of a map without keys and values to type (a ring buffer); owned by this object.</summary>
    public int MapFd(string name)
    {
        var map = Libbpf.bpf_object__find_map_by_name(handle, name);
        if (map == 0)
        {
            throw new BpfException("bpf_object__find_map_by_name", Errnos.ENOENT, $"no map '{name}' in the object");
        }
        return Libbpf.bpf_map__fd(map);
    }

    /// <summary>A typed view of a map; the key and value sizes are checked against the object's BTF-defined map.</summary>
    public BpfMap<TKey, TValue> Map<TKey, TValue>(string name)
        where TKey : unmanaged
        where TValue : unmanaged
    {
        var map = Libbpf.bpf_object__find_map_by_name(handle, name);
        if (map == 0)
        {
            throw new BpfException("bpf_object__find_map_by_name", Errnos.ENOENT, $"no map '{name}' in the object");
        }
        BpfMap<TKey, TValue>.RequireLayout($"map '{name}' of the object", Libbpf.bpf_map__key_size(map), Libbpf.bpf_map__value_size(map),
            "Rebuild the agent and the XDP object from one tree.");
        return new BpfMap<TKey, TValue>(Libbpf.bpf_map__fd(map), name, this);
    }

    /// <summary>An mmap-able array of 64-bit counters, mapped (see <see cref="BpfCounterArray"/>); dispose it.</summary>
    public BpfCounterArray CounterArray(string name)
    {
        var map = Libbpf.bpf_object__find_map_by_name(handle, name);
        if (map == 0)
        {
            throw new BpfException("bpf_object__find_map_by_name", Errnos.ENOENT, $"no map '{name}' in the object");
        }
        BpfMap<uint, long>.RequireLayout($"map '{name}' of the object", Libbpf.bpf_map__key_size(map), Libbpf.bpf_map__value_size(map),
            "Rebuild the agent and the XDP object from one tree.");
        return new BpfCounterArray(Libbpf.bpf_map__fd(map), (int)Libbpf.bpf_map__max_entries(map), name);
    }
}
