using System.Text.Json;
using System.Text.Json.Nodes;
using Xlb.Kube;

namespace Xlb.Tests.Kube;

public class PooledBufferTests
{
    [Fact]
    public void A_value_written_into_a_pooled_buffer_is_the_serializer_s_own_bytes_at_any_size()
    {
        foreach (var size in new[] { 0, 10, 4095, 4096, 70_000, 400_000 })
        {
            var value = new JsonObject
            {
                ["name"] = "caf\u00e9 <&>",
                ["items"] = new JsonArray([.. Enumerable.Range(0, size / 16).Select(i => (JsonNode)$"item-{i:D6}")]),
            };
            using var buffer = PooledBuffer.Json(value, KubeJson.Options);
            Assert.Equal(JsonSerializer.SerializeToUtf8Bytes(value, KubeJson.Options), buffer.Written.ToArray());
            buffer.Dispose(); // twice: the array goes back to the pool once
            Assert.True(buffer.Written.IsEmpty);
        }
    }
}
