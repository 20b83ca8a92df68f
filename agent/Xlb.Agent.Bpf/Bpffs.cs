namespace Xlb.Agent.Bpf;

/// <summary>Where pinned objects live: a mounted bpf filesystem.</summary>
public static class Bpffs
{
    public const string Default = "/sys/fs/bpf";

    /// <summary>True when <paramref name="dir"/> is on a mounted bpf filesystem (as this process sees its mounts).</summary>
    public static bool IsMounted(string dir)
    {
        var full = Path.GetFullPath(dir).TrimEnd('/');
        // /proc/self/mounts: "source mountpoint fstype options 0 0"; later lines shadow earlier ones.
        string? fstype = null;
        var best = -1;
        foreach (var line in File.ReadLines("/proc/self/mounts"))
        {
            var f = line.Split(' ');
            if (f.Length < 3)
            {
                continue;
            }
            var mp = f[1].Replace("\\040", " ", StringComparison.Ordinal).TrimEnd('/');
            if ((full == mp || full.StartsWith(mp + "/", StringComparison.Ordinal) || mp.Length == 0) && mp.Length >= best)
            {
                best = mp.Length;
                fstype = f[2];
            }
        }
        return fstype == "bpf";
    }

    /// <summary>
    /// Makes sure <paramref name="dir"/> is on a bpf filesystem: the default location is mounted
    /// when it is not (as a node's /sys/fs/bpf often is not); any other folder must already be one.
    /// </summary>
    public static void Ensure(string dir)
    {
        if (IsMounted(dir))
        {
            return;
        }
        if (Path.GetFullPath(dir).TrimEnd('/') != Default)
        {
            throw new BpfException($"{dir} is not on a bpf filesystem: mount one (mount -t bpf bpf {dir}) or use {Default}");
        }
        if (Interop.LibC.mount("bpf", Default, "bpf", 0, 0) != 0)
        {
            throw new BpfException("mount", System.Runtime.InteropServices.Marshal.GetLastPInvokeError(), $"bpf filesystem on {Default}");
        }
    }

    /// <summary>The pin folder of one XDP object instance, versioned by ABI so an incompatible build never adopts old maps.</summary>
    public static string PinRoot(string bpffs, string instance) =>
        Path.Combine(bpffs, "xlb", instance, $"abi-{Xlb.DataPlane.XlbAbi.Version}");

    /// <summary>
    /// The pin folders beside <paramref name="pinRoot"/> of other ABI versions, with their
    /// versions: data planes of the same instance pinned by another build (the one before an
    /// upgrade, or after a downgrade), which this build cannot adopt.
    /// </summary>
    public static IReadOnlyList<(string Dir, int Abi)> OtherAbis(string pinRoot)
    {
        var instanceDir = Path.GetDirectoryName(Path.GetFullPath(pinRoot).TrimEnd('/'))!;
        if (!Directory.Exists(instanceDir))
        {
            return [];
        }
        var mine = Path.GetFileName(Path.GetFullPath(pinRoot).TrimEnd('/'));
        var others = new List<(string Dir, int Abi)>();
        foreach (var dir in Directory.EnumerateDirectories(instanceDir, "abi-*"))
        {
            var name = Path.GetFileName(dir);
            if (name != mine && int.TryParse(name.AsSpan(4), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var abi))
            {
                others.Add((dir, abi));
            }
        }
        return [.. others.OrderBy(o => Path.GetFileName(o.Dir), StringComparer.Ordinal)];
    }
}
