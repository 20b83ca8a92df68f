using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Xlb.Agent;
using Xlb.Agent.Core;
using Xlb.Cli;
using Xlb.Crds.Serialization;
using Xlb.DataPlane;
using Xlb.Operator;

var manifestsOption = new Option<DirectoryInfo>("--manifests") { Description = "Folder of XLB manifests (LoadBalancerPool, VipShard, PortMapping, Node)", Required = true };
var operatorManifestsOption = new Option<DirectoryInfo?>("--manifests") { Description = "Standalone mode: the folder of XLB manifests (LoadBalancerPool, VipShard, PortMapping, Node). Without it the operator runs against the cluster." };
var outOption = new Option<DirectoryInfo?>("--out") { Description = "Standalone mode: folder for node configs (<node>.yaml) and status.yaml" };
var nodeOption = new Option<string[]>("--node") { Description = "An LB node name, in addition to Node objects in the manifests", AllowMultipleArgumentsPerToken = false };
var onceOption = new Option<bool>("--once") { Description = "Standalone mode: render once and exit" };
var kubeconfigOption = new Option<string?>("--kubeconfig") { Description = "Cluster mode: kubeconfig file (default: $KUBECONFIG, in-cluster service account, ~/.kube/config)" };
var leaseNamespaceOption = new Option<string>("--lease-namespace") { Description = "Cluster mode: namespace of the agents' liveness Leases and of the leader-election Lease", DefaultValueFactory = _ => "xlb-system" };
var leaderElectOption = new Option<bool>("--leader-elect") { Description = "Cluster mode: elect one active replica through a Lease", DefaultValueFactory = _ => true };

var operatorListenOption = new Option<string?>("--listen") { Description = "Cluster mode: ADDRESS:PORT for /healthz, /readyz and /metrics (e.g. 0.0.0.0:9471)" };
var operatorCommand = new Command("operator", "Run the operator: against the cluster, or (--manifests) standalone from a folder") { operatorManifestsOption, outOption, nodeOption, onceOption, kubeconfigOption, leaseNamespaceOption, leaderElectOption, operatorListenOption };
operatorCommand.SetAction(async (parse, ct) =>
{
    // The kubeconfig is read while the loggers are made: both are start-up time a restart waits for.
    var manifests = parse.GetValue(operatorManifestsOption);
    var loading = manifests is null ? Task.Run(() => Xlb.Kube.KubeConfigLoader.Load(parse.GetValue(kubeconfigOption)), ct) : null;
    using var logs = Logs();
    if (manifests is null)
    {
        Xlb.Kube.KubeConnection connection;
        try
        {
            connection = await loading!;
        }
        catch (Xlb.Kube.KubeConfigException e)
        {
            await Console.Error.WriteLineAsync($"xlb operator: no cluster to talk to: {e.Message}\n(run standalone with --manifests DIR --out DIR)");
            return 1;
        }
        using var client = new Xlb.Kube.KubeClient(connection, logger: logs.CreateLogger("kube"));
        var ns = parse.GetValue(leaseNamespaceOption)!;
        var options = new ClusterOperatorOptions
        {
            AgentLeaseNamespace = ns,
            LeaderElection = parse.GetValue(leaderElectOption) ? new Xlb.Kube.LeaderElectionOptions { Namespace = ns, LeaseName = "xlb-operator" } : null,
        };
        System.Net.IPEndPoint? listen = null;
        if (parse.GetValue(operatorListenOption) is { } text && !System.Net.IPEndPoint.TryParse(text, out listen))
        {
            await Console.Error.WriteLineAsync($"--listen {text}: expected ADDRESS:PORT");
            return 2;
        }
        var op = new ClusterOperator(client, options, logs.CreateLogger<ClusterOperator>(), TimeProvider.System);
        // The informers start listing while the endpoints start; if those fail, the operator stops.
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(Terminate(ct));
        var run = op.RunAsync(stop.Token);
        Microsoft.AspNetCore.Builder.WebApplication? endpoints;
        try
        {
            endpoints = listen is null ? null : await OperatorEndpoints.StartAsync(listen, op, stop.Token);
        }
        catch
        {
            await stop.CancelAsync();
            await run.ContinueWith(_ => { }, TaskScheduler.Default);
            throw;
        }
        await using (endpoints)
        {
            await run;
        }
        return 0;
    }
    if (parse.GetValue(outOption) is not { } outDir)
    {
        await Console.Error.WriteLineAsync("xlb operator: --manifests needs --out");
        return 2;
    }
    var standalone = new StandaloneOperator(
        new OperatorOptions { ManifestDir = manifests.FullName, OutputDir = outDir.FullName, Nodes = parse.GetValue(nodeOption) ?? [] },
        logs.CreateLogger<StandaloneOperator>(),
        TimeProvider.System);
    if (parse.GetValue(onceOption))
    {
        return standalone.ReconcileOnce().Problems.Count == 0 ? 0 : 1;
    }
    await standalone.RunAsync(Terminate(ct));
    return 0;
});

