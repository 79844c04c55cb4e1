using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Microsoft.Extensions.Hosting;
using Trellis.Agent.Flows;
using Trellis.Api;
using H = Trellis.Hubble;

namespace Trellis.Agent.Observer;

/// <summary>Hubble's observer.Observer service over the agent's flow store: GetFlows, ServerStatus, GetNodes and
/// GetNamespaces; GetAgentEvents and GetDebugEvents answer UNIMPLEMENTED.</summary>
public sealed class ObserverService(NodeAgent agent, ObserverEndpoint endpoint, IHostApplicationLifetime lifetime) : H.Observer.ObserverBase
{
    /// <summary>What GetNodes reports as this node's address and where clients reach it.</summary>
    public string Address => endpoint.Address;

    public static string Version => typeof(ObserverService).Assembly.GetName().Version is { } v
        ? $"{v.Major}.{v.Minor}.{Math.Max(0, v.Build)}+trellis"
        : "0.0.0+trellis";

    public override async Task GetFlows(H.GetFlowsRequest request, IServerStreamWriter<H.GetFlowsResponse> responseStream, ServerCallContext context)
    {
        var node = agent.Options.Node;
        var (flows, passes, mask) = Prepare(request, node);
        // A followed stream ends when the client goes or the agent stops (shutdown does not wait for it).
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, lifetime.ApplicationStopping);
        var ct = stop.Token;
        var lookups = Lookups();

        H.GetFlowsResponse Response(FlowDto dto)
        {
            var flow = HubbleFlows.ToHubble(dto, lookups);
            if (mask is not null)
            {
                var masked = new H.Flow();
                mask.Merge(flow, masked);
                flow = masked;
            }
            return new H.GetFlowsResponse { Flow = flow, NodeName = node, Time = Timestamp.FromDateTimeOffset(dto.Time) };
        }

        using var selection = FlowSelection.Open(agent.Flows, node, flows, passes, oldestFirst: request.First);
        foreach (var dto in selection.Backlog)
            await responseStream.WriteAsync(Response(dto), ct);
        if (!selection.Follows) return;
        // Subscribed: tell the client the stream is live (headers), so it can act knowing no new flow will be missed.
        await context.WriteResponseHeadersAsync(new Metadata());
        long missed = 0;
        try
        {
            await foreach (var dto in selection.FollowAsync(ct))
            {
                if (selection.Missed > missed)
                {
                    // Flows this stream could not take in time: say how many, as Hubble does.
                    var lost = new H.LostEvent { Source = H.LostEventSource.ObserverEventsQueue, NumEventsLost = (ulong)(selection.Missed - missed) };
                    missed = selection.Missed;
                    await responseStream.WriteAsync(new H.GetFlowsResponse { LostEvents = lost, NodeName = node, Time = Timestamp.FromDateTimeOffset(DateTimeOffset.UtcNow) }, ct);
                }
                await responseStream.WriteAsync(Response(dto), ct);
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            // the client went away
        }
    }

    /// <summary>Checks a GetFlows request and turns it into the flow store's request and a pass test. Throws
    /// <see cref="RpcException"/> INVALID_ARGUMENT naming what is wrong.</summary>
    public static (FlowsRequest Request, Func<FlowDto, bool> Passes, Google.Protobuf.WellKnownTypes.FieldMask? Mask) Prepare(H.GetFlowsRequest request, string node)
    {
        static RpcException Invalid(string m) => new(new Status(StatusCode.InvalidArgument, m));
        if (request.First && request.Follow) throw Invalid("first cannot be combined with follow (first reads the oldest flows, follow waits for new ones)");
        List<CompiledFlowFilter?> whitelist, blacklist;
        try
        {
            whitelist = HubbleFilters.Compile(request.Whitelist, "whitelist", node);
            blacklist = HubbleFilters.Compile(request.Blacklist, "blacklist", node);
        }
        catch (UnsupportedFilterException e)
        {
            throw Invalid(e.Message);
        }
        DateTimeOffset? since = request.Since?.ToDateTimeOffset(), until = request.Until?.ToDateTimeOffset();
        // number 0 means no limit, except for a followed stream without a start time: then only new flows.
        int last = request.Number > 0 ? (int)Math.Min(request.Number, int.MaxValue)
            : request.Follow && since is null ? 0 : int.MaxValue;
        var flows = new FlowsRequest { Last = last, Follow = request.Follow, Since = since, Until = until };
        if (FlowSelection.Validate(flows) is { } problem) throw Invalid(problem);

#pragma warning disable CS0612 // the experimental field mask is deprecated by Hubble in favour of field_mask; older clients still send it
        var mask = request.FieldMask ?? request.Experimental?.FieldMask;
#pragma warning restore CS0612
        if (mask is { Paths.Count: 0 }) mask = null;
        if (mask is not null && !Google.Protobuf.WellKnownTypes.FieldMask.IsValid(H.Flow.Descriptor, mask))
            throw Invalid($"field_mask {string.Join(",", mask.Paths)} names a field flow.Flow does not have (in Trellis' copy of Hubble's API)");
        return (flows, dto => HubbleFilters.Passes(dto, whitelist, blacklist), mask);
    }

