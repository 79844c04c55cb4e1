using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Trellis.Agent.Flows;
using Trellis.Api;
using Trellis.Datapath;

namespace Trellis.Agent.Api;

/// <summary>The agent API: JSON over HTTP/1.1 on a unix socket only root can open.</summary>
public static class ApiServer
{
    public static WebApplication Build(NodeAgent agent, string socketPath, ILoggerProvider? logs = null)
    {
        var dir = Path.GetDirectoryName(socketPath)!;
        Directory.CreateDirectory(dir);
        File.SetUnixFileMode(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        if (File.Exists(socketPath)) File.Delete(socketPath); // a stale socket of a dead agent

        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        if (logs is not null) builder.Logging.AddProvider(logs);
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.WebHost.ConfigureKestrel(k => k.ListenUnixSocket(socketPath));
        builder.Services.ConfigureHttpJsonOptions(o =>
        {
            o.SerializerOptions.PropertyNamingPolicy = AgentClient.Json.PropertyNamingPolicy;
            o.SerializerOptions.DefaultIgnoreCondition = AgentClient.Json.DefaultIgnoreCondition;
        });
        var app = builder.Build();

        app.Use(async (ctx, next) =>
        {
            try
            {
                await next(ctx);
            }
            catch (AgentException e)
            {
                await Error(ctx, e.Status, e.Message);
            }
            catch (BadHttpRequestException e)
            {
                await Error(ctx, 400, $"malformed request: {e.Message}");
            }
            catch (JsonException e)
            {
                await Error(ctx, 400, $"malformed JSON: {e.Message}");
            }
            catch (Exception e) when (e is DatapathException or Trellis.Bpf.BpfException)
            {
                await Error(ctx, 500, e.Message);
            }
            catch (Trellis.Agent.State.Etcd.EtcdException e)
            {
                await Error(ctx, 503, $"the cluster store is unavailable: {e.Message}");
            }
        });

        app.MapGet("/v1/status", () => agent.Status());
        app.MapGet("/v1/namespaces", () => agent.Namespaces());
        app.MapPut("/v1/namespaces", (NamespaceRequest r) => agent.PutNamespace(Require(r)));
        app.MapPost("/v1/ipam/allocate", (AllocateIpRequest r) => agent.AllocateIp(Require(r).Owner));
        app.MapPost("/v1/ipam/release", (AllocateIpRequest r) => { agent.ReleaseIp(Require(r).Owner); return Results.NoContent(); });
        app.MapGet("/v1/endpoints", () => agent.Endpoints());
        app.MapPut("/v1/endpoints", (CreateEndpointRequest r) => agent.PutEndpoint(Require(r)));
        app.MapDelete("/v1/endpoints/{ns}/{pod}", (string ns, string pod) => { agent.DeleteEndpoint(ns, pod); return Results.NoContent(); });
        app.MapPut("/v1/endpoints/{ns}/{pod}/config", (string ns, string pod, EndpointConfigDto c) => agent.SetEndpointConfig(ns, pod, Require(c)));
        app.MapGet("/v1/endpoints/{ns}/{pod}", (string ns, string pod) => agent.GetEndpoint(ns, pod));
        app.MapGet("/v1/policies/{ns}/{name}", (string ns, string name) => agent.GetPolicy(ns == "-" ? null : ns, name));
        app.MapPost("/v1/policy/trace", (TraceRequest r) => agent.Trace(Require(r)));
        app.MapPut("/v1/endpoints/{ns}/{pod}/labels", (string ns, string pod, EndpointLabelsRequest r) => agent.SetEndpointLabels(ns, pod, Require(r).Labels));
        app.MapGet("/v1/services", () => agent.ServiceList());
        app.MapPost("/v1/services", (ApplyServiceRequest r) => agent.ApplyServices(Require(r)));
        app.MapDelete("/v1/services/{ns}/{name}", (string ns, string name) => { agent.DeleteService(ns, name); return Results.NoContent(); });
        app.MapDelete("/v1/endpointslices/{ns}/{name}", (string ns, string name) => { agent.DeleteEndpointSlice(ns, name); return Results.NoContent(); });
        app.MapPut("/v1/backends/state", (BackendStateRequest r) => { agent.SetBackendState(Require(r)); return Results.NoContent(); });
        app.MapPost("/v1/endpoints/{ns}/{pod}/terminate", (string ns, string pod) => agent.TerminateEndpoint(ns, pod));
        app.MapGet("/v1/config", () => agent.Config());
        app.MapPut("/v1/config", (ConfigDto c) => agent.SetConfig(Require(c)));
        app.MapGet("/v1/identities", () => agent.IdentityList());
        app.MapGet("/v1/policies", () => agent.PolicyList());
        app.MapPost("/v1/policies", (ApplyPolicyRequest r) => agent.ApplyPolicy(Require(r)));
        app.MapDelete("/v1/policies/{ns}/{name}", (string ns, string name) =>
        {
            agent.DeletePolicy(ns == "-" ? null : ns, name);
            return Results.NoContent();
        });
        app.MapGet("/v1/flows", (HttpContext ctx) => StreamFlows(ctx, agent));
        app.MapPost("/v1/flows", (HttpContext ctx, FlowsRequest r) => StreamFlows(ctx, agent, Require(r)));
        app.MapGet("/v1/monitor", (HttpContext ctx) => StreamMonitor(ctx, agent));
        app.MapFallback((HttpContext ctx) => Error(ctx, 404, $"no API endpoint {ctx.Request.Method} {ctx.Request.Path}"));

        app.Lifetime.ApplicationStarted.Register(() =>
            File.SetUnixFileMode(socketPath, UnixFileMode.UserRead | UnixFileMode.UserWrite));
        return app;
    }

    private static T Require<T>(T? body) where T : class =>
        body ?? throw AgentException.BadRequest("request body is missing");

    private static Task Error(HttpContext ctx, int status, string message)
    {
        if (ctx.Response.HasStarted) return Task.CompletedTask;
        ctx.Response.StatusCode = status;
        return ctx.Response.WriteAsJsonAsync(new ErrorResponse(message), AgentClient.Json);
    }

    /// <summary>GET /v1/flows?last=N&amp;follow=true&amp;verdict=V: the simple form of <see cref="StreamFlows(HttpContext, NodeAgent, FlowsRequest)"/>.</summary>
    private static Task StreamFlows(HttpContext ctx, NodeAgent agent)
    {
        var q = ctx.Request.Query;
        int last = 100;
        if (q.TryGetValue("last", out var l) && (!int.TryParse(l, out last) || last < 0))
            throw AgentException.BadRequest($"last: '{l}' is not a non-negative number");
        bool follow = q.TryGetValue("follow", out var f) && f == "true";
        var filter = q.TryGetValue("verdict", out var v) ? new FlowFilterDto { Verdict = [v.ToString()] } : null;
        return StreamFlows(ctx, agent, new FlowsRequest { Last = last, Follow = follow, Whitelist = filter is null ? null : [filter] });
    }

    /// <summary>Raw datapath events as they arrive (NDJSON), optionally only some types (?type=drop,trace,audit,translate).</summary>
    private static async Task StreamMonitor(HttpContext ctx, NodeAgent agent)
    {
        string[] known = ["drop", "trace", "audit", "translate"];
        var types = ctx.Request.Query.TryGetValue("type", out var t) ? t.ToString().Split(',', StringSplitOptions.RemoveEmptyEntries) : known;
        foreach (var x in types)
            if (!known.Contains(x)) throw AgentException.BadRequest($"type: '{x}' is not one of {string.Join(", ", known)}");
        ctx.Response.ContentType = "application/x-ndjson";
        var ct = ctx.RequestAborted;
        var (_, live) = agent.Flows.Subscribe(0);
        using (live)
        {
            await ctx.Response.Body.FlushAsync(ct);
            try
            {
                await foreach (var s in live.Channel.Reader.ReadAllAsync(ct))
                {
                    var ev = FlowConverter.ToMonitor(s);
                    if (!types.Contains(ev.Type)) continue;
                    await JsonSerializer.SerializeAsync(ctx.Response.Body, ev, AgentClient.Json, ct);
                    await ctx.Response.Body.WriteAsync("\n"u8.ToArray(), ct);
                    await ctx.Response.Body.FlushAsync(ct);
                }
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                // client went away
            }
        }
    }

    /// <summary>Streams flows as NDJSON: the last N that pass the filters (and the time window), then, with Follow,
    /// every new one that passes until the client goes away.</summary>
    private static async Task StreamFlows(HttpContext ctx, NodeAgent agent, FlowsRequest r)
    {
        if (FlowSelection.Validate(r) is { } problem) throw AgentException.BadRequest(problem);

        ctx.Response.ContentType = "application/x-ndjson";
        var ct = ctx.RequestAborted;
        async Task Write(FlowDto dto)
        {
            await JsonSerializer.SerializeAsync(ctx.Response.Body, dto, AgentClient.Json, ct);
            await ctx.Response.Body.WriteAsync("\n"u8.ToArray(), ct);
        }

        using var flows = FlowSelection.Open(agent.Flows, agent.Options.Node, r);
        foreach (var dto in flows.Backlog)
            await Write(dto);
        if (!flows.Follows) return;
        await ctx.Response.Body.FlushAsync(ct);
        try
        {
            await foreach (var dto in flows.FollowAsync(ct))
            {
                await Write(dto);
                await ctx.Response.Body.FlushAsync(ct);
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            // client went away
        }
    }
}