var nodeConfigOption = new Option<FileInfo?>("--node-config") { Description = "Standalone mode: the XlbNodeConfig file this agent applies. Without it the agent runs against the cluster" };
var agentNodeOption = new Option<string?>("--node") { Description = "Cluster mode: this node's name (default: $NODE_NAME); the agent applies the XlbNodeConfig of that name", DefaultValueFactory = _ => Environment.GetEnvironmentVariable("NODE_NAME") };
var leaseRenewOption = new Option<double>("--lease-renew") { Description = "Cluster mode: seconds between renewals of the node's liveness Lease (keep it well inside the shards' detection window)", DefaultValueFactory = _ => 0.5 };
var interfaceOption = new Option<string[]>("--interface") { Description = "An interface to attach XDP to (repeat for several)", Required = true };
var statusOption = new Option<FileInfo?>("--status") { Description = "Where to write the agent's status (default: <node-config>.status.yaml)" };
var genericOption = new Option<bool>("--allow-generic-xdp") { Description = "Fall back to generic XDP where the driver has no native XDP" };
var objectOption = new Option<FileInfo?>("--xdp-object") { Description = "The XDP object file (default: xdp/xlb.o beside this binary)" };
var bpffsOption = new Option<string>("--bpffs") { Description = "bpf filesystem for pinned maps (mounted there if it is /sys/fs/bpf and not mounted)", DefaultValueFactory = _ => Xlb.Agent.Bpf.Bpffs.Default };
var instanceOption = new Option<string>("--instance") { Description = "Name of this data plane under <bpffs>/xlb/; a restarted agent with the same name adopts its maps", DefaultValueFactory = _ => "default" };
var detachOption = new Option<bool>("--detach-on-exit") { Description = "On exit, detach XDP and remove the pinned maps (default: leave both, traffic continues)" };
var shutdownTimeoutOption = new Option<double>("--shutdown-timeout") { Description = "Seconds of the shutdown window on SIGTERM: readiness fails and new TCP connections get RST while existing ones continue (0: SIGTERM is a transparent restart)" };
var shutdownFileOption = new Option<FileInfo?>("--shutdown-file") { Description = "Start the drain when this file appears (a preStop hook creates it); end it when it goes" };
var listenOption = new Option<string?>("--listen") { Description = "ADDRESS:PORT for /healthz, /readyz and /metrics (e.g. 0.0.0.0:9470)" };
var encapSourceOption = new Option<string[]>("--encap-source") { Description = "Outer source address of DSR IPIP packets: this node's address toward the backends, once per family (default: the VIP)" };
var announceOption = new Option<int>("--announce-count") { Description = "Gratuitous ARP / unsolicited neighbour advertisement rounds, one second apart, when this node takes a VIP (0: none)", DefaultValueFactory = _ => 3 };
var flowLogOption = new Option<string?>("--flow-log") { Description = "Connection log: append a JSON line for each sampled flow that begins or closes to this file (\"-\": standard output). Without it, only mappings with a connectionLog of their own are logged, to standard output" };
var flowSampleOption = new Option<uint>("--flow-sample") { Description = "With --flow-log: log one flow in N, chosen by a hash of the flow (1: every flow)", DefaultValueFactory = _ => 1 };
var flowSyncListenOption = new Option<string>("--flow-sync-listen") { Description = "ADDRESS:PORT where this agent takes flows from the other nodes of its shards with flowSync (every peer sends to this port); opened only when the node config names flow-sync peers", DefaultValueFactory = _ => $"[::]:{Xlb.Agent.Core.SyncedFlows.DefaultPort}" };
var flowSyncIntervalOption = new Option<double>("--flow-sync-interval") { Description = "Seconds between two walks of the flow table that send new and busy flows to the flow-sync peers", DefaultValueFactory = _ => 1.0 };
var flowSyncFullResendOption = new Option<double>("--flow-sync-full-resend") { Description = "Seconds between two walks that send every flow, idle ones too, to the flow-sync peers (a peer heard again after a silence gets them at once)", DefaultValueFactory = _ => Xlb.Agent.Core.SyncedFlows.FullResendEvery.TotalSeconds };
var flowSyncKeyFileOption = new Option<FileInfo?>("--flow-sync-key-file") { Description = "A file holding the key (at least 16 bytes; a trailing newline is not part of it) that authenticates flow-sync datagrams, the same on every node: mount a Secret here. Read again at every walk: a new key is used at once, and the one before is still taken. An absent file: unauthenticated, with a warning, until it appears" };
var newFlowCapOption = new Option<uint>("--new-flow-cap") { Description = "SYN-flood relief: new flows of DSR services (Maglev or source hash) one CPU tracks per second; past it they are forwarded by the consistent hash alone, without state (0: track every flow)", DefaultValueFactory = _ => DataPlaneOptions.DefaultNewFlowCap };
var noFlowCacheOption = new Option<bool>("--no-flow-cache") { Description = "Look every packet's flow up in the flow table, without the per-CPU flow cache that serves an established flow's packets from a copy at most one jiffy old" };
var icmpRateOption = new Option<uint>("--icmp-rate") { Description = "ICMP \"too big\" answers (path MTU discovery) one CPU sends per second; past it the packets they would answer are dropped (0: no limit)", DefaultValueFactory = _ => DataPlaneOptions.DefaultIcmpRate };
var maxBackendsOption = new Option<int>("--max-backends") { Description = "Distinct backends one configuration holds; sizes the backend maps (rounded up to a power of two, less one)", DefaultValueFactory = _ => DataPlaneCapacity.Default.MaxBackends };
var ringSlotsOption = new Option<int>("--ring-slots") { Description = "Maglev table slots one configuration holds, all services together (each service takes 1021)", DefaultValueFactory = _ => DataPlaneCapacity.Default.RingSlots };
var otlpEndpointOption = new Option<string?>("--otlp-endpoint") { Description = "Push metrics over OTLP to this collector URL (default: $OTEL_EXPORTER_OTLP_ENDPOINT; none: no push)", DefaultValueFactory = _ => Environment.GetEnvironmentVariable("OTEL_EXPORTER_OTLP_ENDPOINT") };
var otlpProtocolOption = new Option<string>("--otlp-protocol") { Description = "grpc or http/protobuf (default: $OTEL_EXPORTER_OTLP_PROTOCOL, else grpc)", DefaultValueFactory = _ => Environment.GetEnvironmentVariable("OTEL_EXPORTER_OTLP_PROTOCOL") ?? "grpc" };
var otlpHeadersOption = new Option<string?>("--otlp-headers") { Description = "Headers for every export, KEY=VALUE,KEY=VALUE, values percent-encoded (default: $OTEL_EXPORTER_OTLP_HEADERS)", DefaultValueFactory = _ => Environment.GetEnvironmentVariable("OTEL_EXPORTER_OTLP_HEADERS") };
var otlpHeadersFileOption = new Option<FileInfo?>("--otlp-headers-file") { Description = "A file of headers in the same form (or one per line), read again when it changes: mount a Secret here" };
var otlpIntervalOption = new Option<double>("--otlp-interval") { Description = "Seconds between exports", DefaultValueFactory = _ => 60 };
var natPortsOption = new Option<string>("--nat-ports") { Description = "FullNAT source-port range toward backends, MIN-MAX", DefaultValueFactory = _ => "40000-59999" };
// Flow idle timeouts, as ipvsadm --set: seconds, from 1 to a week.
var defaultTimeouts = new FlowTimeouts();
var tcpTimeoutOption = new Option<uint>("--tcp-timeout") { Description = "Seconds an established TCP flow may be idle before it is forgotten", DefaultValueFactory = _ => (uint)defaultTimeouts.TcpEstablished.TotalSeconds };
var tcpNewTimeoutOption = new Option<uint>("--tcp-new-timeout") { Description = "Seconds a TCP flow may wait for its handshake to complete", DefaultValueFactory = _ => (uint)defaultTimeouts.TcpNew.TotalSeconds };
var tcpClosingTimeoutOption = new Option<uint>("--tcp-closing-timeout") { Description = "Seconds a TCP flow is kept after a FIN or RST", DefaultValueFactory = _ => (uint)defaultTimeouts.TcpClosing.TotalSeconds };
var udpTimeoutOption = new Option<uint>("--udp-timeout") { Description = "Seconds a UDP flow may be idle. A FullNAT UDP flow holds its source port toward its backend that long: with the default range, a service takes about 20,000 / this many new flows a second per backend (a DNS service wants a few seconds)", DefaultValueFactory = _ => (uint)defaultTimeouts.Udp.TotalSeconds };

