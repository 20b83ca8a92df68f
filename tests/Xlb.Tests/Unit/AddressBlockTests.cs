using System.Net;
using System.Net.Sockets;
using System.Numerics;
using Xlb.Operator.Core;

namespace Xlb.Tests.Unit;

public class AddressBlockTests
{
    private static AddressBlock Block(string text)
    {
        Assert.True(AddressBlock.TryParse(text, out var block, out var error), error);
        return block;
    }

    private static BigInteger Reference(IPAddress a) => new(a.GetAddressBytes(), isUnsigned: true, isBigEndian: true);

    [Fact]
    public void Contains_agrees_with_a_big_integer_comparison_for_random_blocks_and_addresses_of_both_families()
    {
        var random = new Random(20261122);
        IPAddress Random(AddressFamily family)
        {
            var bytes = new byte[family == AddressFamily.InterNetwork ? 4 : 16];
            random.NextBytes(bytes);
            return new IPAddress(bytes);
        }
        for (var i = 0; i < 2000; i++)
        {
            var family = i % 2 == 0 ? AddressFamily.InterNetwork : AddressFamily.InterNetworkV6;
            var (x, y) = (Random(family), Random(family));
            var (first, last) = Reference(x) <= Reference(y) ? (x, y) : (y, x);
            var block = Block($"{first}-{last}");
            // Addresses inside, outside, at the bounds, and of the other family.
            foreach (var a in new[] { Random(family), first, last, Random(family), Random(i % 2 == 0 ? AddressFamily.InterNetworkV6 : AddressFamily.InterNetwork) })
            {
                var expected = a.AddressFamily == family && Reference(a) >= Reference(first) && Reference(a) <= Reference(last);
                Assert.True(expected == block.Contains(a), $"{block} contains {a}: expected {expected}");
            }
        }
    }

    [Theory]
    [InlineData("10.0.0.0/30", "10.0.0.1 10.0.0.2")]
    [InlineData("10.0.0.254-10.0.1.1", "10.0.0.254 10.0.0.255 10.0.1.0 10.0.1.1")]
    [InlineData("255.255.255.254-255.255.255.255", "255.255.255.254 255.255.255.255")]
    [InlineData("fd00::fffe-fd00::1:0", "fd00::fffe fd00::ffff fd00::1:0")]
    [InlineData("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")]
    public void A_block_enumerates_exactly_its_addresses_in_order(string block, string addresses)
    {
        Assert.Equal(addresses.Split(' '), Block(block).Addresses().Select(a => a.ToString()));
    }
}
