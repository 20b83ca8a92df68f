using System.Runtime.InteropServices;

namespace Xlb.Cli;

/// <summary>Keeps signal registrations alive for the life of the process (a collected one stops working).</summary>
internal static class Signals
{
    private static readonly List<PosixSignalRegistration> Registrations = [];

    public static void Keep(PosixSignalRegistration registration)
    {
        lock (Registrations)
        {
            Registrations.Add(registration);
        }
    }
}