    public override Task<H.ServerStatusResponse> ServerStatus(H.ServerStatusRequest request, ServerCallContext context)
    {
        var store = agent.Flows;
        return Task.FromResult(new H.ServerStatusResponse
        {
            NumFlows = (ulong)store.Count,
            MaxFlows = (ulong)store.Capacity,
            SeenFlows = (ulong)store.Written,
            UptimeNs = UptimeNs(),
            NumConnectedNodes = 1,
            NumUnavailableNodes = 0,
            Version = Version,
            FlowsRate = FlowsRate(store, DateTimeOffset.UtcNow),
        });
    }

    /// <summary>Flows per second over the last minute (as far as the store still holds them).</summary>
    public static double FlowsRate(FlowStore store, DateTimeOffset now)
    {
        var from = now - TimeSpan.FromMinutes(1);
        return store.Recent(store.Capacity).Count(f => f.Time >= from && f.Time <= now) / 60.0;
    }

    public override Task<H.GetNodesResponse> GetNodes(H.GetNodesRequest request, ServerCallContext context)
    {
        var store = agent.Flows;
        var response = new H.GetNodesResponse();
        response.Nodes.Add(new H.Node
        {
            Name = agent.Options.Node,
            Version = Version,
            Address = endpoint.Address,
            State = H.NodeState.NodeConnected,
            Tls = new H.TLS { Enabled = false },
            UptimeNs = UptimeNs(),
            NumFlows = (ulong)store.Count,
            MaxFlows = (ulong)store.Capacity,
            SeenFlows = (ulong)store.Written,
        });
        return Task.FromResult(response);
    }

    /// <summary>The namespaces of the flows in the store (Hubble: namespaces with flows in the last hour).</summary>
    public override Task<H.GetNamespacesResponse> GetNamespaces(H.GetNamespacesRequest request, ServerCallContext context)
    {
        var since = DateTimeOffset.UtcNow - TimeSpan.FromHours(1);
        var names = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var f in agent.Flows.Recent(agent.Flows.Capacity))
        {
            if (f.Time < since) continue;
            if (f.Source?.Namespace is { Length: > 0 } s) names.Add(s);
            if (f.Destination?.Namespace is { Length: > 0 } d) names.Add(d);
        }
        var response = new H.GetNamespacesResponse();
        response.Namespaces.AddRange(names.Select(n => new H.Namespace { Cluster = HubbleFilters.ClusterName, Namespace_ = n }));
        return Task.FromResult(response);
    }

    public override Task GetAgentEvents(H.GetAgentEventsRequest request, IServerStreamWriter<H.GetAgentEventsResponse> responseStream, ServerCallContext context) =>
        throw new RpcException(new Status(StatusCode.Unimplemented, "GetAgentEvents is not implemented by Trellis: the agent emits no agent events (use GetFlows)"));

    public override Task GetDebugEvents(H.GetDebugEventsRequest request, IServerStreamWriter<H.GetDebugEventsResponse> responseStream, ServerCallContext context) =>
        throw new RpcException(new Status(StatusCode.Unimplemented, "GetDebugEvents is not implemented by Trellis: the datapath emits no debug events (use GetFlows, or `trellis monitor` for raw events)"));

    private ulong UptimeNs() => (ulong)Math.Max(0, (DateTimeOffset.UtcNow - agent.StartedAt).Ticks * 100);

    /// <summary>Endpoint ids and policy kinds from the agent, read once per stream and again (at most once a second)
    /// when a flow names a pod or policy the snapshot does not know.</summary>
    private HubbleLookups Lookups()
    {
        Dictionary<(string, string), uint> endpoints = [];
        Dictionary<(string?, string), string> kinds = [];
        var refreshed = DateTime.MinValue;
        void Refresh()
        {
            if (DateTime.UtcNow - refreshed < TimeSpan.FromSeconds(1)) return;
            refreshed = DateTime.UtcNow;
            endpoints = agent.Endpoints().ToDictionary(e => (e.Namespace, e.Pod), e => e.Id);
            kinds = [];
            foreach (var p in agent.PolicyList()) kinds.TryAdd((p.Namespace, p.Name), p.Kind);
        }
        Refresh();
        return new HubbleLookups(
            (ns, pod) =>
            {
                if (!endpoints.TryGetValue((ns, pod), out var id)) { Refresh(); endpoints.TryGetValue((ns, pod), out id); }
                return id == 0 ? null : id;
            },
            (ns, name) =>
            {
                if (!kinds.TryGetValue((ns, name), out var kind)) { Refresh(); kinds.TryGetValue((ns, name), out kind); }
                return kind;
            });
    }
}

/// <summary>Where the observer listens, for GetNodes: "unix:///run/trellis/NODE/hubble.sock" or the TCP address.</summary>
public sealed record ObserverEndpoint(string Address);
