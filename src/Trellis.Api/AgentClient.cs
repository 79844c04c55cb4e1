using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Trellis.Api;

/// <summary>No agent answers on the socket.</summary>
public sealed class AgentUnavailableException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>The agent refused a request; <see cref="Exception.Message"/> is its explanation.</summary>
public sealed class AgentRequestException(HttpStatusCode status, string message) : Exception(message)
{
    public HttpStatusCode Status { get; } = status;
}

public static class AgentPaths
{
    public const string DefaultNode = "node1";
    public static string RunDir(string node) => $"/run/trellis/{node}";
    public static string Socket(string node) => $"{RunDir(node)}/agent.sock";
    /// <summary>Hubble's observer gRPC API (Hubble's own default is /var/run/cilium/hubble.sock).</summary>
    public static string HubbleSocket(string node) => $"{RunDir(node)}/hubble.sock";
    public static string StateDir(string node) => $"/var/lib/trellis/{node}";
    public static string PinRoot(string node) => $"/sys/fs/bpf/trellis/{node}";
}

/// <summary>Client of the agent API over its unix socket.</summary>
public sealed class AgentClient : IDisposable
{
    public static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    private readonly HttpClient _http;
    public string SocketPath { get; }

    public AgentClient(string socketPath, TimeSpan? timeout = null)
    {
        SocketPath = socketPath;
        var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (_, ct) =>
            {
                var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await s.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), ct);
                    return new NetworkStream(s, ownsSocket: true);
                }
                catch
                {
                    s.Dispose();
                    throw;
                }
            },
        };
        _http = new HttpClient(handler) { BaseAddress = new Uri("http://agent/"), Timeout = timeout ?? TimeSpan.FromSeconds(60) };
    }

    public Task<StatusResponse> StatusAsync(CancellationToken ct = default) => GetAsync<StatusResponse>("v1/status", ct);
    public Task<List<EndpointDto>> EndpointsAsync(CancellationToken ct = default) => GetAsync<List<EndpointDto>>("v1/endpoints", ct);
    public Task<List<IdentityDto>> IdentitiesAsync(CancellationToken ct = default) => GetAsync<List<IdentityDto>>("v1/identities", ct);
    public Task<List<PolicyDto>> PoliciesAsync(CancellationToken ct = default) => GetAsync<List<PolicyDto>>("v1/policies", ct);
    public Task<List<NamespaceDto>> NamespacesAsync(CancellationToken ct = default) => GetAsync<List<NamespaceDto>>("v1/namespaces", ct);

    public Task<NamespaceDto> PutNamespaceAsync(NamespaceRequest r, CancellationToken ct = default) => SendAsync<NamespaceDto>(HttpMethod.Put, "v1/namespaces", r, ct);
    public Task<AllocateIpResponse> AllocateIpAsync(string owner, CancellationToken ct = default) => SendAsync<AllocateIpResponse>(HttpMethod.Post, "v1/ipam/allocate", new AllocateIpRequest(owner), ct);
    public Task ReleaseIpAsync(string owner, CancellationToken ct = default) => SendAsync<object>(HttpMethod.Post, "v1/ipam/release", new AllocateIpRequest(owner), ct);
    public Task<EndpointDto> PutEndpointAsync(CreateEndpointRequest r, CancellationToken ct = default) => SendAsync<EndpointDto>(HttpMethod.Put, "v1/endpoints", r, ct);
    public Task DeleteEndpointAsync(string ns, string pod, CancellationToken ct = default) => SendAsync<object>(HttpMethod.Delete, $"v1/endpoints/{Uri.EscapeDataString(ns)}/{Uri.EscapeDataString(pod)}", null, ct);
    public Task<PolicyDetailDto> GetPolicyAsync(string? ns, string name, CancellationToken ct = default) =>
        GetAsync<PolicyDetailDto>($"v1/policies/{Uri.EscapeDataString(ns ?? "-")}/{Uri.EscapeDataString(name)}", ct);
    public Task<EndpointDetailDto> GetEndpointAsync(string ns, string pod, CancellationToken ct = default) =>
        GetAsync<EndpointDetailDto>($"v1/endpoints/{Uri.EscapeDataString(ns)}/{Uri.EscapeDataString(pod)}", ct);
    public Task<TraceResponse> TraceAsync(TraceRequest r, CancellationToken ct = default) => SendAsync<TraceResponse>(HttpMethod.Post, "v1/policy/trace", r, ct);
    public Task<EndpointDto> SetEndpointLabelsAsync(string ns, string pod, IReadOnlyDictionary<string, string?> labels, CancellationToken ct = default) =>
        SendAsync<EndpointDto>(HttpMethod.Put, $"v1/endpoints/{Uri.EscapeDataString(ns)}/{Uri.EscapeDataString(pod)}/labels", new EndpointLabelsRequest(labels), ct);
    public Task<List<ServiceDto>> ServicesAsync(CancellationToken ct = default) => GetAsync<List<ServiceDto>>("v1/services", ct);
    public Task<List<ServiceDto>> ApplyServicesAsync(string fileName, string yaml, CancellationToken ct = default) =>
        SendAsync<List<ServiceDto>>(HttpMethod.Post, "v1/services", new ApplyServiceRequest(fileName, yaml), ct);
    public Task DeleteEndpointSliceAsync(string ns, string name, CancellationToken ct = default) =>
        SendAsync<object>(HttpMethod.Delete, $"v1/endpointslices/{Uri.EscapeDataString(ns)}/{Uri.EscapeDataString(name)}", null, ct);
    public Task SetBackendStateAsync(string address, string state, CancellationToken ct = default) =>
        SendAsync<object>(HttpMethod.Put, "v1/backends/state", new BackendStateRequest(address, state), ct);
    public Task<EndpointDto> TerminateEndpointAsync(string ns, string pod, CancellationToken ct = default) =>
        SendAsync<EndpointDto>(HttpMethod.Post, $"v1/endpoints/{Uri.EscapeDataString(ns)}/{Uri.EscapeDataString(pod)}/terminate", null, ct);
    public Task DeleteServiceAsync(string ns, string name, CancellationToken ct = default) =>
        SendAsync<object>(HttpMethod.Delete, $"v1/services/{Uri.EscapeDataString(ns)}/{Uri.EscapeDataString(name)}", null, ct);
    public Task<ConfigDto> ConfigAsync(CancellationToken ct = default) => GetAsync<ConfigDto>("v1/config", ct);
    public Task<ConfigDto> SetConfigAsync(ConfigDto c, CancellationToken ct = default) => SendAsync<ConfigDto>(HttpMethod.Put, "v1/config", c, ct);
    public Task<EndpointDto> SetEndpointConfigAsync(string ns, string pod, EndpointConfigDto c, CancellationToken ct = default) =>
        SendAsync<EndpointDto>(HttpMethod.Put, $"v1/endpoints/{Uri.EscapeDataString(ns)}/{Uri.EscapeDataString(pod)}/config", c, ct);
    public Task<ApplyPolicyResponse> ApplyPolicyAsync(string fileName, string yaml, CancellationToken ct = default) => SendAsync<ApplyPolicyResponse>(HttpMethod.Post, "v1/policies", new ApplyPolicyRequest(fileName, yaml), ct);
    public Task DeletePolicyAsync(string? ns, string name, CancellationToken ct = default) => SendAsync<object>(HttpMethod.Delete, $"v1/policies/{Uri.EscapeDataString(ns ?? "-")}/{Uri.EscapeDataString(name)}", null, ct);

    /// <summary>Recent flows (and, with follow, new ones as they arrive) as a stream.</summary>
    public IAsyncEnumerable<FlowDto> FlowsAsync(int? last, bool follow, string? verdict, CancellationToken ct = default) =>
        FlowsAsync(new FlowsRequest { Last = last ?? 100, Follow = follow, Whitelist = verdict is null ? null : [new FlowFilterDto { Verdict = [verdict] }] }, ct);

    /// <summary>Raw datapath events from now on, until cancelled.</summary>
    public async IAsyncEnumerable<MonitorEventDto> MonitorAsync(IReadOnlyList<string>? types, [EnumeratorCancellation] CancellationToken ct = default)
    {
        using var req = new HttpRequestMessage(HttpMethod.Get, "v1/monitor" + (types is { Count: > 0 } ? "?type=" + Uri.EscapeDataString(string.Join(',', types)) : ""));
        using var resp = await Send(req, HttpCompletionOption.ResponseHeadersRead, ct);
        await EnsureOk(resp, ct);
        await using var stream = await resp.Content.ReadAsStreamAsync(ct);
        using var reader = new StreamReader(stream);
        while (await ReadLine(reader, ct) is { } line)
        {
            if (line.Length == 0) continue;
            yield return JsonSerializer.Deserialize<MonitorEventDto>(line, Json)!;
        }
    }

    /// <summary>Flows that pass the request's filters: the last N, then (Follow) new ones until cancelled.</summary>
    public async IAsyncEnumerable<FlowDto> FlowsAsync(FlowsRequest request, [EnumeratorCancellation] CancellationToken ct = default)
    {
        using var req = new HttpRequestMessage(HttpMethod.Post, "v1/flows") { Content = JsonContent.Create(request, options: Json) };
        using var resp = await Send(req, HttpCompletionOption.ResponseHeadersRead, ct);
        await EnsureOk(resp, ct);
        await using var stream = await resp.Content.ReadAsStreamAsync(ct);
        using var reader = new StreamReader(stream);
        while (await ReadLine(reader, ct) is { } line)
        {
            if (line.Length == 0) continue;
            yield return JsonSerializer.Deserialize<FlowDto>(line, Json)!;
        }
    }

    private async Task<string?> ReadLine(StreamReader reader, CancellationToken ct)
    {
        try
        {
            return await reader.ReadLineAsync(ct);
        }
        catch (Exception e) when (e is IOException or HttpRequestException)
        {
            throw new AgentUnavailableException($"the Trellis agent at {SocketPath} went away mid-stream ({e.Message}); is it running? ('trellis status')", e);
        }
    }

    private async Task<T> GetAsync<T>(string path, CancellationToken ct)
    {
        using var req = new HttpRequestMessage(HttpMethod.Get, path);
        using var resp = await Send(req, HttpCompletionOption.ResponseContentRead, ct);
        await EnsureOk(resp, ct);
        return (await resp.Content.ReadFromJsonAsync<T>(Json, ct))!;
    }


    private async Task<T> SendAsync<T>(HttpMethod method, string path, object? body, CancellationToken ct)
    {
        using var req = new HttpRequestMessage(method, path);
        if (body is not null) req.Content = JsonContent.Create(body, body.GetType(), options: Json);
        using var resp = await Send(req, HttpCompletionOption.ResponseContentRead, ct);
        await EnsureOk(resp, ct);
        if (typeof(T) == typeof(object) || resp.Content.Headers.ContentLength == 0) return default!;
        return (await resp.Content.ReadFromJsonAsync<T>(Json, ct))!;
    }

    private async Task<HttpResponseMessage> Send(HttpRequestMessage req, HttpCompletionOption opt, CancellationToken ct)
    {
        try
        {
            return await _http.SendAsync(req, opt, ct);
        }
        catch (HttpRequestException e) when (e.InnerException is SocketException se)
        {
            var why = se.SocketErrorCode switch
            {
                SocketError.AddressNotAvailable or SocketError.ConnectionRefused => "nothing listens on it",
                SocketError.AccessDenied => "permission denied (the socket is root-only: run as root)",
                _ => se.Message,
            };
            if (!File.Exists(SocketPath)) why = "the socket does not exist";
            throw new AgentUnavailableException($"cannot reach the Trellis agent at {SocketPath}: {why}. Start one with 'trellis lab up -f FILE' (or 'trellis agent').", e);
        }
        catch (Exception e) when (e is HttpRequestException or IOException)
        {
            // The agent died mid-request (connection reset, response cut short).
            throw new AgentUnavailableException($"the Trellis agent at {SocketPath} closed the connection ({e.Message}); is it running? ('trellis status')", e);
        }
    }

    private static async Task EnsureOk(HttpResponseMessage resp, CancellationToken ct)
    {
        if (resp.IsSuccessStatusCode) return;
        string message;
        try
        {
            var err = await resp.Content.ReadFromJsonAsync<ErrorResponse>(Json, ct);
            message = err?.Error ?? resp.ReasonPhrase ?? resp.StatusCode.ToString();
        }
        catch (JsonException)
        {
            message = $"{(int)resp.StatusCode} {resp.ReasonPhrase}";
        }
        throw new AgentRequestException(resp.StatusCode, message);
    }

    public void Dispose() => _http.Dispose();
}
