using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Xlb.Cli.Testbed;

/// <summary>Network namespaces through iproute2, and code run inside one.</summary>
public static partial class Netns
{
    private const int CloneNewNet = 0x40000000;

    /// <summary>Runs a command; throws with its stderr when it fails.</summary>
    public static string Sh(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {file}");
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0)
        {
            throw new InvalidOperationException($"`{file} {string.Join(' ', args)}` failed ({p.ExitCode}): {stderr.Trim()}");
        }
        return stdout.Result;
    }

    /// <summary>
    /// Starts a long-running process whose standard output and error go to <paramref name="log"/>
    /// line by line, tagged <c>[tag]</c> (the log is locked per line: several processes share it).
    /// </summary>
    public static Process Start(string file, IEnumerable<string> args, TextWriter log, string tag, IReadOnlyDictionary<string, string>? environment = null)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }
        foreach (var (name, value) in environment ?? new Dictionary<string, string>())
        {
            psi.Environment[name] = value;
        }
        var p = new Process { StartInfo = psi };
        void Echo(string? line)
        {
            if (line is not null)
            {
                lock (log)
                {
                    log.WriteLine($"  [{tag}] {line}");
                }
            }
        }
        p.OutputDataReceived += (_, e) => Echo(e.Data);
        p.ErrorDataReceived += (_, e) => Echo(e.Data);
        p.Start();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return p;
    }

    /// <summary>A topology after <paramref name="build"/>; one that fails half-built is disposed (its namespaces deleted) before the error goes on.</summary>
    public static T Built<T>(T topology, Action<T> build) where T : IDisposable
    {
        try
        {
            build(topology);
            return topology;
        }
        catch
        {
            topology.Dispose();
            throw;
        }
    }

    /// <summary>Runs `ip ARGS` inside namespace <paramref name="ns"/>.</summary>
    public static string Ip(string ns, params string[] args) => Sh("ip", ["-n", ns, .. args]);

    /// <summary>Runs a command inside namespace <paramref name="ns"/>.</summary>
    public static string Exec(string ns, string file, params string[] args) => Sh("ip", ["netns", "exec", ns, file, .. args]);

    public static void Add(string ns) => Sh("ip", "netns", "add", ns);

    /// <summary>Deletes the namespaces, last first, and empties the list; one that cannot be deleted does not stop the others.</summary>
    public static void DeleteAll(List<string> created)
    {
        foreach (var ns in Enumerable.Reverse(created))
        {
            try
            {
                Delete(ns);
            }
            catch (InvalidOperationException)
            {
                // Best effort: keep deleting the others.
            }
        }
        created.Clear();
    }

    /// <summary>Deletes a namespace by name (its veth ends go with it); false when it was not there.</summary>
    public static bool Delete(string ns)
    {
        if (!File.Exists($"/var/run/netns/{ns}"))
        {
            return false;
        }
        Sh("ip", "netns", "delete", ns);
        return true;
    }

    /// <summary>
    /// Runs <paramref name="create"/> on a fresh thread that has entered <paramref name="ns"/>.
    /// Sockets belong to the namespace of the thread that creates them, and threads inherit their
    /// creator's namespace, so use this only to create and bind sockets: do the I/O on them from
    /// ordinary threads, and start no thread or async operation inside it.
    /// </summary>
    public static T Run<T>(string ns, Func<T> create)
    {
        T result = default!;
        Exception? error = null;
        var thread = new Thread(() =>
        {
            try
            {
                using var fd = File.OpenHandle($"/var/run/netns/{ns}");
                if (setns(fd.DangerousGetHandle().ToInt32(), CloneNewNet) != 0)
                {
                    throw new InvalidOperationException($"setns({ns}) failed: errno {Marshal.GetLastPInvokeError()}");
                }
                result = create();
            }
            catch (Exception e)
            {
                error = e;
            }
        });
        thread.Start();
        thread.Join();
        if (error is not null)
        {
            throw new InvalidOperationException($"in netns {ns}: {error.Message}", error);
        }
        return result;
    }

    /// <summary>A TCP listener bound to <paramref name="at"/> inside namespace <paramref name="ns"/> (accept on it from anywhere).</summary>
    public static System.Net.Sockets.Socket Listen(string ns, System.Net.IPEndPoint at, int backlog) => Run(ns, () =>
    {
        var s = new System.Net.Sockets.Socket(at.AddressFamily, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
        s.SetSocketOption(System.Net.Sockets.SocketOptionLevel.Socket, System.Net.Sockets.SocketOptionName.ReuseAddress, true);
        s.Bind(at);
        s.Listen(backlog);
        return s;
    });

    [LibraryImport("libc", EntryPoint = "setns", SetLastError = true)]
    private static partial int setns(int fd, int nstype);

    public static bool IsRoot => geteuid() == 0;

    [LibraryImport("libc", EntryPoint = "geteuid")]
    private static partial uint geteuid();

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int kill(int pid, int sig);

    /// <summary>Sends SIGTERM, as an orchestrator does, without waiting.</summary>
    public static void Terminate(Process p) => _ = kill(p.Id, 15);

    /// <summary>Asks a process to stop (SIGTERM), then kills it if it has not stopped in time.</summary>
    public static void Stop(Process p, TimeSpan grace)
    {
        if (p.HasExited)
        {
            return;
        }
        _ = kill(p.Id, 15);
        if (!p.WaitForExit(grace))
        {
            p.Kill(entireProcessTree: true);
            p.WaitForExit();
        }
    }
}
