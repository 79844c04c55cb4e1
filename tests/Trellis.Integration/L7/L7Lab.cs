using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using Trellis.Api;
using Trellis.Integration.Infrastructure;
using Trellis.Integration.PolicyLanguage;
using Trellis.Lab;

namespace Trellis.Integration.L7;

/// <summary>What curl got: the status code ("000" when there was no HTTP answer) and the body.</summary>
public sealed record HttpResult(string Code, string Body, ExecResult Exec)
{
    public bool Answered => Code != "000";
    public override string ToString() => $"HTTP {Code}, body '{Body.Trim()}' ({Exec})";
}

/// <summary>
/// A lab for the node's L7 proxy: namespace web with pods server (app: server), client (app: client) and intruder
/// (app: intruder). The server runs real programs, started from files in a directory of this lab's own:
/// nginx (HTTP/1.1 keep-alive on <see cref="Http"/>, <see cref="HttpAnchored"/>, <see cref="HttpHost"/> and
/// <see cref="HttpPlain"/>: every request answers 200 "ok METHOD URI", except /missing, 404; h2c with prior knowledge on
/// <see cref="H2c"/>: 200 "h2 PROTOCOL METHOD URI"), a socat TCP echo on <see cref="Echo"/>, and when asked a python
/// upload server (<see cref="Upload"/>: answers "bytes=N sha256=H") and a python gRPC server (<see cref="Grpc"/>:
/// service pkg.Greeter with methods SayHello and Other). nginx logs "client-ip port method uri protocol" per request.
/// Disposal takes the lab down (which stops the proxy) and removes the files.
/// </summary>
public sealed class L7Lab : IAsyncDisposable
{
    public const int Http = 8080;
    public const int H2c = 8081;
    public const int HttpAnchored = 8083;
    public const int HttpHost = 8084;
    public const int HttpPlain = 8085;
    public const int Upload = 8090;
    public const int Grpc = 9000;
    public const int Echo = 7000;
    public const string Ns = "web";
    public const string Denied = "Access denied";
    public const string L7DropReason = "L7 policy denied";

    public TestLab Lab { get; }
    public string Assets { get; }
    public Pod Server => Lab.Pod(Ns, "server");
    public Pod Client => Lab.Pod(Ns, "client");
    public Pod Intruder => Lab.Pod(Ns, "intruder");
    public string ServerIp { get; private set; } = "";
    public string ClientIp { get; private set; } = "";
    public string IntruderIp { get; private set; } = "";
    public string AccessLog => Path.Combine(Assets, "access.log");
    public string ServerLog => Naming.PodLog(Lab.Node, Ns, "server");
    public string ProxyPidFile => Path.Combine(AgentPaths.RunDir(Lab.Node), "proxy.pid");
    public string ProxyLog => Path.Combine(AgentPaths.RunDir(Lab.Node), "proxy.log");

    private L7Lab(TestLab lab, string assets)
    {
        Lab = lab;
        Assets = assets;
    }

    /// <param name="serverAnnotation">A policy.cilium.io/proxy-visibility value for the server, or null.</param>
    public static async Task<L7Lab> UpAsync(bool upload = false, bool grpc = false, string? serverAnnotation = null,
        [CallerMemberName] string test = "", [CallerFilePath] string file = "")
    {
        var assets = Directory.CreateTempSubdirectory("trellis-l7-").FullName;
        try
        {
            Directory.CreateDirectory(Path.Combine(assets, "tmp"));
            File.WriteAllText(Path.Combine(assets, "nginx.conf"), NginxConf(assets));
            File.WriteAllText(Path.Combine(assets, "upload_server.py"), UploadServer);
            File.WriteAllText(Path.Combine(assets, "grpc_server.py"), GrpcServer);
            File.WriteAllText(Path.Combine(assets, "grpc_client.py"), GrpcClient);
            var lab = await TestLab.UpAsync(LabYaml(assets, upload, grpc, serverAnnotation), test, file);
            var l7 = new L7Lab(lab, assets);
            try
            {
                foreach (var port in new[] { Http, H2c, HttpAnchored, HttpHost, HttpPlain, Echo })
                    await l7.Server.WaitListeningAsync(port);
                if (upload) await l7.Server.WaitListeningAsync(Upload);
                if (grpc) await l7.Server.WaitListeningAsync(Grpc, timeout: TimeSpan.FromSeconds(20));
                l7.ServerIp = await lab.IpAsync(Ns, "server");
                l7.ClientIp = await lab.IpAsync(Ns, "client");
                l7.IntruderIp = await lab.IpAsync(Ns, "intruder");
                await l7.WaitProxyAsync(TimeSpan.FromSeconds(20));
            }
            catch
            {
                await l7.DisposeAsync();
                throw;
            }
            return l7;
        }
        catch
        {
            if (Directory.Exists(assets)) Directory.Delete(assets, recursive: true);
            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            await Lab.DisposeAsync();
        }
        finally
        {
            try { Directory.Delete(Assets, recursive: true); }
            catch (IOException) { }
        }
    }

