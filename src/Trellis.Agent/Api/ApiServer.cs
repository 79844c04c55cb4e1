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

    private static async Task StreamFlows(HttpContext ctx, NodeAgent agent)
    {
        var q = ctx.Request.Query;
        int last = 100;
        if (q.TryGetValue("last", out var l) && (!int.TryParse(l, out last) || last < 0))
            throw AgentException.BadRequest($"last: '{l}' is not a non-negative number");
        bool follow = q.TryGetValue("follow", out var f) && f == "true";
        Verdict? verdict = null;
        if (q.TryGetValue("verdict", out var v))
        {
            if (!Enum.TryParse<Verdict>(v, ignoreCase: true, out var parsed) || parsed == Verdict.Unknown)
                throw AgentException.BadRequest($"verdict: '{v}' is not one of FORWARDED, DROPPED, AUDIT, REDIRECTED, ERROR");
            verdict = parsed;
        }
        bool Match(in StoredFlow s) => verdict is null || s.Raw.Verdict == (byte)verdict;

        ctx.Response.ContentType = "application/x-ndjson";
        var node = agent.Options.Node;
        var ct = ctx.RequestAborted;
        async Task Write(StoredFlow s)
        {
            await JsonSerializer.SerializeAsync(ctx.Response.Body, FlowConverter.ToDto(s, node), AgentClient.Json, ct);
            await ctx.Response.Body.WriteAsync("\n"u8.ToArray(), ct);
        }

        if (!follow)
        {
            // "last N" counts matching flows.
            var all = agent.Flows.Recent(agent.Flows.Capacity).Where(s => Match(s)).ToList();
            foreach (var s in all.Skip(Math.Max(0, all.Count - last)))
                await Write(s);
            return;
        }
        var (backlog, live) = agent.Flows.Subscribe(agent.Flows.Capacity);
        using (live)
        {
            var matching = backlog.Where(s => Match(s)).ToList();
            foreach (var s in matching.Skip(Math.Max(0, matching.Count - last)))
                await Write(s);
            await ctx.Response.Body.FlushAsync(ct);
            try
            {
                await foreach (var s in live.Channel.Reader.ReadAllAsync(ct))
                {
                    if (!Match(s)) continue;
                    await Write(s);
                    await ctx.Response.Body.FlushAsync(ct);
                }
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                // client went away
            }
        }
    }
}
