using Xlb.Agent.Bpf;
using Xlb.Cli.Testbed;
using Xlb.Tests.Support;

namespace Xlb.Tests.Bpf;

/// <summary>Loading a program the verifier refuses, and attaching where the driver has no native XDP.</summary>
public sealed class LoadAttachTests
{
    /// <summary>Runs <paramref name="body"/> with a fresh temporary directory, deleted after.</summary>
    private static void InTempDir(string prefix, Action<string> body)
    {
        var dir = Directory.CreateTempSubdirectory(prefix).FullName;
        try
        {
            body(dir);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>Compiles a small XDP program of the test's own (with <paramref name="globals"/> before it) into an object file.</summary>
    private static string Compile(string dir, string name, string body, string globals = "")
    {
        var clang = new[] { "/usr/bin/clang", "/usr/bin/clang-14" }.FirstOrDefault(File.Exists);
        if (clang is null)
        {
            Toolchain.Missing("clang is not installed");
        }
        var source = Path.Combine(dir, name + ".c");
        File.WriteAllText(source, $$"""
            #include <linux/bpf.h>
            #include <bpf/bpf_helpers.h>

            {{globals}}

            SEC("xdp")
            int {{name}}(struct xdp_md *ctx)
            {
            {{body}}
            }

            char LICENSE[] SEC("license") = "GPL";
            """);
        var obj = Path.Combine(dir, name + ".o");
        Netns.Sh(clang!, "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c", source, "-o", obj);
        return obj;
    }

    [Fact]
    public void A_program_the_verifier_refuses_fails_to_load_with_the_verifier_log_in_the_error()
    {
        Privileged.Require();
        InTempDir("xlb-load-", dir =>
        {
            // A packet byte read with no bounds check: the verifier refuses it.
            var obj = Compile(dir, "unchecked", """
                    unsigned char *data = (void *)(long)ctx->data;
                    return data[100] == 7 ? XDP_DROP : XDP_PASS;
                """);
            var e = Assert.Throws<BpfException>(() => BpfObject.Load(obj));
            Assert.Contains("verifier log", e.Message, StringComparison.Ordinal);
            Assert.Contains("invalid access to packet", e.Message, StringComparison.Ordinal);
        });
    }

    [Fact]
    public void A_map_whose_key_or_value_size_is_not_its_csharp_structs_is_refused_with_both_sizes_and_the_struct_named()
    {
        Privileged.Require();
        InTempDir("xlb-abi-map-", dir =>
        {
            // The flow table of another build: its value is 8 bytes longer than XlbFlow.
            var obj = Compile(dir, "drift", "    return XDP_PASS;", $$"""
                struct key { unsigned char b[{{System.Runtime.CompilerServices.Unsafe.SizeOf<Xlb.DataPlane.XlbFlowKey>()}}]; };
                struct value { unsigned char b[{{System.Runtime.CompilerServices.Unsafe.SizeOf<Xlb.DataPlane.XlbFlow>() + 8}}]; };
                struct {
                    __uint(type, BPF_MAP_TYPE_HASH);
                    __uint(max_entries, 16);
                    __type(key, struct key);
                    __type(value, struct value);
                } xlb_flows SEC(".maps");
                """);
            using var loaded = BpfObject.Load(obj);
            var e = Assert.Throws<BpfException>(() => loaded.Map<Xlb.DataPlane.XlbFlowKey, Xlb.DataPlane.XlbFlow>("xlb_flows"));
            var (k, v) = (System.Runtime.CompilerServices.Unsafe.SizeOf<Xlb.DataPlane.XlbFlowKey>(), System.Runtime.CompilerServices.Unsafe.SizeOf<Xlb.DataPlane.XlbFlow>());
            Assert.Contains($"ABI mismatch on map 'xlb_flows' of the object: key {k} B / value {v + 8} B, but XlbFlowKey is {k} B / XlbFlow is {v} B", e.Message, StringComparison.Ordinal);
        });
    }

    [Fact]
    public void Where_the_driver_has_no_native_xdp_the_attach_fails_or_falls_back_to_generic_and_says_which()
    {
        Privileged.Require();
        var ns = $"xlbgen{Environment.ProcessId % 100000}";
        InTempDir("xlb-attach-", dir =>
        {
            try
            {
                using var program = BpfObject.Load(Compile(dir, "pass", "    return XDP_PASS;"));
                var fd = program.ProgramFd("pass");
                Netns.Delete(ns);
                Netns.Add(ns);
                // The loopback driver has no native XDP; the namespace's own lo is the test's alone.
                Netns.Ip(ns, "link", "set", "lo", "up");
                var refused = Assert.IsType<BpfException>(Assert.Throws<InvalidOperationException>(() => Netns.Run(ns, () => Xdp.Attach("lo", fd, allowGeneric: false))).InnerException);
                Assert.Contains("EOPNOTSUPP", refused.Message, StringComparison.Ordinal);
                Assert.Contains("native mode on lo", refused.Message, StringComparison.Ordinal);
                Assert.DoesNotContain("xdp", Netns.Ip(ns, "link", "show", "lo"), StringComparison.Ordinal);

                Assert.Equal(XdpMode.Generic, Netns.Run(ns, () => Xdp.Attach("lo", fd, allowGeneric: true)));
                Assert.Contains("xdpgeneric", Netns.Ip(ns, "link", "show", "lo"), StringComparison.Ordinal);
                Netns.Run(ns, () =>
                {
                    Xdp.Detach("lo", XdpMode.Generic);
                    return 0;
                });
                Assert.DoesNotContain("xdp", Netns.Ip(ns, "link", "show", "lo"), StringComparison.Ordinal);
            }
            finally
            {
                Netns.Delete(ns);
            }
        });
    }
}
