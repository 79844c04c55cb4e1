namespace Trellis.Api;

// JSON messages of the agent API (HTTP/1.1 over a unix socket). Field names are the wire names (camelCase).

public sealed record ErrorResponse(string Error);

public sealed record FeatureDto(string Name, bool Supported);
public sealed record ProgramDto(string Name, uint Id, ulong RunTimeNs, ulong RunCount, int AttachedInterfaces);
public sealed record MapDto(string Name, int Entries, uint MaxEntries);

public sealed record StatusResponse(
    string Node,
    string Version,
    DateTimeOffset StartedAt,
    string Kernel,
    string PodCidr,
    string RouterIp,
    string PinRoot,
    string StateDir,
    IReadOnlyList<FeatureDto> Features,
    int Endpoints,
    int Identities,
    int Policies,
    IReadOnlyList<ProgramDto> Programs,
    IReadOnlyList<MapDto> Maps,
    ulong PacketsForwarded,
    ulong PacketsDropped,
    ulong PacketsAudited,
    ulong ServiceConnectsTranslated,
    ulong ServiceConnectsRefused,
    int Services,
    bool PolicyAuditMode,
    ulong EventsLost,
    long FlowsSeen,
    long PolicyMapWrites,
    int FlowStoreSize,
    int FlowStoreCapacity,
    IReadOnlyList<DeviceDto>? Devices = null,
    ulong ServicePacketsTranslated = 0,
    ProxyStatusDto? Proxy = null,
    bool SocketAcceleration = false,
    int AcceleratedSockets = 0, // spliced same-node TCP sockets (two per connection)
    ClusterStatusDto? Cluster = null);

/// <summary>Where the agent keeps its state: "embedded" (one node, a file store) or "etcd" (a cluster). For etcd: the
/// cluster name, the endpoints, whether the last probe reached it (<paramref name="Error"/> says why not, since
/// <paramref name="UnreachableSince"/>), and the nodes registered in it (alive: their lease is renewed), as of
/// <paramref name="NodesAsOf"/> (the last successful probe).</summary>
public sealed record ClusterStatusDto(string Store, string? Cluster, IReadOnlyList<string> Endpoints, bool Healthy, string? Error,
    DateTimeOffset? UnreachableSince, IReadOnlyList<ClusterNodeDto> Nodes, DateTimeOffset? NodesAsOf);

public sealed record ClusterNodeDto(string Name, string PodCidr, string RouterIp, DateTimeOffset StartedAt, bool Self);

/// <summary>The node's L7 proxy: where it listens (0 = disabled), its pid (0 = not running), how often it was
/// restarted, the L7 records received and those the proxy reported lost (queue full or no agent listening).</summary>
public sealed record ProxyStatusDto(int Port, int Pid, long Restarts, long Records, long RecordsLost, int L7Endpoints);

/// <summary>A node device the per-packet load balancer (NodePort) is attached to, with its addresses.</summary>
public sealed record DeviceDto(string Name, int Ifindex, IReadOnlyList<string> Addresses);

public sealed record NamespaceRequest(string Name, IReadOnlyDictionary<string, string> Labels);
public sealed record NamespaceDto(string Name, IReadOnlyDictionary<string, string> Labels);

public sealed record AllocateIpRequest(string Owner);
public sealed record AllocateIpResponse(string Ip);

public sealed record ContainerPortDto(string? Name, int Port, string Protocol);

public sealed record CreateEndpointRequest(
    string Namespace,
    string Pod,
    IReadOnlyDictionary<string, string> Labels,
    string Ip,
    string Ifname,
    string NetnsPath,
    string CgroupPath,
    IReadOnlyList<ContainerPortDto>? Ports = null,
    string? ProxyVisibility = null, // the pod's policy.cilium.io/proxy-visibility annotation
    // The pod interface's MAC and the host veth's (as a CNI plugin reports them, and Cilium's endpoint API takes
    // them): with both, pods of the node deliver to this one straight into its interface; without, through the
    // node's routing.
    string? Mac = null,
    string? HostMac = null);

public sealed record EndpointDto(
    uint Id,
    string Namespace,
    string Pod,
    string Ip,
    uint Identity,
    IReadOnlyDictionary<string, string> Labels,
    bool IngressEnforced,
    bool EgressEnforced,
    string Ifname,
    int Ifindex,
    string State,
    string NetnsPath,
    string CgroupPath,
    bool PolicyAuditMode = false);

/// <summary>Node-wide settings; in a change request a null field is left as it is.</summary>
/// <param name="FlowEvents">Whether the datapath reports flows at all (off only to measure what they cost).</param>
public sealed record ConfigDto(bool? PolicyAuditMode = null, bool? FlowEvents = null, bool? SocketAcceleration = null);
public sealed record EndpointConfigDto(bool PolicyAuditMode);

public sealed record IdentityDto(uint Id, IReadOnlyDictionary<string, string> Labels, int Endpoints);

