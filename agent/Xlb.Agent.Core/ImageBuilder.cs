using System.Net;
using Xlb.Crds;
using Xlb.DataPlane;

namespace Xlb.Agent.Core;

/// <summary>
/// Builds the <see cref="MapImage"/> of each revision, and keeps what it built: the next build
/// (<see cref="Next"/>) redoes only the listeners that changed. A listener the same as before
/// (by name, in every field the data plane reads) keeps its compiled ring, its backends keep
/// their indexes, and its ring span is neither filled nor compared again; the cost of a revision
/// is its changes, plus a walk over the listeners and a copy of the ring array. The result is
/// the image <see cref="Build"/> makes from scratch over the same basis (the previous image's
/// services and backend indexes): the same numbering rules, spans and ids.
/// Not thread-safe; pure (no I/O).
/// </summary>
public sealed class ImageBuilder(DataPlaneCapacity? capacity = null, ListenerMemo? memo = null)
{
    private readonly DataPlaneCapacity _capacity = capacity ?? DataPlaneCapacity.Default;
    private readonly ListenerMemo _memo = memo ?? new ListenerMemo();

    /// <summary>A listener as the last build placed it.</summary>
    private sealed record Entry(Listener Source, XlbSvcKey Key, CompiledListener Compiled, bool Holds);

    private Dictionary<string, Entry> _entries = new(StringComparer.Ordinal);
    /// <summary>Every backend of the last image and its index; with <see cref="_refs"/>, how many listeners list it.</summary>
    private Dictionary<XlbBackend, int> _index = [];
    private int[] _refs = [];
    private MapImage? _last;
    private List<(XlbBackend Backend, int Index)> _fresh = [];

    /// <summary>Whether <see cref="Next"/> may build on the last image.</summary>
    public bool HasBasis => _last is not null;

    /// <summary>Every backend of the last image and its index (the builder's own, updated by each build).</summary>
    public IReadOnlyDictionary<XlbBackend, int> Indexes => _index;

    /// <summary>The backends the last build gave an index they did not hold before (their counters start from zero).</summary>
    public IReadOnlyList<(XlbBackend Backend, int Index)> Renumbered => _fresh;

    /// <summary>
    /// Hands back the ring of an image nobody reads any more, for the next build to fill
    /// instead of allocating one (tens of MB at scale, every revision). The caller must hold
    /// no reference to it, nor to an image made with it.
    /// </summary>
    public void Recycle(uint[] ring)
    {
        if (!ReferenceEquals(ring, _last?.Ring))
        {
            _spare = ring;
        }
    }

    private uint[]? _spare;

    /// <summary>Listeners whose ring the last build wrote (for tests and figures).</summary>
    public int Filled { get; private set; }

    /// <summary>Forgets the last image: the next build must be <see cref="Build"/>.</summary>
    public void Forget()
    {
        _last = null;
        _entries = new(StringComparer.Ordinal);
        _index = [];
        _refs = [];
    }

    /// <summary>
    /// The image of <paramref name="spec"/>, from scratch, over a basis read from the maps
    /// (see <see cref="MapImage.Build"/> for the parameters).
    /// </summary>
    public MapImage Build(XlbNodeConfigSpec spec, byte generation, IReadOnlyDictionary<XlbSvcKey, XlbSvc>? previous, IReadOnlyDictionary<XlbBackend, int>? backendIndexes)
    {
        var slots = new XlbBackend[backendIndexes is { Count: > 0 } ? Math.Min(_capacity.MaxBackends, backendIndexes.Values.Max()) : 0];
        foreach (var (be, idx) in backendIndexes ?? new Dictionary<XlbBackend, int>())
        {
            // An index out of range, or held twice (maps edited by hand), is not carried.
            if (idx > 0 && idx <= slots.Length && slots[idx - 1].Family == 0)
            {
                slots[idx - 1] = be;
            }
        }
        return BuildFromSlots(spec, generation, previous, slots);
    }

