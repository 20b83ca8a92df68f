using System.Collections;

namespace Xlb.Agent.Core;

/// <summary>
/// An immutable list of slots in chunks of <see cref="ChunkSize"/>: a changed copy
/// (<see cref="Edit"/>) shares every chunk it did not change with the original, so a revision
/// that changes a few of half a million backend slots copies a few chunks, not the whole (and
/// touches no fresh pages). Chunks stay below the large-object heap.
/// </summary>
public sealed class Slots<T> : IReadOnlyList<T>
    where T : struct
{
    public const int ChunkSize = 1024;

    private readonly T[][] _chunks;

    public static Slots<T> Empty { get; } = new([], 0);

    private Slots(T[][] chunks, int count) => (_chunks, Count) = (chunks, count);

    public int Count { get; }

    public T this[int index] => (uint)index < (uint)Count ? _chunks[index / ChunkSize][index % ChunkSize] : throw new ArgumentOutOfRangeException(nameof(index));

    /// <summary>Whether slots [from, from + ChunkSize) are the same chunk in both lists (so equal without a look).</summary>
    public bool SharesChunk(Slots<T> other, int from) =>
        from / ChunkSize < _chunks.Length && from / ChunkSize < other._chunks.Length && ReferenceEquals(_chunks[from / ChunkSize], other._chunks[from / ChunkSize]);

    public static Slots<T> From(IReadOnlyList<T> items)
    {
        var editor = Empty.Edit();
        editor.Count = items.Count;
        for (var i = 0; i < items.Count; i++)
        {
            editor[i] = items[i];
        }
        return editor.Done();
    }

    public Editor Edit() => new(this);

    public IEnumerator<T> GetEnumerator()
    {
        for (var i = 0; i < Count; i++)
        {
            yield return this[i];
        }
    }

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    /// <summary>A changed copy in the making: a chunk is copied the first time one of its slots is written.</summary>
    public sealed class Editor(Slots<T> original)
    {
        private T[][] _chunks = [.. original._chunks];
        private bool[] _owned = new bool[original._chunks.Length];
        private int _count = original.Count;

        /// <summary>Growing adds default slots; shrinking drops slots (cleared, should the list grow again).</summary>
        public int Count
        {
            get => _count;
            set
            {
                var chunks = (value + ChunkSize - 1) / ChunkSize;
                if (chunks > _chunks.Length)
                {
                    var had = _chunks.Length;
                    Array.Resize(ref _chunks, chunks);
                    Array.Resize(ref _owned, chunks);
                    for (var c = had; c < chunks; c++)
                    {
                        (_chunks[c], _owned[c]) = (new T[ChunkSize], true);
                    }
                }
                for (var i = value; i < _count; i++)
                {
                    if (!EqualityComparer<T>.Default.Equals(this[i], default))
                    {
                        this[i] = default;
                    }
                }
                _count = value;
            }
        }

        public T this[int index]
        {
            get => _chunks[index / ChunkSize][index % ChunkSize];
            set
            {
                var c = index / ChunkSize;
                if (!_owned[c])
                {
                    (_chunks[c], _owned[c]) = ((T[])_chunks[c].Clone(), true);
                }
                _chunks[c][index % ChunkSize] = value;
            }
        }

        public Slots<T> Done() => new(_chunks[..((_count + ChunkSize - 1) / ChunkSize)], _count);
    }
}