public sealed record ApplyPolicyRequest(string FileName, string Yaml);
public sealed record ApplyPolicyResponse(IReadOnlyList<string> Applied, IReadOnlyList<string>? Warnings = null);
public sealed record PolicyDto(uint Id, string Kind, string Name, string? Namespace, int Rules, string Source, DateTimeOffset AppliedAt);

public sealed record FlowEndpointDto(
    string Ip,
    int Port,
    uint Identity,
    string? Namespace,
    string? Pod,
    IReadOnlyList<string> Labels);

public sealed record FlowDto(
    DateTimeOffset Time,
    string Node,
    string Verdict,
    string? DropReason,
    string Direction,
    bool IsReply,
    FlowEndpointDto Source,
    FlowEndpointDto Destination,
    string Protocol,
    IReadOnlyList<string> TcpFlags,
    string? PolicyName,
    string? PolicyNamespace,
    int Length,
    string? Service = null, // "ns/name:port" when the flow was load-balanced through a service
    L7RecordDto? L7 = null);

/// <summary>The L7 part of a flow the node's proxy handled (HTTP) or a DNS exchange; absent for L4-only flows.</summary>
/// <param name="Type">REQUEST or RESPONSE, as in Hubble.</param>
public sealed record L7RecordDto(string Type, long LatencyNs, HttpRecordDto? Http = null, DnsRecordDto? Dns = null);
public sealed record HttpRecordDto(string Method, string Url, int Code, string Protocol);
public sealed record DnsRecordDto(string Query, IReadOnlyList<string> Ips, int Rcode, IReadOnlyList<string> QTypes);

public sealed record PolicyDetailDto(PolicyDto Policy, string Yaml);

/// <summary>One line of an endpoint's installed policy: who may (or may not) reach whom on what.</summary>
public sealed record PolicyEntryDto(string Direction, uint PeerIdentity, IReadOnlyList<string> PeerLabels, string Protocol,
    string Ports, string Verdict, string? PolicyName, string? PolicyNamespace);

/// <summary>A rule of a policy that selects the endpoint, and where it was written.</summary>
public sealed record SelectingRuleDto(string Kind, string Name, string? Namespace, int RuleIndex, string? Description,
    bool Ingress, bool Egress, bool IngressDefaultDeny, bool EgressDefaultDeny, string Source);

public sealed record EndpointDetailDto(EndpointDto Endpoint, IReadOnlyList<PolicyEntryDto> Policy, IReadOnlyList<SelectingRuleDto>? SelectedBy = null);

public sealed record TraceRequest(string? FromNamespace, string? FromPod, string? FromIp, string? ToNamespace, string? ToPod, string? ToIp,
    int Port, string Protocol);

/// <summary>One side's decision: the source's egress or the destination's ingress.</summary>
public sealed record TraceStep(string Direction, string Endpoint, bool Applies, bool Enforced, bool Allowed, string Verdict, string? PolicyName,
    string? PolicyNamespace, string? Rule);

public sealed record TraceResponse(bool Allowed, uint SourceIdentity, uint DestinationIdentity, IReadOnlyList<TraceStep> Steps);

/// <summary>Label changes: a value sets the label, null removes it.</summary>
public sealed record EndpointLabelsRequest(IReadOnlyDictionary<string, string?> Labels);

/// <param name="Pod">Who the backend is: "ns/pod", or "slice ns/name" for an EndpointSlice address.</param>
/// <param name="State">active, terminating, quarantined, maintenance or not-ready.</param>
/// <param name="InUse">Whether the ClusterIP frontend hands it new connections now.</param>
public sealed record ServiceBackendDto(string Pod, string Ip, int Port, string State, bool Local = true, bool InUse = true);
public sealed record ServicePortDto(string? Name, int Port, string Protocol, string TargetPort, IReadOnlyList<ServiceBackendDto> Backends, int? NodePort = null);
public sealed record ServiceDto(string Namespace, string Name, string Type, string ClusterIp, string SessionAffinity, IReadOnlyList<ServicePortDto> Ports,
    IReadOnlyDictionary<string, string>? Selector, string InternalTrafficPolicy = "Cluster", string? ExternalTrafficPolicy = null,
    string Algorithm = "random");
/// <summary>Sets a backend address's state on every service that has it (quarantined, maintenance, or active to clear).</summary>
public sealed record BackendStateRequest(string Address, string State);
public sealed record ApplyServiceRequest(string FileName, string Yaml);

/// <summary>One raw datapath event, as the kernel sent it (trellis monitor): no names, no policy lookup.</summary>
/// <param name="Type">drop, trace (a new flow passed), audit or translate (socket load balancing).</param>
public sealed record MonitorEventDto(DateTimeOffset Time, string Type, string? Reason, uint Endpoint, uint Ifindex, uint SrcIdentity,
    uint DstIdentity, string Source, int SourcePort, string Destination, int DestinationPort, string Protocol, IReadOnlyList<string> TcpFlags,
    string Direction, int Length, uint PolicyId, uint FrontendId, ulong CgroupId);
