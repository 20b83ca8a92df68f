namespace Xlb.Agent.Bpf.Interop;

/// <summary>
/// libbpf (>= 1.0) entry points. int-returning calls return -errno; pointer-returning calls
/// return NULL and set errno, read right after the call through SetLastError.
/// </summary>
internal static unsafe partial class Libbpf
{
    /// <summary>The runtime library: the unversioned libbpf.so exists only with libbpf-dev.</summary>
    internal const string Library = "libbpf.so.1";
}