    /// <summary>The same, with the revision before's backends as its backend slots (slot 1 first), as the maps hold them.</summary>
    public MapImage BuildFromSlots(XlbNodeConfigSpec spec, byte generation, IReadOnlyDictionary<XlbSvcKey, XlbSvc>? previous, IReadOnlyList<XlbBackend> backendSlots)
    {
        Forget();
        var before = new XlbBackend[Math.Min(backendSlots.Count, _capacity.MaxBackends)];
        for (var i = 0; i < before.Length; i++)
        {
            // A backend in two slots (maps edited by hand) keeps the first.
            if (backendSlots[i].Family != 0 && _index.TryAdd(backendSlots[i], i + 1))
            {
                before[i] = backendSlots[i];
            }
        }
        var used = MapImage.LastUsedSlot(before);
        _refs = new int[used + 1];
        return Step(spec, generation, before[..used], previous, previousRing: null);
    }

    /// <summary>The image of <paramref name="spec"/>, built on the last one.</summary>
    /// <exception cref="InvalidOperationException">There is no last image (<see cref="HasBasis"/>).</exception>
    public MapImage Next(XlbNodeConfigSpec spec, byte generation)
    {
        var last = _last ?? throw new InvalidOperationException("no image to build on: Build first");
        return Step(spec, generation, last.Backends, last.ServiceBasis(), last.Ring);
    }

    /// <param name="previousRing">The last image's ring; null: a build from scratch (every ring is filled).</param>
    private MapImage Step(XlbNodeConfigSpec spec, byte generation, IReadOnlyList<XlbBackend> before, IReadOnlyDictionary<XlbSvcKey, XlbSvc>? previousServices, uint[]? previousRing)
    {
        try
        {
            var image = StepCore(spec, generation, before, previousServices, previousRing);
            _last = image;
            return image;
        }
        catch
        {
            Forget();
            throw;
        }
    }

    /// <summary>A listener of the spec: its name, made unique by its occurrence when a hand-written config repeats it.</summary>
    private readonly record struct Item(string Slot, string Name, int Occurrence, Listener Listener);