var agentCommand = new Command("agent", "Run the node agent: apply this node's XlbNodeConfig (from the cluster, or --node-config FILE) to XDP") { nodeConfigOption, agentNodeOption, kubeconfigOption, leaseNamespaceOption, leaseRenewOption, interfaceOption, statusOption, genericOption, objectOption, natPortsOption, encapSourceOption, bpffsOption, instanceOption, detachOption, shutdownTimeoutOption, shutdownFileOption, listenOption, announceOption, flowLogOption, flowSampleOption, flowSyncListenOption, flowSyncIntervalOption, flowSyncFullResendOption, flowSyncKeyFileOption, newFlowCapOption, noFlowCacheOption, icmpRateOption, maxBackendsOption, ringSlotsOption, otlpEndpointOption, otlpProtocolOption, otlpHeadersOption, otlpHeadersFileOption, otlpIntervalOption, tcpTimeoutOption, tcpNewTimeoutOption, tcpClosingTimeoutOption, udpTimeoutOption };
agentCommand.SetAction(async (parse, ct) =>
{
    using var logs = Logs();
    var range = parse.GetValue(natPortsOption)!.Split('-');
    if (range.Length != 2 || !ushort.TryParse(range[0], CultureInfo.InvariantCulture, out var min) || !ushort.TryParse(range[1], CultureInfo.InvariantCulture, out var max) || min > max || min < 1024)
    {
        await Console.Error.WriteLineAsync("--nat-ports must be MIN-MAX with 1024 <= MIN <= MAX <= 65535");
        return 2;
    }
    System.Net.IPAddress? encapSource = null, encapSource6 = null;
    foreach (var encap in parse.GetValue(encapSourceOption) ?? [])
    {
        if (!System.Net.IPAddress.TryParse(encap, out var address))
        {
            await Console.Error.WriteLineAsync($"--encap-source {encap}: expected an IPv4 or IPv6 address");
            return 2;
        }
        ref var slot = ref address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? ref encapSource : ref encapSource6;
        if (slot is not null)
        {
            await Console.Error.WriteLineAsync($"--encap-source {encap}: at most one address per family");
            return 2;
        }
        slot = address;
    }
    var (maxBackends, ringSlots) = (parse.GetValue(maxBackendsOption), parse.GetValue(ringSlotsOption));
    if (maxBackends is < 1 or >= DataPlaneCapacity.MaxSlots || ringSlots is < 1 or > DataPlaneCapacity.MaxSlots)
    {
        await Console.Error.WriteLineAsync($"--max-backends and --ring-slots must be between 1 and {DataPlaneCapacity.MaxSlots - 1}");
        return 2;
    }
    var options = new AgentOptions
    {
        NodeConfigPath = parse.GetValue(nodeConfigOption)?.FullName,
        StatusPath = parse.GetValue(statusOption)?.FullName,
        Interfaces = parse.GetValue(interfaceOption)!,
        AllowGenericXdp = parse.GetValue(genericOption),
        ObjectPath = parse.GetValue(objectOption)?.FullName ?? XdpDataPlane.DefaultObjectPath,
        DataPlane = new DataPlaneOptions
        {
            NatPortMin = min,
            NatPortMax = max,
            EncapSource = encapSource,
            EncapSource6 = encapSource6,
            PinRoot = Xlb.Agent.Bpf.Bpffs.PinRoot(parse.GetValue(bpffsOption)!, parse.GetValue(instanceOption)!),
            FlowEventSample = parse.GetValue(flowLogOption) is null ? 0 : Math.Max(1, parse.GetValue(flowSampleOption)),
            NewFlowCap = parse.GetValue(newFlowCapOption),
            FlowCache = !parse.GetValue(noFlowCacheOption),
            IcmpRate = parse.GetValue(icmpRateOption),
            Capacity = DataPlaneCapacity.For(maxBackends, ringSlots),
            Timeouts = new FlowTimeouts
            {
                TcpEstablished = TimeSpan.FromSeconds(parse.GetValue(tcpTimeoutOption)),
                TcpNew = TimeSpan.FromSeconds(parse.GetValue(tcpNewTimeoutOption)),
                TcpClosing = TimeSpan.FromSeconds(parse.GetValue(tcpClosingTimeoutOption)),
                Udp = TimeSpan.FromSeconds(parse.GetValue(udpTimeoutOption)),
            },
        },
        FlowLogPath = parse.GetValue(flowLogOption),
        DetachOnExit = parse.GetValue(detachOption),
        ShutdownTimeout = TimeSpan.FromSeconds(Math.Max(0, parse.GetValue(shutdownTimeoutOption))),
        ShutdownFile = parse.GetValue(shutdownFileOption)?.FullName,
        AnnounceCount = Math.Max(0, parse.GetValue(announceOption)),
    };
    foreach (var timeout in new[] { tcpTimeoutOption, tcpNewTimeoutOption, tcpClosingTimeoutOption, udpTimeoutOption })
    {
        var seconds = parse.GetValue(timeout);
        if (!Xlb.Crds.IdleTimeout.Allowed(TimeSpan.FromSeconds(seconds)))
        {
            await Console.Error.WriteLineAsync($"{timeout.Name} {seconds}: expected seconds, from {Xlb.Crds.IdleTimeout.Min.TotalSeconds} to {Xlb.Crds.IdleTimeout.Max.TotalSeconds} (a week)");
            return 2;
        }
    }
    if (!System.Net.IPEndPoint.TryParse(parse.GetValue(flowSyncListenOption)!, out var syncListen) || syncListen.Port == 0)
    {
        await Console.Error.WriteLineAsync($"--flow-sync-listen {parse.GetValue(flowSyncListenOption)}: expected ADDRESS:PORT");
        return 2;
    }
    if (parse.GetValue(flowSyncIntervalOption) is not (> 0 and <= 3600) and var syncInterval)
    {
        await Console.Error.WriteLineAsync($"--flow-sync-interval {syncInterval}: expected seconds, more than 0 and at most 3600");
        return 2;
    }
    if (parse.GetValue(flowSyncFullResendOption) is not (>= 1 and <= 86400) and var fullResend)
    {
        await Console.Error.WriteLineAsync($"--flow-sync-full-resend {fullResend}: expected seconds, from 1 to 86400");
        return 2;
    }
    options = options with
    {
        FlowSyncListen = syncListen,
        FlowSyncInterval = TimeSpan.FromSeconds(parse.GetValue(flowSyncIntervalOption)),
        FlowSyncFullResend = TimeSpan.FromSeconds(parse.GetValue(flowSyncFullResendOption)),
    };
    if (parse.GetValue(flowSyncKeyFileOption) is { } keyFile)
    {
        try
        {
            if (FlowSyncKeyFile.Read(keyFile.FullName) is null)
            {
                await Console.Error.WriteLineAsync($"warning: --flow-sync-key-file {keyFile.FullName}: no such file; flow-sync datagrams are not authenticated until it appears");
            }
        }
        catch (FormatException e)
        {
            await Console.Error.WriteLineAsync($"--flow-sync-key-file {e.Message}");
            return 2;
        }
        options = options with { FlowSyncKeyFile = keyFile.FullName };
    }
    if (parse.GetValue(listenOption) is { } listen)
    {
        if (!System.Net.IPEndPoint.TryParse(listen, out var endpoint))
        {
            await Console.Error.WriteLineAsync($"--listen {listen}: expected ADDRESS:PORT");
            return 2;
        }
        options = options with { HealthListen = endpoint };
    }
    if (parse.GetValue(otlpEndpointOption) is { Length: > 0 } otlpEndpoint)
    {
        if (!Uri.TryCreate(otlpEndpoint, UriKind.Absolute, out var endpoint) || endpoint.Scheme is not ("http" or "https"))
        {
            await Console.Error.WriteLineAsync($"--otlp-endpoint {otlpEndpoint}: expected an http:// or https:// URL");
            return 2;
        }
        Xlb.Hosting.OtlpProtocol protocol;
        switch (parse.GetValue(otlpProtocolOption))
        {
            case "grpc": protocol = Xlb.Hosting.OtlpProtocol.Grpc; break;
            case "http/protobuf": protocol = Xlb.Hosting.OtlpProtocol.HttpProtobuf; break;
            case var other:
                await Console.Error.WriteLineAsync($"--otlp-protocol {other}: expected grpc or http/protobuf");
                return 2;
        }
        var interval = parse.GetValue(otlpIntervalOption);
        if (interval is < 0.1 or > 86400)
        {
            await Console.Error.WriteLineAsync("--otlp-interval: expected between 0.1 and 86400 seconds");
            return 2;
        }
        Dictionary<string, string> headers;
        try
        {
            headers = Xlb.Hosting.OtlpHeaders.Parse(parse.GetValue(otlpHeadersOption) ?? "", "--otlp-headers");
        }
        catch (FormatException e)
        {
            await Console.Error.WriteLineAsync(e.Message);
            return 2;
        }
        options = options with
        {
            Otlp = new Xlb.Hosting.OtlpOptions
            {
                Endpoint = endpoint,
                Protocol = protocol,
                Headers = headers,
                HeadersFile = parse.GetValue(otlpHeadersFileOption)?.FullName,
                ExportInterval = TimeSpan.FromSeconds(interval),
            },
        };
    }
    Xlb.Kube.KubeClient? client = null;
    if (options.NodeConfigPath is null)
    {
        if (parse.GetValue(agentNodeOption) is not { Length: > 0 } node)
        {
            await Console.Error.WriteLineAsync("xlb agent: cluster mode needs the node's name: --node NAME or $NODE_NAME (or run standalone with --node-config FILE)");
            return 2;
        }
        try
        {
            client = new Xlb.Kube.KubeClient(Xlb.Kube.KubeConfigLoader.Load(parse.GetValue(kubeconfigOption)), logger: logs.CreateLogger("kube"));
        }
        catch (Xlb.Kube.KubeConfigException e)
        {
            await Console.Error.WriteLineAsync($"xlb agent: no cluster to talk to: {e.Message}\n(run standalone with --node-config FILE)");
            return 1;
        }
        options = options with
        {
            Cluster = new ClusterAgentOptions
            {
                NodeName = node,
                LeaseNamespace = parse.GetValue(leaseNamespaceOption)!,
                LeaseRenewInterval = TimeSpan.FromSeconds(Math.Clamp(parse.GetValue(leaseRenewOption), 0.05, 60)),
            },
        };
    }
    using var owned = client;
    var log = logs.CreateLogger<NodeAgent>();
    try
    {
        Xlb.Agent.Bpf.Bpffs.Ensure(parse.GetValue(bpffsOption)!);
        await new NodeAgent(options, log, TimeProvider.System, client).RunAsync(Terminate(ct));
        return 0;
    }
    catch (Exception e) when (e is Xlb.Agent.Bpf.BpfException or FileNotFoundException or FormatException)
    {
        // Start-up fails fast: without the program there is nothing to keep running.
        await Console.Error.WriteLineAsync($"xlb agent: cannot start: {e.Message}");
        return 1;
    }
});

