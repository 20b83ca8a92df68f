using System.Diagnostics;
using Xlb.Cli.Testbed;

namespace Xlb.Tests.Unit;

/// <summary>`xlb agent` refuses arguments it cannot work with before it touches anything.</summary>
public sealed class AgentArgumentsTests
{
    private static async Task<(int Code, string Stderr)> RunAgentAsync(params string[] args)
    {
        var self = StandaloneStack.Self();
        var psi = new ProcessStartInfo(self[0]) { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in (string[])[.. self[1..], "agent", "--node-config", "/nonexistent/lb-1.yaml", "--interface", "lo", .. args])
        {
            psi.ArgumentList.Add(a);
        }
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        _ = p.StandardOutput.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await p.WaitForExitAsync(timeout.Token);
        return (p.ExitCode, await stderr);
    }

    [Fact]
    public async Task A_flow_sync_key_shorter_than_16_bytes_is_refused_and_its_trailing_newline_does_not_count()
    {
        var dir = Directory.CreateTempSubdirectory("xlb-key-").FullName;
        try
        {
            var key = Path.Combine(dir, "key");
            // 15 bytes and a newline: too short.
            await File.WriteAllTextAsync(key, "fifteen bytes!!\n", TestContext.Current.CancellationToken);
            var (code, stderr) = await RunAgentAsync("--flow-sync-key-file", key);
            Assert.Equal(2, code);
            Assert.Contains("the key has 15 bytes; at least 16", stderr, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