    // --- the proxy process ---

    /// <summary>The pid in the node's proxy pid file when that process is alive and is this node's trellis-proxy; else 0.</summary>
    public int ProxyPid()
    {
        try
        {
            if (!int.TryParse(File.ReadAllText(ProxyPidFile).Trim(), out var pid) || !Processes.IsRunning(pid)) return 0;
            var argv = File.ReadAllText($"/proc/{pid}/cmdline").Split('\0');
            return argv.Any(a => a.EndsWith("trellis-proxy", StringComparison.Ordinal)) && argv.Contains(Lab.Node) ? pid : 0;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return 0;
        }
    }

    /// <summary>Waits until the agent's proxy runs (it writes its pid file once it listens).</summary>
    public async Task<int> WaitProxyAsync(TimeSpan timeout, int notPid = 0)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            var pid = ProxyPid();
            if (pid != 0 && pid != notPid) return pid;
            await Task.Delay(20);
        }
        throw new Xunit.Sdk.XunitException($"no trellis-proxy (other than pid {notPid}) running for node {Lab.Node} after {timeout.TotalSeconds:0.#} s; " +
            $"proxy log:{Environment.NewLine}{Tail(ProxyLog)}{Environment.NewLine}agent log:{Environment.NewLine}{Lab.AgentLogTail()}");
    }

    public static string Tail(string path, int lines = 20) =>
        File.Exists(path) ? string.Join(Environment.NewLine, File.ReadLines(path).TakeLast(lines)) : $"({path} does not exist)";

    // --- policies ---

    /// <summary>The HTTP rule most tests put on <see cref="Http"/>: GET under /public/; the proxy denies the rest.</summary>
    public const string PublicGetRule = """
        - method: GET
          path: "/public/.*"
        """;

    /// <summary>A CiliumNetworkPolicy on the client's egress to the server: <paramref name="port"/> with
    /// <paramref name="httpRules"/> (the items of rules.http, as an unindented YAML list), so the proxy checks every request
    /// there, and <paramref name="l4Ports"/> allowed at L4 only (they never reach the proxy).</summary>
    public static string ClientEgressPolicy(string name, int port, string httpRules, params int[] l4Ports) =>
        PolicyYaml(name, "client", "egress", "toEndpoints", "server", port, httpRules, l4Ports);

    /// <summary>A CiliumNetworkPolicy on the server's ingress from the client on <paramref name="port"/>: with
    /// <paramref name="httpRules"/> (as in <see cref="ClientEgressPolicy"/>) through the proxy, without at L4 only.</summary>
    public static string ServerIngressPolicy(string name, int port, string? httpRules = null) =>
        PolicyYaml(name, "server", "ingress", "fromEndpoints", "client", port, httpRules, []);

    /// <summary>Applies <see cref="ClientEgressPolicy"/> with <see cref="PublicGetRule"/> on <see cref="Http"/> (and
    /// <paramref name="l4Ports"/> at L4 only), then waits until the proxy has the rule (GET /public/ready passes).</summary>
    public async Task ApplyPublicGetOnlyAsync(string name, params int[] l4Ports)
    {
        await Lab.ApplyPolicyAsync(ClientEgressPolicy(name, Http, PublicGetRule, l4Ports));
        await EventuallyAsync(() => RequestAsync("GET", Http, "/public/ready"), r => r.Code == "200", "the proxy applies the new rules");
    }

    private static string PolicyYaml(string name, string subject, string direction, string peersKey, string peer, int port,
        string? httpRules, int[] l4Ports)
    {
        var yaml = new StringBuilder($"""
            apiVersion: cilium.io/v2
            kind: CiliumNetworkPolicy
            metadata:
              name: {name}
              namespace: {Ns}
            spec:
              endpointSelector:
                matchLabels:
                  app: {subject}
              {direction}:
                - {peersKey}:
                    - matchLabels:
                        app: {peer}
                  toPorts:
                    - ports:
                        - port: "{port}"
                          protocol: TCP

            """);
        if (httpRules is not null)
        {
            yaml.Append("          rules:\n            http:\n");
            foreach (var line in httpRules.Split('\n'))
                yaml.Append("              ").Append(line).Append('\n');
        }
        if (l4Ports.Length > 0)
        {
            yaml.Append("        - ports:\n");
            foreach (var p in l4Ports)
                yaml.Append($"            - port: \"{p}\"\n              protocol: TCP\n");
        }
        return yaml.ToString();
    }

    // --- HTTP from the pods ---

    /// <summary>Runs curl in <paramref name="from"/> (the client by default); -w appends the status code after the body.</summary>
    public async Task<HttpResult> CurlAsync(Pod? from, int timeoutSeconds, params string[] args)
    {
        var r = await (from ?? Client).ExecAsync(TimeSpan.FromSeconds(timeoutSeconds + 5),
            ["curl", "-s", "-m", timeoutSeconds.ToString(), "-w", "\n%{http_code}", .. args]);
        var i = r.Stdout.LastIndexOf('\n');
        return i < 0 ? new HttpResult("000", r.Stdout, r) : new HttpResult(r.Stdout[(i + 1)..].Trim(), r.Stdout[..i], r);
    }

    public string Url(int port, string path) => $"http://{ServerIp}:{port}{path}";

    /// <summary>One request from the client: method, port, path, then extra curl arguments (e.g. "-H", "X-A: b").</summary>
    public Task<HttpResult> RequestAsync(string method, int port, string path, params string[] extra) =>
        CurlAsync(null, 5, ["-X", method, .. extra, Url(port, path)]);

    /// <summary>Asserts the server answered (status <paramref name="code"/>, the body nginx gives that request).</summary>
    public static void AssertServed(HttpResult r, string code, string bodyPrefix, string why)
    {
        Assert.True(r.Code == code && r.Body.StartsWith(bodyPrefix, StringComparison.Ordinal),
            $"expected the server's own {code} '{bodyPrefix}...' ({why}), got {r}");
    }

    /// <summary>Asserts the proxy refused the request: 403 with body "Access denied".</summary>
    public static void AssertDenied(HttpResult r, string why)
    {
        Assert.True(r.Code == "403" && r.Body.Trim() == Denied, $"expected 403 '{Denied}' from the proxy ({why}), got {r}");
    }

    /// <summary>
    /// Right after a policy is applied the proxy may still hold its previous rules (it reloads the policy file the
    /// agent rewrites; until then a new redirect fails closed). Waits until <paramref name="probe"/> passes.
    /// Returns how long that took.
    /// </summary>
    public static async Task<TimeSpan> EventuallyAsync(Func<Task<HttpResult>> probe, Func<HttpResult, bool> ok, string what, TimeSpan? timeout = null)
    {
        var sw = Stopwatch.StartNew();
        HttpResult r;
        do
        {
            r = await probe();
            if (ok(r)) return sw.Elapsed;
            await Task.Delay(100);
        } while (sw.Elapsed < (timeout ?? TimeSpan.FromSeconds(5)));
        throw new Xunit.Sdk.XunitException($"{what}: still not after {sw.Elapsed.TotalSeconds:0.0} s; last answer {r}");
    }

    /// <summary>Lines of nginx's access log: "client-ip port method uri protocol".</summary>
    public string[] AccessLines() => File.Exists(AccessLog) ? File.ReadAllLines(AccessLog) : [];

    // --- flows ---

    public static string DescribeL7(FlowDto f) =>
        TestLab.Describe(f) + (f.L7?.Http is { } h ? $" L7 {h.Method} {h.Url} {h.Code} {h.Protocol}" : " (no L7 record)");

    /// <summary>The path and query of an L7 record's URL.</summary>
    public static string PathOf(HttpRecordDto h) =>
        Uri.TryCreate(h.Url, UriKind.Absolute, out var u) ? u.PathAndQuery : h.Url;

    /// <summary>Waits for the L7 flow of one request from the client: method, port and path (with query) must match.</summary>
    public Task<FlowDto> WaitL7FlowAsync(DateTimeOffset since, string verdict, string method, int port, string path, string? from = null) =>
        Lab.WaitForFlowAsync(f => f.Time >= since && f.L7?.Http is { } h && f.Verdict == verdict && h.Method == method &&
                                  PathOf(h) == path && f.Destination.Port == port && f.Destination.Ip == ServerIp &&
                                  f.Source.Ip == (from ?? ClientIp),
            $"{verdict} L7 flow {method} :{port}{path} from {from ?? ClientIp}");

    /// <summary>Checks the L7 record of a flow against what the request was and how it ended.</summary>
    public void AssertL7Flow(FlowDto f, string verdict, string method, int port, string path, int code, string direction)
    {
        var h = f.L7!.Http!;
        Assert.True(f.Verdict == verdict && h.Method == method && h.Code == code && h.Url == Url(port, path) && f.Direction == direction &&
                    f.Source.Pod == "client" && f.Destination.Pod == "server" && f.Destination.Port == port,
            $"expected a {direction} {verdict} L7 flow client -> server {method} {Url(port, path)} {code}, got {DescribeL7(f)}");
        if (verdict == "DROPPED")
            Assert.True(f.DropReason == L7DropReason, $"an L7 denial should carry drop reason '{L7DropReason}': {DescribeL7(f)} reason {f.DropReason}");
        else
            Assert.True(f.DropReason is null or "", $"a forwarded request has no drop reason: {DescribeL7(f)} reason {f.DropReason}");
    }

    // --- sockets of a pod for a .NET client in the test process ---

    [DllImport("libc", SetLastError = true)]
    private static extern int setns(int fd, int nstype);

    private const int CloneNewNet = 0x40000000;

    /// <summary>
    /// A TCP socket that lives in <paramref name="pod"/>'s network namespace: created on a thread of its own that
    /// joined the namespace (a socket keeps the namespace it was created in; the thread ends right after).
    /// </summary>
    public static Socket SocketIn(Pod pod)
    {
        Socket? socket = null;
        Exception? error = null;
        var t = new Thread(() =>
        {
            try
            {
                using var ns = File.OpenHandle(pod.NetnsPath, FileMode.Open, FileAccess.Read);
                if (setns((int)ns.DangerousGetHandle(), CloneNewNet) != 0)
                    throw new IOException($"setns({pod.NetnsPath}) failed: errno {Marshal.GetLastPInvokeError()}");
                socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            }
            catch (Exception e)
            {
                error = e;
            }
        });
        t.Start();
        t.Join();
        return socket ?? throw new IOException($"cannot create a socket in pod {pod.Namespace}/{pod.Name}", error);
    }

    /// <summary>
    /// An HttpClient whose connections start in <paramref name="pod"/> (as if the pod ran it). HTTP/2 over http://
    /// is h2c with prior knowledge. <paramref name="connects"/> counts the TCP connections it opened.
    /// </summary>
    public static HttpClient HttpClientIn(Pod pod, Version version, StrongBox<int> connects)
    {
        var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (ctx, ct) =>
            {
                Interlocked.Increment(ref connects.Value);
                var s = SocketIn(pod);
                try
                {
                    await s.ConnectAsync(IPAddress.Parse(ctx.DnsEndPoint.Host), ctx.DnsEndPoint.Port, ct);
                    return new NetworkStream(s, ownsSocket: true);
                }
                catch
                {
                    s.Dispose();
                    throw;
                }
            },
            EnableMultipleHttp2Connections = false,
            PooledConnectionIdleTimeout = TimeSpan.FromMinutes(5),
        };
        return new HttpClient(handler)
        {
            DefaultRequestVersion = version,
            DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Timeout = TimeSpan.FromSeconds(10),
        };
    }

    /// <summary>A process left running in a pod (e.g. a client holding a connection open); killed on dispose.</summary>
    public sealed class Background(Process p) : IDisposable
    {
        private int _disposed;

        public Process Process => p;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) != 0) return; // the lab disposes it too
            try
            {
                if (!p.HasExited) p.Kill(entireProcessTree: true);
                p.WaitForExit(2000);
            }
            catch (InvalidOperationException) { }
            p.Dispose();
        }
    }

    /// <summary>Starts <paramref name="command"/> in <paramref name="pod"/> and leaves it running (owned by the lab).</summary>
    public Background StartIn(Pod pod, params string[] command) => Lab.Own(new Background(Process.Start(pod.StartInfo(command))!));

    /// <summary>TCP sockets of the node's proxy (ss in the node's network namespace): "local peer" per socket.</summary>
    public async Task<List<string>> ProxySocketsAsync()
    {
        var r = await Probes.NodeExecAsync(Lab, TimeSpan.FromSeconds(10), "ss", "-Htanp");
        Assert.True(r.Ok, $"ss in the node's netns failed: {r}");
        return r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Where(l => l.Contains("\"trellis-proxy\"", StringComparison.Ordinal))
            .Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Where(c => c.Length >= 5)
            .Select(c => $"{c[0]} {c[3]} {c[4]}")
            .ToList();
    }

    // --- the lab and its programs ---

    private static string LabYaml(string assets, bool upload, bool grpc, string? serverAnnotation) => $$"""
        apiVersion: v1
        kind: Namespace
        metadata:
          name: web
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: server
          namespace: web
          labels:
            app: server
        {{(serverAnnotation is null ? "" : $"  annotations:\n    policy.cilium.io/proxy-visibility: \"{serverAnnotation}\"\n")}}spec:
          containers:
            - name: nginx
              command: ["nginx", "-p", "{{assets}}/", "-e", "{{assets}}/error.log", "-c", "{{assets}}/nginx.conf", "-g", "daemon off;"]
            - name: echo
              command: ["socat", "TCP-LISTEN:{{Echo}},fork,reuseaddr", "EXEC:cat"]
        {{(upload ? $"    - name: upload\n      command: [\"/usr/bin/python3\", \"{assets}/upload_server.py\", \"{Upload}\"]\n" : "")}}{{(grpc ? $"    - name: grpc\n      command: [\"/usr/bin/python3\", \"{assets}/grpc_server.py\", \"{Grpc}\"]\n" : "")}}---
        apiVersion: v1
        kind: Pod
        metadata:
          name: client
          namespace: web
          labels:
            app: client
        spec:
          containers:
            - name: idle
              command: ["sleep", "infinity"]
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: intruder
          namespace: web
          labels:
            app: intruder
        spec:
          containers:
            - name: idle
              command: ["sleep", "infinity"]
        """;

    // HTTP/1.1 keep-alive (curl reuses one connection for several URLs); workers run as root so they can write the
    // lab's directory. The h2c server speaks HTTP/2 with prior knowledge only (nginx 1.22: "listen ... http2").
    private static string NginxConf(string a) => $$"""
        user root;
        worker_processes 1;
        pid {{a}}/nginx.pid;
        error_log {{a}}/error.log;
        events { worker_connections 1024; }
        http {
          log_format l7 '$remote_addr $server_port $request_method $request_uri $server_protocol';
          access_log {{a}}/access.log l7;
          client_body_temp_path {{a}}/tmp/body;
          proxy_temp_path {{a}}/tmp/proxy;
          fastcgi_temp_path {{a}}/tmp/fastcgi;
          uwsgi_temp_path {{a}}/tmp/uwsgi;
          scgi_temp_path {{a}}/tmp/scgi;
          default_type text/plain;
          keepalive_requests 100000;
          keepalive_timeout 300s;
          server {
            listen {{Http}};
            listen {{HttpAnchored}};
            listen {{HttpHost}};
            listen {{HttpPlain}};
            location / { return 200 "ok $request_method $request_uri\n"; }
            location = /missing { return 404 "not found\n"; }
          }
          server {
            listen {{H2c}} http2;
            location / { return 200 "h2 $server_protocol $request_method $request_uri\n"; }
          }
        }
        """;

    /// <summary>Reads the request body (Content-Length or chunked) and answers with its size and SHA-256.</summary>
    private const string UploadServer = """
        import hashlib, sys
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                h, n = hashlib.sha256(), 0
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            break
                        left = size
                        while left:
                            b = self.rfile.read(min(left, 1 << 16))
                            if not b:
                                raise ConnectionError("body cut short")
                            h.update(b); n += len(b); left -= len(b)
                        self.rfile.readline()
                else:
                    left = int(self.headers.get("Content-Length", "0"))
                    while left:
                        b = self.rfile.read(min(left, 1 << 16))
                        if not b:
                            break
                        h.update(b); n += len(b); left -= len(b)
                body = f"bytes={n} sha256={h.hexdigest()}\n".encode()
                print(f"{self.client_address[0]} {self.command} {self.path} {body.decode().strip()}", flush=True)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_PUT = do_POST

            def log_message(self, *args):
                pass

        ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Handler).serve_forever()
        """;

    /// <summary>pkg.Greeter with two unary methods on raw bytes (no protoc): each call is logged with the peer.</summary>
    private const string GrpcServer = """
        import sys, grpc
        from concurrent import futures

        def handler(name):
            def call(request, context):
                print(f"call {name} from {context.peer()}", flush=True)
                return name.encode() + b" " + request
            return grpc.unary_unary_rpc_method_handler(call)

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "pkg.Greeter", {"SayHello": handler("SayHello"), "Other": handler("Other")}),))
        server.add_insecure_port(f"0.0.0.0:{sys.argv[1]}")
        server.start()
        server.wait_for_termination()
        """;

    /// <summary>Calls one method: prints "OK reply" or "ERR STATUS details" (exit 3).</summary>
    private const string GrpcClient = """
        import sys, grpc
        target, method = sys.argv[1], sys.argv[2]
        with grpc.insecure_channel(target) as channel:
            try:
                reply = channel.unary_unary(method)(b"trellis", timeout=5)
                print("OK", reply.decode())
            except grpc.RpcError as e:
                print("ERR", e.code().name, e.details())
                sys.exit(3)
        """;
}