var renderCommand = new Command("render", "Print the node configs the operator would render for a manifests folder") { manifestsOption, nodeOption };
renderCommand.SetAction(parse =>
{
    var dir = parse.GetValue(manifestsOption)!.FullName;
    var outDir = Directory.CreateTempSubdirectory("xlb-render-").FullName;
    try
    {
        using var logs = Logs();
        var plan = new StandaloneOperator(new OperatorOptions { ManifestDir = dir, OutputDir = outDir, Nodes = parse.GetValue(nodeOption) ?? [] }, logs.CreateLogger<StandaloneOperator>(), TimeProvider.System).ReconcileOnce();
        foreach (var config in plan.NodeConfigs)
        {
            Console.Write("---\n" + Manifests.ToYaml(config));
        }
        return plan.Problems.Count == 0 ? 0 : 1;
    }
    finally
    {
        Directory.Delete(outDir, recursive: true);
    }
});

var demoManifests = new Option<DirectoryInfo>("--manifests") { Description = "Demo manifests", DefaultValueFactory = _ => new DirectoryInfo(RepoPaths.Find("examples/demo")) };
var requestsOption = new Option<int>("--requests") { Description = "How many HTTP requests to send", DefaultValueFactory = _ => 300 };
var demoCommand = new Command("demo", "Client, LB and three backends in network namespaces; real traffic through XDP") { demoManifests, requestsOption };
demoCommand.SetAction(async (parse, ct) =>
    await Demo.RunAsync(parse.GetValue(demoManifests)!.FullName, Math.Clamp(parse.GetValue(requestsOption), 1, 100_000), Console.Out, Terminate(ct)));