    private MapImage StepCore(XlbNodeConfigSpec spec, byte generation, IReadOnlyList<XlbBackend> before, IReadOnlyDictionary<XlbSvcKey, XlbSvc>? previousServices, uint[]? previousRing)
    {
        var items = Items(spec.Listeners);

        // 1. Which listeners are unchanged; the others are compiled (or found in the memo).
        var carried = new Dictionary<string, Entry>(items.Count, StringComparer.Ordinal);
        var changed = new List<Item>();
        foreach (var item in items)
        {
            if (_entries.TryGetValue(item.Slot, out var was) && SameForDataPlane(was.Source, item.Listener))
            {
                carried[item.Slot] = was;
            }
            else
            {
                changed.Add(item);
            }
        }
        var compiled = new Dictionary<string, CompiledListener>(changed.Count, StringComparer.Ordinal);
        foreach (var item in changed)
        {
            compiled[item.Slot] = _memo.Compile(item.Listener);
        }
        if (previousRing is null)
        {
            // A build from scratch compiled (or looked up) every listener: the memo keeps just those.
            _memo.Sweep();
        }
        CompiledListener CompiledOf(string slot) => carried.TryGetValue(slot, out var e) ? e.Compiled : compiled[slot];

        // 2. Backend references: listeners that left or changed release theirs, changed ones take theirs.
        var refs = _refs;
        foreach (var (slot, was) in _entries)
        {
            if (!carried.ContainsKey(slot))
            {
                foreach (var be in was.Compiled.Backends)
                {
                    refs[_index[be]]--;
                }
            }
        }
        var fresh = new List<XlbBackend>();
        var freshRefs = new Dictionary<XlbBackend, int>();
        foreach (var item in changed)
        {
            foreach (var be in compiled[item.Slot].Backends)
            {
                if (_index.TryGetValue(be, out var idx))
                {
                    refs[idx]++;
                }
                else if (freshRefs.TryGetValue(be, out var n))
                {
                    freshRefs[be] = n + 1;
                }
                else
                {
                    freshRefs[be] = 1;
                    fresh.Add(be);
                }
            }
        }

        // 3. Backends no listener lists leave (their index rests for a revision); new ones take
        // the lowest index that neither this revision nor the one before holds, and only when
        // those run out an index at rest.
        var backends = (before as Slots<XlbBackend> ?? Slots<XlbBackend>.From(before)).Edit();
        for (var i = 0; i < before.Count; i++)
        {
            if (refs[i + 1] == 0 && before[i].Family != 0)
            {
                _index.Remove(before[i]);
                backends[i] = default;
            }
        }
        _fresh = [];
        var next = 1;
        var pass = 0;
        foreach (var be in fresh)
        {
            while ((next <= backends.Count && backends[next - 1].Family != 0) || (pass == 0 && next <= before.Count && before[next - 1].Family != 0))
            {
                next++;
                if (next >= _capacity.BackendSlots && pass == 0)
                {
                    (next, pass) = (1, 1);
                }
            }
            if (next > _capacity.MaxBackends)
            {
                throw new ConfigTooLargeException($"{_index.Count + fresh.Count - _fresh.Count} distinct backends; the data plane holds {_capacity.MaxBackends} (agent option --max-backends)");
            }
            if (next > backends.Count)
            {
                backends.Count = next;
            }
            backends[next - 1] = be;
            _index[be] = next;
            _fresh.Add((be, next));
        }
        var count = backends.Count;
        while (count > 0 && backends[count - 1].Family == 0)
        {
            count--;
        }
        backends.Count = count;
        var newRefs = refs;
        if (newRefs.Length != count + 1)
        {
            newRefs = new int[count + 1];
            Array.Copy(refs, newRefs, Math.Min(refs.Length, count + 1));
        }
        foreach (var (be, idx) in _fresh)
        {
            newRefs[idx] = freshRefs[be];
        }

        // 4. Services: of two listeners on one VIP:port/protocol the later by name holds it; ids and ring spans carry over.
        var keyOf = new Dictionary<string, XlbSvcKey>(items.Count, StringComparer.Ordinal);
        foreach (var item in items)
        {
            keyOf[item.Slot] = carried.TryGetValue(item.Slot, out var e) ? e.Key : KeyOf(item.Listener);
        }
        var byName = items.OrderBy(i => i.Name, StringComparer.Ordinal).ThenBy(i => i.Occurrence).ToList();
        var holderOf = new Dictionary<XlbSvcKey, string>(items.Count);
        foreach (var item in byName)
        {
            holderOf[keyOf[item.Slot]] = item.Slot;
        }
        var holders = byName.Where(i => holderOf[keyOf[i.Slot]] == i.Slot).ToList();
        var spans = RingSpans.Assign([.. holders.Select(h => (keyOf[h.Slot], CompiledOf(h.Slot).SpanLength))], previousServices, _capacity.RingSlots);

        var vips = new Dictionary<XlbVipKey, uint>(spec.Vips.Count);
        var filter = new FilterImage();
        foreach (var vip in spec.Vips)
        {
            var address = IPAddress.Parse(vip.Address);
            // The node that holds a VIP answers ARP for it; a standby stays quiet until it takes over.
            vips[new XlbVipKey { Addr = Addr16.From(address), Family = Net.Family(address), Gen = generation }] =
                vip.Role == VipRole.Active ? XlbAbi.VipActive : 0;
            filter.AddVip(address);
        }
        var taken = new HashSet<uint>();
        foreach (var h in holders)
        {
            if (previousServices?.GetValueOrDefault(keyOf[h.Slot]).Id is > 0 and <= XlbAbi.MaxServices and var id)
            {
                taken.Add(id);
            }
        }
        var nextFree = 1u;
        var services = new Dictionary<XlbSvcKey, XlbSvc>(holders.Count);
        var options = new Dictionary<uint, XlbSvcOpts>(holders.Count);
        var snat = new Dictionary<uint, XlbSnat>();
        foreach (var h in holders)
        {
            var key = keyOf[h.Slot];
            var c = CompiledOf(h.Slot);
            filter.AddVip(key.Vip.ToAddress(key.Family));
            if (c.Mode == XlbAbi.ModeDnat)
            {
                // Replies of DNAT backends come through this node with the client as destination.
                foreach (var be in c.Backends)
                {
                    filter.AddReplySource(be.Addr.ToAddress(be.Family));
                }
            }
            var id = previousServices?.GetValueOrDefault(key).Id ?? 0;
            if (id is 0 or > XlbAbi.MaxServices)
            {
                while (taken.Contains(nextFree))
                {
                    nextFree++;
                }
                id = nextFree;
                taken.Add(id);
            }
            var affinitySeconds = AffinitySeconds(h.Listener);
            var sources = c.Mode == XlbAbi.ModeFullNat ? SourceAddresses(h.Listener, key.Family) : [];
            if (sources.Count > 0)
            {
                snat[id] = XlbSnat.Of(sources);
                foreach (var source in sources)
                {
                    // Replies come back to them.
                    filter.AddVip(source.ToAddress(key.Family));
                }
            }
            services[key with { Gen = generation }] = new XlbSvc
            {
                Id = id, RingOff = (uint)spans.Offsets[key], RingSize = (uint)c.SpanLength, Mode = c.Mode, Algo = c.Algo,
                // LeastConn: the service's flows count toward their backend's open flows. Affinity:
                // a client's new flows follow its last one (the timeout is in xlb_svc_opts). Source
                // addresses: new flows take one of them or the VIP (xlb_snat).
                Flags = (ushort)((c.Algo == XlbAbi.AlgoLeastConn ? XlbAbi.SvcCountFlows : 0) | (affinitySeconds > 0 ? XlbAbi.SvcAffinity : 0)
                    | (sources.Count > 0 ? XlbAbi.SvcSnat : 0)),
            };
            options[id] = new XlbSvcOpts
            {
                AffinityS = affinitySeconds,
                LogSample = h.Listener.ConnectionLog is { Enabled: true } log ? (uint)Math.Max(1, log.SampleEvery) : 0,
                IdleS = h.Listener.IdleTimeout is { } idle ? (uint)Math.Clamp(Math.Ceiling(idle.Value.TotalSeconds), IdleTimeout.Min.TotalSeconds, IdleTimeout.Max.TotalSeconds) : 0,
            };
        }
        if (services.Count > XlbAbi.MaxServices)
        {
            throw new ConfigTooLargeException($"{services.Count} listeners; the data plane holds {XlbAbi.MaxServices}");
        }

        // 5. The ring, from the last one: spans whose service left or moved are cleared, and a
        // span is filled when its listener changed, moved, or took the service from another.
        var ring = previousRing is not null && _spare is { } spare && spare.Length == spans.End && !ReferenceEquals(spare, previousRing) ? spare : new uint[spans.End];
        _spare = null;
        if (previousRing is not null && previousServices is not null)
        {
            var copied = Math.Min(previousRing.Length, ring.Length);
            Array.Copy(previousRing, ring, copied);
            ring.AsSpan(copied).Clear();
            foreach (var (key, was) in previousServices)
            {
                if (!services.TryGetValue(key with { Gen = generation }, out var now) || now.RingOff != was.RingOff || now.RingSize != was.RingSize)
                {
                    var from = (int)Math.Min(was.RingOff, (uint)ring.Length);
                    ring.AsSpan(from, (int)Math.Min(was.RingSize, (uint)(ring.Length - from))).Clear();
                }
            }
        }
        Filled = 0;
        foreach (var h in holders)
        {
            var key = keyOf[h.Slot];
            var svc = services[key with { Gen = generation }];
            if (previousRing is not null && carried.TryGetValue(h.Slot, out var e) && e.Holds &&
                previousServices?.GetValueOrDefault(key) is { } was && was.RingOff == svc.RingOff && was.RingSize == svc.RingSize)
            {
                continue;
            }
            var c = CompiledOf(h.Slot);
            var indexes = new uint[c.Backends.Length];
            for (var i = 0; i < indexes.Length; i++)
            {
                indexes[i] = (uint)_index[c.Backends[i]];
            }
            var offset = (int)svc.RingOff;
            for (var slot = 0; slot < c.Table.Length; slot++)
            {
                ring[offset + slot] = indexes[c.Table[slot]];
            }
            c.Tail.CopyTo(ring, offset + c.Table.Length);
            Filled++;
        }

        var holding = holders.Select(h => h.Slot).ToHashSet(StringComparer.Ordinal);
        var entries = new Dictionary<string, Entry>(items.Count, StringComparer.Ordinal);
        foreach (var item in items)
        {
            entries[item.Slot] = new Entry(item.Listener, keyOf[item.Slot], CompiledOf(item.Slot), holding.Contains(item.Slot));
        }
        _entries = entries;
        _refs = newRefs;
        return new MapImage(generation, vips, services, backends.Done(), ring, filter) { Capacity = _capacity, ServiceOptions = options, Snat = snat };
    }

