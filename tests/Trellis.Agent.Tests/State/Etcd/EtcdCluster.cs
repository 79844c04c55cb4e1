using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Trellis.Agent.State.Etcd;

namespace Trellis.Agent.Tests.State.Etcd;

/// <summary>A real 3-member etcd cluster (Debian's /usr/bin/etcd) on 127.0.0.1, free ports, data in a scratch directory;
/// shared by the tests of <see cref="EtcdCollection"/>, which run one at a time because some kill members. Each test
/// starts with every member up (<see cref="EnsureAllRunningAsync"/>) and uses its own key prefix (cluster name).
/// Disposed (or the test process exiting): every member killed and the directory removed.</summary>
public sealed class EtcdCluster : IAsyncLifetime
{
    public const string Binary = "/usr/bin/etcd";
    private static readonly TimeSpan HealthTimeout = TimeSpan.FromSeconds(60);

    private readonly List<Member> _members = [];
    private readonly HttpClient _http = new() { Timeout = TimeSpan.FromSeconds(2) };
    private string _dir = "";
    private int _cluster;

    public sealed class Member
    {
        public required string Name { get; init; }
        public required int ClientPort { get; init; }
        public required int PeerPort { get; init; }
        public required string DataDir { get; init; }
        public required string LogFile { get; init; }
        public Process? Process { get; set; }
        public string ClientUrl => $"http://127.0.0.1:{ClientPort}";
        public string PeerUrl => $"http://127.0.0.1:{PeerPort}";
        public bool Running => Process is { HasExited: false };
    }

    public IReadOnlyList<Member> Members => _members;
    public IReadOnlyList<string> ClientUrls => _members.Select(m => m.ClientUrl).ToList();

    /// <summary>Options for clients of this cluster, in a key prefix of their own (new each call).</summary>
    public EtcdOptions Options() => new()
    {
        Endpoints = ClientUrls,
        Cluster = $"test{Interlocked.Increment(ref _cluster)}-{Guid.NewGuid():N}",
        RequestTimeout = TimeSpan.FromSeconds(20),
        MaxReconnectBackoff = TimeSpan.FromMilliseconds(500),
    };

    public async Task InitializeAsync()
    {
        if (!File.Exists(Binary))
            throw new InvalidOperationException($"etcd-server is not installed ({Binary} is missing): run scripts/install-deps.sh as root");
        AppDomain.CurrentDomain.ProcessExit += (_, _) => KillAll();
        // tmpfs when there is one: etcd fsyncs every commit, which a loaded disk makes slow, and nothing here needs to
        // survive a reboot.
        var parent = Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath();
        _dir = Path.Combine(parent, $"trellis-etcd-test-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Exception? last = null;
        for (int attempt = 1; attempt <= 3; attempt++) // a free port taken between probing and etcd binding it: new ports
        {
            try
            {
                CreateMembers(attempt);
                foreach (var m in _members) Start(m);
                await WaitHealthyAsync();
                return;
            }
            catch (Exception e)
            {
                last = e;
                KillAll();
            }
        }
        Cleanup();
        throw new InvalidOperationException($"the 3-member etcd test cluster did not start: {last!.Message}", last);
    }

    private void CreateMembers(int attempt)
    {
        _members.Clear();
        var ports = FreePorts(6);
        for (int i = 0; i < 3; i++)
        {
            var dir = Path.Combine(_dir, $"try{attempt}", $"m{i}");
            Directory.CreateDirectory(dir);
            _members.Add(new Member
            {
                Name = $"m{i}",
                ClientPort = ports[2 * i],
                PeerPort = ports[2 * i + 1],
                DataDir = Path.Combine(dir, "data"),
                LogFile = Path.Combine(dir, "etcd.log"),
            });
        }
    }

    private static int[] FreePorts(int count)
    {
        var listeners = Enumerable.Range(0, count).Select(_ => new TcpListener(IPAddress.Loopback, 0)).ToList();
        foreach (var l in listeners) l.Start();
        var ports = listeners.Select(l => ((IPEndPoint)l.LocalEndpoint).Port).ToArray();
        foreach (var l in listeners) l.Stop();
        return ports;
    }

    private void Start(Member m)
    {
        var initialCluster = string.Join(',', _members.Select(x => $"{x.Name}={x.PeerUrl}"));
        var psi = new ProcessStartInfo(Binary)
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var arg in new[]
        {
            "--name", m.Name, "--data-dir", m.DataDir,
            "--listen-client-urls", m.ClientUrl, "--advertise-client-urls", m.ClientUrl,
            "--listen-peer-urls", m.PeerUrl, "--initial-advertise-peer-urls", m.PeerUrl,
            "--initial-cluster", initialCluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", Path.GetFileName(_dir),
            "--logger", "zap", "--log-outputs", m.LogFile,
        })
            psi.ArgumentList.Add(arg);
        var p = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {Binary}");
        p.OutputDataReceived += (_, _) => { };
        p.ErrorDataReceived += (_, _) => { };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        m.Process = p;
    }