var crdsOut = new Option<DirectoryInfo>("--out") { Description = "Folder to write the CRDs to", DefaultValueFactory = _ => new DirectoryInfo(RepoPaths.Find("crds")) };
var crdsCheck = new Option<bool>("--check") { Description = "Write nothing; exit 1 when the folder differs from what the types generate" };
var crdsCommand = new Command("crds", "Generate the CustomResourceDefinitions from the C# API types") { crdsOut, crdsCheck };
crdsCommand.SetAction(parse =>
{
    var dir = parse.GetValue(crdsOut)!.FullName;
    var docs = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Xlb.Crds.xml"));
    var stale = 0;
    foreach (var (name, text) in Xlb.Crds.Schema.CrdFiles.Render(docs))
    {
        var path = Path.Combine(dir, name);
        if (File.Exists(path) && File.ReadAllText(path) == text)
        {
            continue;
        }
        stale++;
        if (parse.GetValue(crdsCheck))
        {
            Console.Error.WriteLine($"{path}: differs from the types; run `xlb crds --out {dir}`");
        }
        else
        {
            Directory.CreateDirectory(dir);
            File.WriteAllText(path, text);
            Console.WriteLine($"wrote {path}");
        }
    }
    return parse.GetValue(crdsCheck) && stale > 0 ? 1 : 0;
});

