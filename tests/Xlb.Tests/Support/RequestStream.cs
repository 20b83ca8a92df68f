using System.Net;
using Xlb.Cli.Testbed;

namespace Xlb.Tests.Support;

/// <summary>
/// A steady stream of new connections, one HTTP request each, from a namespace to a VIP: it runs
/// until <c>stop</c> is cancelled or <c>maxRequests</c> have run, and counts what failed.
/// </summary>
public static class RequestStream
{
    public static Task<(int Ok, int Failed, List<string> Errors)> Start(string ns, IPEndPoint vip, int maxRequests, CancellationToken stop) =>
        Task.Run(async () =>
        {
            var (ok, failed, errors) = (0, 0, new List<string>());
            for (var i = 0; i < maxRequests && !stop.IsCancellationRequested; i++)
            {
                try
                {
                    await HttpProbe.GetAsync(ns, vip, TimeSpan.FromSeconds(5), stop);
                    ok++;
                }
                catch (OperationCanceledException) when (stop.IsCancellationRequested)
                {
                    break;
                }
                catch (Exception e) when (e is System.Net.Sockets.SocketException or OperationCanceledException or InvalidDataException)
                {
                    failed++;
                    errors.Add(e.Message);
                }
            }
            return (ok, failed, errors);
        }, CancellationToken.None);
}
