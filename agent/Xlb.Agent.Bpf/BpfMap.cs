using System.Runtime.CompilerServices;
using Xlb.Agent.Bpf.Interop;

namespace Xlb.Agent.Bpf;

/// <summary>
/// A BPF map seen through blittable key and value types. Keys are copied into zeroed
/// storage by value, so their padding is zero (hash maps compare padding bytes).
/// For per-CPU maps use <see cref="PerCpuLookup"/>.
/// </summary>
public sealed unsafe class BpfMap<TKey, TValue>
    where TKey : unmanaged
    where TValue : unmanaged
{
    /// <summary>What keeps <see cref="Fd"/> open: the loaded object, or the pinned maps opened by path.</summary>
    private readonly object _owner;

    internal BpfMap(int fd, string name, object owner)
    {
        Fd = fd;
        Name = name;
        _owner = owner;
    }

    /// <summary>
    /// Refuses a map whose key or value size differs from <typeparamref name="TKey"/> and
    /// <typeparamref name="TValue"/>: an ABI drift between the C# side and the kernel's map.
    /// </summary>
    internal static void RequireLayout(string what, uint keySize, uint valueSize, string advice)
    {
        var (k, v) = (Unsafe.SizeOf<TKey>(), Unsafe.SizeOf<TValue>());
        if (keySize != k || valueSize != v)
        {
            throw new BpfException($"ABI mismatch on {what}: key {keySize} B / value {valueSize} B, but {typeof(TKey).Name} is {k} B / {typeof(TValue).Name} is {v} B. {advice}");
        }
    }

    public int Fd { get; }
    public string Name { get; }

    public const ulong Any = 0;
    public const ulong NoExist = 1;
    public const ulong Exist = 2;

    public void Update(in TKey key, in TValue value, ulong flags = Any)
    {
        var (k, v) = (key, value);
        var rc = Libbpf.bpf_map_update_elem(Fd, &k, &v, flags);
        if (rc < 0)
        {
            throw new BpfException("bpf_map_update_elem", -rc, $"map {Name}, key {key}");
        }
        GC.KeepAlive(_owner);
    }

    public bool TryLookup(in TKey key, out TValue value)
    {
        var k = key;
        TValue v = default;
        var rc = Libbpf.bpf_map_lookup_elem(Fd, &k, &v);
        GC.KeepAlive(_owner);
        value = v;
        if (rc == -Errnos.ENOENT)
        {
            return false;
        }
        if (rc < 0)
        {
            throw new BpfException("bpf_map_lookup_elem", -rc, $"map {Name}, key {key}");
        }
        return true;
    }

    /// <summary>Deletes a key; returns false when it was not there.</summary>
    public bool Delete(in TKey key)
    {
        var k = key;
        var rc = Libbpf.bpf_map_delete_elem(Fd, &k);
        GC.KeepAlive(_owner);
        if (rc == -Errnos.ENOENT)
        {
            return false;
        }
        if (rc < 0)
        {
            throw new BpfException("bpf_map_delete_elem", -rc, $"map {Name}, key {key}");
        }
        return true;
    }

    /// <summary>
    /// Writes entries by BPF_MAP_UPDATE_BATCH: one syscall for many entries (not for per-CPU
    /// maps). Each key and value is written as one update with <see cref="Any"/> (the kernel takes no
    /// other flag for a batch); a failure names how many were written before it. Keys are written
    /// as given: the ABI's key structs have explicit padding fields.
    /// </summary>
    public void UpdateBatch(ReadOnlySpan<TKey> keys, ReadOnlySpan<TValue> values)
    {
        if (keys.Length != values.Length)
        {
            throw new ArgumentException($"{keys.Length} keys but {values.Length} values", nameof(values));
        }
        fixed (TValue* v = values)
        {
            Batched("bpf_map_update_batch", keys, v, (k, vs, n, o) => Libbpf.bpf_map_update_batch(Fd, k, vs, n, o));
        }
    }

    /// <summary>
    /// Deletes keys of a hash map by BPF_MAP_DELETE_BATCH. Every key must be present: a missing one
    /// stops the batch (ENOENT) with the keys before it deleted.
    /// </summary>
    public void DeleteBatch(ReadOnlySpan<TKey> keys) =>
        Batched("bpf_map_delete_batch", keys, null, (k, _, n, o) => Libbpf.bpf_map_delete_batch(Fd, k, n, o));

    private delegate int BatchCall(TKey* keys, TValue* values, uint* count, BpfMapBatchOpts* opts);

    /// <summary>
    /// Runs a batch call over all keys (and values, when given): the kernel may stop early (a
    /// signal), so it goes on from where the kernel stopped; a failure names the entry.
    /// </summary>
    private void Batched(string call, ReadOnlySpan<TKey> keys, TValue* values, BatchCall step)
    {
        var opts = new BpfMapBatchOpts { Sz = (ulong)sizeof(BpfMapBatchOpts) };
        var done = 0;
        fixed (TKey* first = keys)
        {
            while (done < keys.Length)
            {
                var n = (uint)(keys.Length - done);
                var rc = step(first + done, values == null ? null : values + done, &n, &opts);
                GC.KeepAlive(_owner);
                if (rc < 0)
                {
                    throw new BpfException(call, -rc, $"map {Name}: entry {done + n} of {keys.Length} ({keys[Math.Min(done + (int)n, keys.Length - 1)]})");
                }
                done += (int)n;
                if (n == 0)
                {
                    throw new BpfException(call, Errnos.EINTR, $"map {Name}: no progress at entry {done} of {keys.Length}");
                }
            }
        }
    }

    /// <summary>
    /// Every entry of a hash map whose key passes <paramref name="where"/> (all when null), read by
    /// BPF_MAP_LOOKUP_BATCH: a bucket at a time rather than two syscalls per entry. Like any walk
    /// of a live map, entries changing meanwhile may be missed or seen twice.
    /// </summary>
    public Dictionary<TKey, TValue> Entries(Func<TKey, bool>? where = null) =>
        where is null ? Entries((Func<TKey, TValue, bool>?)null) : Entries((k, _) => where(k));

    /// <summary>The same, choosing entries by key and value: only those chosen are kept in memory.</summary>
    public Dictionary<TKey, TValue> Entries(Func<TKey, TValue, bool>? where)
    {
        var entries = new Dictionary<TKey, TValue>();
        var chunk = 1024;
        var keys = new TKey[chunk];
        var values = new TValue[chunk];
        // The batch position is opaque to user space (a bucket number for hash maps); 8 bytes hold it.
        ulong at = 0, next = 0;
        var started = false;
        var opts = new BpfMapBatchOpts { Sz = (ulong)sizeof(BpfMapBatchOpts) };
        while (true)
        {
            var n = (uint)keys.Length;
            int rc;
            fixed (TKey* k = keys)
            fixed (TValue* v = values)
            {
                rc = Libbpf.bpf_map_lookup_batch(Fd, started ? &at : null, &next, k, v, &n, &opts);
            }
            GC.KeepAlive(_owner);
            if (rc == -Errnos.ENOSPC && n == 0)
            {
                // One bucket holds more entries than the buffers: grow them and read it again.
                chunk *= 2;
                keys = new TKey[chunk];
                values = new TValue[chunk];
                continue;
            }
            if (rc < 0 && rc != -Errnos.ENOENT)
            {
                throw new BpfException("bpf_map_lookup_batch", -rc, $"map {Name}");
            }
            for (var i = 0; i < n; i++)
            {
                if (where is null || where(keys[i], values[i]))
                {
                    entries[keys[i]] = values[i];
                }
            }
            if (rc == -Errnos.ENOENT)
            {
                return entries;
            }
            at = next;
            started = true;
        }
    }

    /// <summary>All keys of a hash map, as of the walk (entries changing meanwhile may be missed or repeated).</summary>
    public List<TKey> Keys()
    {
        var keys = new List<TKey>();
        TKey next = default;
        var rc = Libbpf.bpf_map_get_next_key(Fd, null, &next);
        while (rc == 0)
        {
            keys.Add(next);
            var cur = next;
            rc = Libbpf.bpf_map_get_next_key(Fd, &cur, &next);
        }
        GC.KeepAlive(_owner);
        if (rc != -Errnos.ENOENT)
        {
            throw new BpfException("bpf_map_get_next_key", -rc, $"map {Name}");
        }
        return keys;
    }

    /// <summary>A per-CPU map entry's values, added up over the CPUs.</summary>
    public TValue PerCpuSum(in TKey key, Func<TValue, TValue, TValue> add) => PerCpuLookup(key).Aggregate(default(TValue), add);

    /// <summary>Sets every CPU's value of a per-CPU map entry to zero.</summary>
    public void PerCpuClear(in TKey key)
    {
        var cpus = Libbpf.libbpf_num_possible_cpus();
        if (cpus < 0)
        {
            throw new BpfException("libbpf_num_possible_cpus", -cpus, "");
        }
        var buf = new byte[((Unsafe.SizeOf<TValue>() + 7) & ~7) * cpus];
        var k = key;
        fixed (byte* p = buf)
        {
            var rc = Libbpf.bpf_map_update_elem(Fd, &k, p, Any);
            GC.KeepAlive(_owner);
            if (rc < 0)
            {
                throw new BpfException("bpf_map_update_elem", -rc, $"per-CPU map {Name}, key {key}");
            }
        }
    }

    /// <summary>Every CPU's value of a per-CPU map entry.</summary>
    public TValue[] PerCpuLookup(in TKey key)
    {
        var cpus = Libbpf.libbpf_num_possible_cpus();
        if (cpus < 0)
        {
            throw new BpfException("libbpf_num_possible_cpus", -cpus, "");
        }
        // The kernel copies values rounded up to 8 bytes per CPU.
        var stride = (Unsafe.SizeOf<TValue>() + 7) & ~7;
        var buf = new byte[stride * cpus];
        var k = key;
        fixed (byte* p = buf)
        {
            var rc = Libbpf.bpf_map_lookup_elem(Fd, &k, p);
            GC.KeepAlive(_owner);
            if (rc < 0)
            {
                throw new BpfException("bpf_map_lookup_elem", -rc, $"per-CPU map {Name}, key {key}");
            }
            var result = new TValue[cpus];
            for (var i = 0; i < cpus; i++)
            {
                result[i] = Unsafe.ReadUnaligned<TValue>(p + (i * stride));
            }
            return result;
        }
    }

    /// <summary>
    /// Entries <paramref name="first"/> to <paramref name="first"/> + count - 1 of an array map,
    /// read by BPF_MAP_LOOKUP_BATCH: a few syscalls instead of one per entry.
    /// </summary>
    public TValue[] ReadArray(uint first, int count)
    {
        var values = new TValue[count];
        fixed (TValue* v = values)
        {
            LookupRange(first, count, (byte*)v, sizeof(TValue));
        }
        return values;
    }

    /// <summary>
    /// Entries <paramref name="first"/> to <paramref name="first"/> + count - 1 of a per-CPU array
    /// map, each added up over the CPUs: one batch read instead of a syscall per entry.
    /// </summary>
    public TValue[] PerCpuSums(uint first, int count, Func<TValue, TValue, TValue> add)
    {
        var cpus = Libbpf.libbpf_num_possible_cpus();
        if (cpus < 0)
        {
            throw new BpfException("libbpf_num_possible_cpus", -cpus, "");
        }
        // The kernel copies values rounded up to 8 bytes per CPU.
        var stride = (sizeof(TValue) + 7) & ~7;
        var buf = new byte[(long)count * stride * cpus];
        var sums = new TValue[count];
        fixed (byte* p = buf)
        {
            LookupRange(first, count, p, stride * cpus);
            for (var i = 0; i < count; i++)
            {
                var sum = default(TValue);
                for (var c = 0; c < cpus; c++)
                {
                    sum = add(sum, Unsafe.ReadUnaligned<TValue>(p + ((((long)i * cpus) + c) * stride)));
                }
                sums[i] = sum;
            }
        }
        return sums;
    }

    /// <summary>Reads a range of an array map by BPF_MAP_LOOKUP_BATCH into <paramref name="values"/>, <paramref name="valueBytes"/> per entry.</summary>
    private void LookupRange(uint first, int count, byte* values, int valueBytes)
    {
        if (typeof(TKey) != typeof(uint))
        {
            throw new InvalidOperationException($"an array read needs an array map (u32 keys); {Name} has {typeof(TKey).Name}");
        }
        var keys = new uint[Math.Min(count, 4096)];
        var done = 0;
        // The batch position is the last key returned; the next batch starts after it. So
        // first - 1 starts at first (no position at all starts at 0).
        var at = first - 1;
        var opts = new BpfMapBatchOpts { Sz = (ulong)sizeof(BpfMapBatchOpts) };
        while (done < count)
        {
            var n = (uint)Math.Min(count - done, keys.Length);
            uint next = 0;
            int rc;
            fixed (uint* k = keys)
            {
                rc = Libbpf.bpf_map_lookup_batch(Fd, first == 0 && done == 0 ? null : &at, &next, k, values + ((long)done * valueBytes), &n, &opts);
            }
            GC.KeepAlive(_owner);
            if (rc < 0 && rc != -Errnos.ENOENT)
            {
                throw new BpfException("bpf_map_lookup_batch", -rc, $"map {Name}, entries {first + done}..");
            }
            done += (int)n;
            if (rc == -Errnos.ENOENT || n == 0)
            {
                break;
            }
            at = next;
        }
        if (done < count)
        {
            throw new BpfException("bpf_map_lookup_batch", Errnos.ENOENT, $"map {Name}: {done} of {count} entries from {first}");
        }
    }
}