var statusNodeConfig = new Option<FileInfo?>("--node-config") { Description = "The node config the agent applies (standalone): adds listener names, weights, and health from its status file" };
var statusAgentStatus = new Option<FileInfo?>("--agent-status") { Description = "The agent's status file (default: <node-config>.status.yaml)" };
var statusFlows = new Option<bool>("--flows") { Description = "List the flow table's live flows, most recent first" };
var statusFlowFilter = new Option<string?>("--flow") { Description = "Only flows with this client, VIP or backend: ADDRESS, :PORT, ADDRESS:PORT or [IPv6]:PORT (implies --flows)" };
var statusLimit = new Option<int>("--limit") { Description = "At most this many flows", DefaultValueFactory = _ => 100 };
var statusOutput = new Option<string>("--output", "-o") { Description = "table, json or yaml", DefaultValueFactory = _ => "table" };
statusOutput.AcceptOnlyFromAmong("table", "json", "yaml");
var statusCommand = new Command("status", "Show this node's data plane from its pinned maps: VIPs and roles, services, backends, counters, flows")
{
    bpffsOption, instanceOption, statusNodeConfig, statusAgentStatus, statusFlows, statusFlowFilter, statusLimit, statusOutput,
};
statusCommand.SetAction(parse =>
{
    FlowFilter? flows = null;
    var limit = Math.Max(1, parse.GetValue(statusLimit));
    try
    {
        if (parse.GetValue(statusFlowFilter) is { } filter)
        {
            flows = FlowFilter.Parse(filter, limit);
        }
        else if (parse.GetValue(statusFlows))
        {
            flows = new FlowFilter(Limit: limit);
        }
    }
    catch (FormatException e)
    {
        Console.Error.WriteLine($"--flow: {e.Message}");
        return 2;
    }
    var pinRoot = Xlb.Agent.Bpf.Bpffs.PinRoot(parse.GetValue(bpffsOption)!, parse.GetValue(instanceOption)!);
    return StatusCommand.Run(pinRoot, parse.GetValue(statusNodeConfig), parse.GetValue(statusAgentStatus), flows, parse.GetValue(statusOutput)!, Console.Out, Console.Error);
});

