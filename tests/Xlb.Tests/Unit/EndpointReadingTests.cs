using System.Net;
using System.Text.Json;
using Xlb.Crds;
using Xlb.Kube;
using Xlb.Operator.Core;

namespace Xlb.Tests.Unit;

/// <summary>How endpoints are read from JSON and resolved into backends.</summary>
public class EndpointReadingTests
{
    private static EndpointSlice Slice(string name, params SliceEndpoint[] endpoints) => new()
    {
        Metadata = new ObjectMeta { Name = name, Namespace = "ns" },
        Ports = [new SlicePort { Name = "http", Port = 8080 }],
        Endpoints = [.. endpoints],
    };

    private static SliceEndpoint Ep(string address, bool ready = true, string? node = null) => new()
    {
        Addresses = [address],
        Conditions = ready ? EndpointConditions.Of(true, null, null) : EndpointConditions.Of(false, true, true),
        NodeName = node,
    };

    [Fact]
    public void An_endpoint_is_read_in_one_pass_keeping_addresses_conditions_and_node_and_skipping_the_rest()
    {
        var endpoints = JsonSerializer.Deserialize<List<SliceEndpoint>>("""
            [
              {"zone": "z", "addresses": ["10.0.0.1", "10.0.0.2"], "hints": {"forZones": [{"name": "z"}]},
               "targetRef": {"kind": "Pod", "name": "p", "uid": "u"}, "conditions": {"ready": false, "serving": true, "terminating": true},
               "nodeName": "n1", "deprecatedTopology": {"a": "b"}},
              {"addresses": ["10.0.0.3"]},
              {"addresses": [], "conditions": null, "nodeName": null},
              {"nodeName": "n1", "conditions": {"ready": true, "future": {"x": [1, 2]}}, "addresses": ["2001:db8::1"]}
            ]
            """, KubeJson.Options)!;
        Assert.Equal(4, endpoints.Count);
        Assert.Equal(["10.0.0.1", "10.0.0.2"], endpoints[0].Addresses);
        Assert.Same(EndpointConditions.Of(false, true, true), endpoints[0].Conditions);
        Assert.Equal("n1", endpoints[0].NodeName);
        Assert.Equal(["10.0.0.3"], endpoints[1].Addresses);
        Assert.Equal(("10.0.0.1", "10.0.0.3", null), (endpoints[0].FirstAddress, endpoints[1].FirstAddress, endpoints[2].FirstAddress));
        // One address is kept as that string, equal by value like any other endpoint field.
        Assert.Equal(new SliceEndpoint { Addresses = ["10.0.0.3"] }, endpoints[1]);
        Assert.Same(EndpointConditions.Unset, endpoints[1].Conditions);
        Assert.Null(endpoints[1].NodeName);
        Assert.Empty(endpoints[2].Addresses);
        Assert.Same(EndpointConditions.Unset, endpoints[2].Conditions);
        Assert.Null(endpoints[2].NodeName);
        Assert.Equal(["2001:db8::1"], endpoints[3].Addresses);
        Assert.Same(EndpointConditions.Of(true, null, null), endpoints[3].Conditions);
        Assert.Same(endpoints[0].NodeName, endpoints[3].NodeName);

        // Written back, the kept fields read the same; an endpoint with no node has no nodeName.
        var json = JsonSerializer.Serialize(endpoints, KubeJson.Options);
        Assert.Contains("""{"addresses":["10.0.0.3"],"conditions":{}}""", json);
        var again = JsonSerializer.Deserialize<List<SliceEndpoint>>(json, KubeJson.Options)!;
        Assert.Equal(endpoints.Select(e => (string.Join(",", e.Addresses), e.Conditions, e.NodeName)), again.Select(e => (string.Join(",", e.Addresses), e.Conditions, e.NodeName)));

        // An endpoint is a value: a default one reads as no address and unset conditions.
        Assert.Empty(default(SliceEndpoint).Addresses);
        Assert.Same(EndpointConditions.Unset, default(SliceEndpoint).Conditions);

        foreach (var bad in new[] { """[{"addresses": "10.0.0.1"}]""", """[{"addresses": [1]}]""", """[{"addresses": [null]}]""", "[[]]" })
        {
            Assert.Throws<JsonException>(() => JsonSerializer.Deserialize<List<SliceEndpoint>>(bad, KubeJson.Options));
        }
    }