    /// <summary>SIGKILL, as a crash: no goodbye to the other members or the clients.</summary>
    public void Kill(Member m)
    {
        if (m.Process is not { } p) return;
        try
        {
            if (!p.HasExited) p.Kill(entireProcessTree: true);
            p.WaitForExit(10_000);
        }
        catch (InvalidOperationException) { } // already gone
        p.Dispose();
        m.Process = null;
    }

    public void KillAll()
    {
        foreach (var m in _members) Kill(m);
    }

    /// <summary>Restarts a killed member on its data (it rejoins the cluster).</summary>
    public void Restart(Member m)
    {
        if (!m.Running) Start(m);
    }

    public async Task EnsureAllRunningAsync()
    {
        foreach (var m in _members) Restart(m);
        await WaitHealthyAsync();
    }

    /// <summary>Waits until every running member reports healthy (it has a leader and serves reads).</summary>
    public async Task WaitHealthyAsync()
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            var pending = new List<string>();
            foreach (var m in _members.Where(m => m.Process is not null))
            {
                if (m.Process!.HasExited)
                    throw new InvalidOperationException($"etcd member {m.Name} exited with {m.Process.ExitCode}: {LogTail(m)}");
                if (!await HealthyAsync(m)) pending.Add(m.Name);
            }
            if (pending.Count == 0) return;
            if (clock.Elapsed > HealthTimeout)
                throw new TimeoutException($"etcd members {string.Join(", ", pending)} not healthy after {HealthTimeout.TotalSeconds} s: " +
                    string.Join(" | ", _members.Where(m => pending.Contains(m.Name)).Select(LogTail)));
            await Task.Delay(200);
        }
    }

    private async Task<bool> HealthyAsync(Member m)
    {
        try
        {
            var body = await _http.GetStringAsync($"{m.ClientUrl}/health");
            return JsonDocument.Parse(body).RootElement.GetProperty("health").GetString() == "true";
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException or JsonException or KeyNotFoundException)
        {
            return false;
        }
    }

    /// <summary>The member that is the raft leader now (asked through etcd's JSON gateway).</summary>
    public async Task<Member> LeaderAsync()
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            foreach (var m in _members.Where(m => m.Running))
            {
                try
                {
                    using var response = await _http.PostAsync($"{m.ClientUrl}/v3/maintenance/status", new StringContent("{}", Encoding.UTF8, "application/json"));
                    var status = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
                    if (status.TryGetProperty("leader", out var leader) && leader.GetString() == status.GetProperty("header").GetProperty("member_id").GetString())
                        return m;
                }
                catch (Exception e) when (e is HttpRequestException or TaskCanceledException or JsonException or KeyNotFoundException) { }
            }
            if (clock.Elapsed > HealthTimeout) throw new TimeoutException("no etcd member says it is the leader");
            await Task.Delay(200);
        }
    }

    private static string LogTail(Member m)
    {
        try
        {
            var lines = File.ReadAllLines(m.LogFile);
            return $"{m.Name}: " + string.Join("\n", lines.TakeLast(5));
        }
        catch (IOException)
        {
            return $"{m.Name}: no log";
        }
    }

    private void Cleanup()
    {
        KillAll();
        if (_dir.Length > 0 && Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    public Task DisposeAsync()
    {
        Cleanup();
        _http.Dispose();
        return Task.CompletedTask;
    }
}

[CollectionDefinition(Name)]
public sealed class EtcdCollection : ICollectionFixture<EtcdCluster>
{
    public const string Name = "etcd cluster";
}
