using Xlb.Agent.Bpf.Interop;

namespace Xlb.Agent.Bpf;

/// <summary>The outcome of one BPF_PROG_TEST_RUN: the program's return code and the packet it left.</summary>
public sealed record TestRunResult(uint Verdict, byte[] Packet, uint DurationNs);

public static unsafe class TestRun
{
    /// <summary>
    /// Runs an XDP program on <paramref name="packet"/> once (repeat = 1: with more, the kernel
    /// re-runs on the packet the program left, not on the original). Runs in the calling thread's
    /// network namespace, which is where the program's FIB lookups happen.
    /// </summary>
    public static TestRunResult Xdp(int progFd, ReadOnlySpan<byte> packet) => Xdp(progFd, packet, 1);

    /// <summary>
    /// Runs <paramref name="repeat"/> times; <see cref="TestRunResult.DurationNs"/> is the kernel's
    /// mean per run. Each run sees the packet the previous one left (for timing, restore it first).
    /// </summary>
    public static TestRunResult Xdp(int progFd, ReadOnlySpan<byte> packet, int repeat) => Xdp(progFd, packet, repeat, 0);

    /// <summary>
    /// As if the packet arrived on interface <paramref name="ingressIfindex"/> (of the calling
    /// thread's namespace, queue 0); 0 for the kernel's default, the loopback device.
    /// </summary>
    public static TestRunResult Xdp(int progFd, ReadOnlySpan<byte> packet, int repeat, int ingressIfindex)
    {
        var output = new byte[packet.Length + 256];
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
        var ctx = stackalloc uint[6];
        ctx[1] = (uint)packet.Length;
        ctx[3] = (uint)ingressIfindex;
        fixed (byte* inp = packet)
        fixed (byte* outp = output)
        {
            var opts = new BpfTestRunOpts
            {
                sz = (nuint)sizeof(BpfTestRunOpts),
                data_in = inp,
                data_size_in = (uint)packet.Length,
                data_out = outp,
                data_size_out = (uint)output.Length,
                repeat = repeat,
                ctx_in = ingressIfindex == 0 ? null : ctx,
                ctx_size_in = ingressIfindex == 0 ? 0u : 6 * sizeof(uint),
            };
            var rc = Libbpf.bpf_prog_test_run_opts(progFd, &opts);
            if (rc < 0)
            {
                throw new BpfException("bpf_prog_test_run_opts", -rc, $"program fd {progFd}, {packet.Length}-byte packet");
            }
            return new TestRunResult(opts.retval, output[..(int)opts.data_size_out], opts.duration);
        }
    }
}