    [Fact]
    public void Backends_come_sorted_by_address_and_port_and_an_endpoint_in_two_slices_is_its_first_active_entry()
    {
        // Slice "a" comes first (slices are read by name): 10.0.0.9 is draining there, active in "b" twice.
        var slices = new[]
        {
            Slice("b", Ep("10.0.0.9", node: "n2"), Ep("10.0.0.9", node: "n3"), Ep("10.0.0.10", node: "n4"), Ep("10.0.0.7", ready: false, node: "n6")),
            Slice("a", Ep("10.0.0.9", ready: false, node: "n1"), Ep("10.0.0.10", node: "n5"), Ep("10.0.0.7", ready: false, node: "n7"), Ep("10.0.0.8", ready: false)),
        };
        var backends = Backends.FromSlices(slices, null, 80, L4Protocol.TCP, new IntOrString("http"), withNodes: true, out var notReady);
        Assert.Equal(0, notReady);
        Assert.Equal(
            ["10.0.0.10 active n5", "10.0.0.7 draining n7", "10.0.0.8 draining ", "10.0.0.9 active n2"],
            backends.List.Select((b, i) => $"{b.Address} {(b.Draining ? "draining" : "active")} {backends.Nodes![i]}"));
        // Nodes are kept only when asked for (trafficPolicy Local); the backends are the same.
        var plain = Backends.FromSlices(slices, null, 80, L4Protocol.TCP, new IntOrString("http"), withNodes: false, out _);
        Assert.Null(plain.Nodes);
        Assert.Equal(backends.List, plain.List);
    }

    [Fact]
    public void Without_nodes_the_backends_are_those_resolved_with_nodes_for_random_slices_with_repeated_endpoints()
    {
        var rng = new Random(17);
        for (var round = 0; round < 500; round++)
        {
            // Few distinct addresses over several slices: repeats across and within slices, in every state.
            var slices = Enumerable.Range(0, rng.Next(1, 4)).Select(s => Slice($"s{rng.Next(5)}",
                [.. Enumerable.Range(0, rng.Next(0, 12)).Select(_ => new SliceEndpoint
                {
                    Addresses = rng.Next(12) == 0 ? [] : [$"10.0.{rng.Next(2)}.{rng.Next(6)}"],
                    Conditions = EndpointConditions.Of(Tri(rng), Tri(rng), Tri(rng)),
                    NodeName = $"n{rng.Next(3)}",
                })])).ToArray();
            var withNodes = Backends.FromSlices(slices, null, 80, L4Protocol.TCP, new IntOrString("http"), withNodes: true, out var notReadyWith);
            var plain = Backends.FromSlices(slices, null, 80, L4Protocol.TCP, new IntOrString("http"), withNodes: false, out var notReadyPlain);
            Assert.Equal(withNodes.List, plain.List);
            Assert.Equal(notReadyWith, notReadyPlain);
            Assert.Equal(plain.List.Count, plain.List.DistinctBy(b => (b.Address, b.Port)).Count());
        }

        static bool? Tri(Random rng) => rng.Next(3) switch { 0 => null, 1 => true, _ => false };
    }

    [Fact]
    public void Backend_addresses_are_those_IPAddress_reads_in_its_own_form_and_the_endpoint_s_string_when_that_is_the_form()
    {
        var rng = new Random(5);
        string[] parts = ["0", "1", "9", "10", "00", "01", "010", "99", "100", "199", "255", "256", "300", "999", "1000", "", "0x1", "a", "-1", " 1"];
        var texts = new List<string> { "1.2.3.4", "0.0.0.0", "255.255.255.255", "1.2.3", "1.2.3.4.", ".1.2.3.4", "1..2.3", "1.2.3.4.5", "2001:db8::1", "::ffff:1.2.3.4", "2001:DB8::1", "" };
        for (var i = 0; i < 4000; i++)
        {
            var n = rng.Next(1, 6);
            texts.Add(string.Join(rng.Next(10) == 0 ? ":" : ".", Enumerable.Range(0, n).Select(_ => parts[rng.Next(parts.Length)])));
        }
        foreach (var text in texts)
        {
            var own = new string(text.AsSpan());
            var got = Backends.FromSlices([Slice("s", Ep(own))], null, 80, L4Protocol.TCP, 8080, withNodes: false, out _).List;
            if (!IPAddress.TryParse(text, out var ip))
            {
                Assert.Empty(got);
                continue;
            }
            var backend = Assert.Single(got);
            Assert.Equal(ip.ToString(), backend.Address);
            Assert.Equal(ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6, PortBackends.IsIPv6(backend.Address));
            Assert.Equal(text == ip.ToString(), ReferenceEquals(own, backend.Address));
        }
    }
}
