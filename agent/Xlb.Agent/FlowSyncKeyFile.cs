namespace Xlb.Agent;

/// <summary>
/// The flow-sync key file (<c>--flow-sync-key-file</c>), read again when the agent asks (every
/// walk): a mounted Secret is updated in place when it changes. Datagrams are sent with the newest
/// key and taken with it or the one before, so a new key can reach the nodes one after another
/// without a gap in synchronisation. A file that goes away, or a key that is too short, leaves the
/// last good key in use; a file that appears later makes the datagrams authenticated from then on.
/// </summary>
public sealed class FlowSyncKeyFile(string path)
{
    private volatile byte[][] _accepted = [];

    public string Path => path;

    /// <summary>The key datagrams are sent with; null while there has been none (unauthenticated).</summary>
    public byte[]? Current => _accepted.Length > 0 ? _accepted[0] : null;

    /// <summary>The keys a datagram's tag may be made with: the current one, then the one before.</summary>
    public IReadOnlyList<byte[]> Accepted => _accepted;

    /// <summary>Why the last read was not taken; null after a good one.</summary>
    public string? Problem { get; private set; }

    /// <summary>The key in <paramref name="file"/> (a trailing newline is not part of it); null when there is no such file.</summary>
    public static byte[]? Read(string file)
    {
        if (!File.Exists(file))
        {
            return null;
        }
        var key = File.ReadAllBytes(file).AsSpan().TrimEnd("\r\n"u8).ToArray();
        return key.Length >= Core.PeerDatagrams.MinKeyBytes
            ? key
            : throw new FormatException($"{file}: the key has {key.Length} bytes; at least {Core.PeerDatagrams.MinKeyBytes}");
    }

    /// <summary>Reads the file again: true when it holds a new good key, which is current from now on.</summary>
    public bool Refresh()
    {
        byte[]? key;
        try
        {
            key = Read(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException)
        {
            Problem = e.Message;
            return false;
        }
        Problem = null;
        if (key is null || Current is { } current && key.AsSpan().SequenceEqual(current))
        {
            return false;
        }
        _accepted = Current is { } before ? [key, before] : [key];
        return true;
    }
}
