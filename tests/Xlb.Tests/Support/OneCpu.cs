using System.Runtime.InteropServices;

namespace Xlb.Tests.Support;

/// <summary>Keeps the calling thread on CPU 0: for what the program counts per CPU (round-robin cursors, the new-flow cap).</summary>
public static partial class OneCpu
{
    public static void Pin()
    {
        var mask = 1UL;
        Assert.Equal(0, SchedSetAffinity(0, sizeof(ulong), ref mask));
    }

    [LibraryImport("libc", EntryPoint = "sched_setaffinity")]
    private static partial int SchedSetAffinity(int pid, nint size, ref ulong mask);
}