    /// <summary>A listener's ClientIP affinity timeout in whole seconds (at least one); 0: no affinity.</summary>
    /// <summary>A FullNAT listener's source addresses beyond its VIP, as the program keeps them (the operator has checked them: of the VIP's family, at most <see cref="XlbAbi.SnatAddrs"/>).</summary>
    private static List<Addr16> SourceAddresses(Listener listener, byte family)
    {
        var result = new List<Addr16>(listener.SourceAddresses?.Count ?? 0);
        foreach (var text in listener.SourceAddresses ?? [])
        {
            if (!IPAddress.TryParse(text, out var address) || Net.Family(address) != family)
            {
                throw new FormatException($"listener {listener.Name}: source address '{text}' is not an address of its VIP's family");
            }
            result.Add(Addr16.From(address));
        }
        if (result.Count > XlbAbi.SnatAddrs)
        {
            throw new FormatException($"listener {listener.Name}: {result.Count} source addresses; the data plane holds {XlbAbi.SnatAddrs}");
        }
        return result;
    }

    private static uint AffinitySeconds(Listener listener) =>
        listener.Affinity is { Mode: AffinityMode.ClientIP } a ? (uint)Math.Clamp(Math.Ceiling(a.Timeout.Value.TotalSeconds), 1, uint.MaxValue) : 0;

