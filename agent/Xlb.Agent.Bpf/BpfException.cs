namespace Xlb.Agent.Bpf;

/// <summary>A failed libbpf or bpf() call: which operation, which errno, on what.</summary>
public sealed class BpfException : Exception
{
    public string Operation { get; }
    public int Errno { get; }
    public string ErrnoName => Errnos.Name(Errno);

    public BpfException(string operation, int errno, string context, string? detail = null)
        : base($"{operation} failed: {Errnos.Name(errno)} ({Errnos.Describe(errno)}) — {context}{(detail is null ? "" : "\n" + detail)}")
    {
        Operation = operation;
        Errno = errno;
    }

    public BpfException()
        : this("bpf", 0, "")
    {
    }

    public BpfException(string message)
        : base(message)
    {
        Operation = "bpf";
    }

    public BpfException(string message, Exception inner)
        : base(message, inner)
    {
        Operation = "bpf";
    }
}

internal static class Errnos
{
    public const int ENOENT = 2;
    public const int EINTR = 4;
    public const int EEXIST = 17;
    public const int ENOSPC = 28;

    private static readonly Dictionary<int, (string Name, string Text)> Known = new()
    {
        [1] = ("EPERM", "operation not permitted: run as root or with CAP_BPF and CAP_NET_ADMIN"),
        [2] = ("ENOENT", "no such entry"),
        [7] = ("E2BIG", "argument list too long: a map is full or a value too large"),
        [12] = ("ENOMEM", "out of memory"),
        [13] = ("EACCES", "permission denied: the verifier rejected the program"),
        [16] = ("EBUSY", "device or resource busy: another XDP program is attached"),
        [17] = ("EEXIST", "entry exists"),
        [19] = ("ENODEV", "no such device"),
        [22] = ("EINVAL", "invalid argument"),
        [28] = ("ENOSPC", "no space left"),
        [95] = ("EOPNOTSUPP", "operation not supported: the driver has no native XDP"),
        [524] = ("ENOTSUPP", "not supported by the kernel"),
    };

    public static string Name(int errno) => Known.TryGetValue(errno, out var e) ? e.Name : $"errno {errno}";

    public static string Describe(int errno) => Known.TryGetValue(errno, out var e) ? e.Text : "see errno(3)";
}