var root = new RootCommand("XLB: a Kubernetes L4 load balancer on XDP") { operatorCommand, agentCommand, renderCommand, demoCommand, crdsCommand, statusCommand };
// The agent bounds its own shutdown (the drain window); no forced exit on a timer after SIGTERM or Ctrl-C.
return await root.Parse(args).InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = null });

// XLB_LOG_LEVEL (Trace, Debug, Information, Warning, Error) sets how much is logged; Information by default.
// Logs go to standard error: standard output carries data (the connection log without --flow-log, reports).
static ILoggerFactory Logs() => LoggerFactory.Create(b => b
    .SetMinimumLevel(Enum.TryParse<LogLevel>(Environment.GetEnvironmentVariable("XLB_LOG_LEVEL"), ignoreCase: true, out var level) ? level : LogLevel.Information)
    .AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace)
    .AddSimpleConsole(o =>
    {
        o.SingleLine = true;
        o.TimestampFormat = "HH:mm:ss.fff ";
    }));

// Ctrl-C is handled by System.CommandLine; SIGTERM (what Kubernetes and the demo send) stops us the same way.
static CancellationToken Terminate(CancellationToken ct)
{
    var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
    Signals.Keep(PosixSignalRegistration.Create(PosixSignal.SIGTERM, ctx =>
    {
        ctx.Cancel = true;
        cts.Cancel();
    }));
    return cts.Token;
}