    private static List<Item> Items(IReadOnlyList<Listener> listeners)
    {
        var items = new List<Item>(listeners.Count);
        Dictionary<string, int>? seen = null;
        var names = new HashSet<string>(listeners.Count, StringComparer.Ordinal);
        foreach (var listener in listeners)
        {
            var occurrence = 0;
            if (!names.Add(listener.Name))
            {
                seen ??= new(StringComparer.Ordinal);
                occurrence = seen[listener.Name] = seen.GetValueOrDefault(listener.Name) + 1;
            }
            items.Add(new Item(occurrence == 0 ? listener.Name : $"{listener.Name}\0{occurrence}", listener.Name, occurrence, listener));
        }
        return items;
    }

    /// <summary>Whether two listeners program the same: everything the maps hold of a listener, and nothing else.</summary>
    public static bool SameForDataPlane(Listener a, Listener b)
    {
        if (ReferenceEquals(a, b))
        {
            return true;
        }
        if (a.Port != b.Port || a.Protocol != b.Protocol || a.Algorithm != b.Algorithm || a.MaglevTableSize != b.MaglevTableSize || a.NatMode != b.NatMode ||
            a.DsrEncapsulation != b.DsrEncapsulation || !string.Equals(a.Vip, b.Vip, StringComparison.Ordinal) || a.Backends.Count != b.Backends.Count)
        {
            return false;
        }
        for (var i = 0; i < a.Backends.Count; i++)
        {
            var (x, y) = (a.Backends[i], b.Backends[i]);
            if (x.Port != y.Port || x.Weight != y.Weight || x.Draining != y.Draining || !string.Equals(x.Address, y.Address, StringComparison.Ordinal))
            {
                return false;
            }
        }
        return true;
    }

    private static XlbSvcKey KeyOf(Listener listener)
    {
        var vip = IPAddress.Parse(listener.Vip);
        return new XlbSvcKey
        {
            Vip = Addr16.From(vip),
            PortBe = Net.Be(listener.Port),
            Proto = MapImage.ProtoOf(listener.Protocol),
            Family = Net.Family(vip),
        };
    }
}
