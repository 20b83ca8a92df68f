using Xlb.Agent.Bpf.Interop;

namespace Xlb.Agent.Bpf;

/// <summary>
/// Maps pinned in a bpffs folder, opened by path without loading any program: how a reader
/// such as `xlb status` looks at a running data plane. Each map's key and value sizes are
/// checked against the C# types before it is used.
/// </summary>
public sealed unsafe class PinnedMaps(string pinRoot) : IDisposable
{
    private readonly List<int> _fds = [];

    public string PinRoot { get; } = pinRoot;

    public BpfMap<TKey, TValue> Open<TKey, TValue>(string name)
        where TKey : unmanaged
        where TValue : unmanaged
    {
        var (fd, info) = OpenInfo(name);
        BpfMap<TKey, TValue>.RequireLayout($"pinned map {Path.Combine(PinRoot, name)}", info.KeySize, info.ValueSize, "The agent that pinned it is of another build.");
        return new BpfMap<TKey, TValue>(fd, name, this);
    }

    /// <summary>
    /// How many keys a pinned map holds, whatever its key and value layout (a map of another
    /// build). A map changed meanwhile may be counted a little off; at most twice its capacity.
    /// </summary>
    public long CountKeys(string name)
    {
        var (fd, info) = OpenInfo(name);
        var keys = new byte[Math.Max(1, info.KeySize) * 2];
        long count = 0;
        fixed (byte* k = keys)
        {
            byte* cur = k;
            byte* next = k + Math.Max(1, info.KeySize);
            var rc = Libbpf.bpf_map_get_next_key(fd, null, next);
            while (rc == 0 && count < 2L * info.MaxEntries)
            {
                count++;
                var last = next;
                next = cur;
                cur = last;
                rc = Libbpf.bpf_map_get_next_key(fd, cur, next);
            }
            if (rc != 0 && rc != -Errnos.ENOENT)
            {
                throw new BpfException("bpf_map_get_next_key", -rc, Path.Combine(PinRoot, name));
            }
        }
        return count;
    }

    /// <summary>How many entries a pinned map was created with.</summary>
    public uint MaxEntries(string name) => OpenInfo(name).Info.MaxEntries;

    private (int Fd, BpfMapInfo Info) OpenInfo(string name)
    {
        var path = Path.Combine(PinRoot, name);
        var fd = Libbpf.bpf_obj_get(path);
        if (fd < 0)
        {
            throw new BpfException("bpf_obj_get", -fd, path);
        }
        _fds.Add(fd);
        var info = default(BpfMapInfo);
        var len = (uint)sizeof(BpfMapInfo);
        var rc = Libbpf.bpf_obj_get_info_by_fd(fd, &info, &len);
        if (rc < 0)
        {
            throw new BpfException("bpf_obj_get_info_by_fd", -rc, path);
        }
        return (fd, info);
    }

    public void Dispose()
    {
        foreach (var fd in _fds)
        {
            LibC.close(fd);
        }
        _fds.Clear();
    }
}
