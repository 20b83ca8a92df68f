using System.Net;
using System.Net.Sockets;
using System.Text;
using Xlb.Cli.Testbed;
using Xlb.Tests.Support;

namespace Xlb.Tests.E2E;

/// <summary>
/// LeastConn with real TCP connections that stay open: manifests → xlb operator → xlb agent → XDP
/// in the LB namespace. Each new connection goes to the backend with fewer open connections, and
/// connections that close free their backend's place.
/// </summary>
public sealed class LeastConnEndToEndTests(ITestOutputHelper output)
{
    private const string Vip = "10.250.0.22";

    private const string Mapping = """
        apiVersion: xlb.io/v1alpha1
        kind: PortMapping
        metadata:
          name: web-lc
          namespace: demo
        spec:
          shardRef: edge
          vip: 10.250.0.22
          ports:
            - name: http
              port: 80
              targetPort: 8080
          scheduling:
            algorithm: LeastConn
          backend:
            endpoints:
              - address: 10.201.1.2
              - address: 10.201.2.2
        """;

    /// <summary>A connection from the client namespace that asks once which backend serves it, and stays open.</summary>
    private sealed class Held : IDisposable
    {
        private readonly Socket _socket;

        private Held(Socket socket, string backend) => (_socket, Backend) = (socket, backend);

        public string Backend { get; }

        public static async Task<Held> OpenAsync(string ns, IPEndPoint target, CancellationToken ct)
        {
            var socket = Netns.Run(ns, () => new Socket(target.AddressFamily, SocketType.Stream, ProtocolType.Tcp));
            try
            {
                using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
                timeout.CancelAfter(TimeSpan.FromSeconds(5));
                await socket.ConnectAsync(target, timeout.Token);
                await socket.SendAsync(Encoding.ASCII.GetBytes($"GET / HTTP/1.1\r\nHost: {target}\r\n\r\n"), SocketFlags.None, timeout.Token);
                var text = new StringBuilder();
                var buf = new byte[1024];
                // The backend names itself in a one-line body, and keeps the connection open.
                while (!text.ToString().EndsWith('\n') || !text.ToString().Contains("\r\n\r\n", StringComparison.Ordinal))
                {
                    var n = await socket.ReceiveAsync(buf, SocketFlags.None, timeout.Token);
                    if (n == 0)
                    {
                        throw new IOException($"closed after {text}");
                    }
                    text.Append(Encoding.ASCII.GetString(buf, 0, n));
                }
                var all = text.ToString();
                return new Held(socket, all[(all.IndexOf("\r\n\r\n", StringComparison.Ordinal) + 4)..].Trim());
            }
            catch
            {
                socket.Dispose();
                throw;
            }
        }

        public void Dispose()
        {
            try
            {
                _socket.Shutdown(SocketShutdown.Both);
            }
            catch (SocketException)
            {
            }
            _socket.Dispose();
        }
    }

    [Fact]
    public async Task Each_new_connection_goes_to_the_backend_with_fewer_open_connections()
    {
        Privileged.Require();
        var ct = TestContext.Current.CancellationToken;
        await using var bed = Testbed.Create("lc", backends: 2);
        var manifests = Examples.CopyToTemp("demo");
        var held = new List<Held>();
        try
        {
            File.WriteAllText(Path.Combine(manifests, "30-web.yaml"), Mapping);
            using var stack = StandaloneStack.Start(bed.Topology, manifests, "lb-1", bed.Log, []);
            await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), ct);
            var target = new IPEndPoint(IPAddress.Parse(Vip), 80);
            async Task<string> Open()
            {
                var h = await Held.OpenAsync(bed.Topology.Client, target, ct);
                held.Add(h);
                return h.Backend;
            }

            // 0-0: either; 1-0: the other; 1-1: either; 2-1: the other.
            var first = await Open();
            var second = await Open();
            Assert.NotEqual(first, second);
            var third = await Open();
            var fourth = await Open();
            Assert.NotEqual(third, fourth);
            Assert.Equal(["backend-1", "backend-2"], new[] { first, second }.Order(StringComparer.Ordinal));

            // Both connections to backend-1 close: the next two go there, though it was even before.
            foreach (var h in held.Where(h => h.Backend == "backend-1").ToList())
            {
                h.Dispose();
                held.Remove(h);
            }
            // The FINs pass the LB on their way out; give them a moment.
            await Task.Delay(TimeSpan.FromMilliseconds(300), ct);
            Assert.Equal(["backend-1", "backend-1"], [await Open(), await Open()]);
            // 2-2 again: the next pair splits.
            Assert.NotEqual(await Open(), await Open());
        }
        finally
        {
            foreach (var h in held)
            {
                h.Dispose();
            }
            Directory.Delete(manifests, recursive: true);
            output.WriteLine(bed.Log.ToString());
        }
    }
}
