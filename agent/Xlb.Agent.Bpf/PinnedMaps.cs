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
