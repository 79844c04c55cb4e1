using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Logging;

namespace Trellis.Agent.Proxy;

/// <summary>
/// Starts the node's L7 proxy (`trellis-proxy`, next to the agent's binary) and restarts it when it dies: checked
/// every 200 ms, so a dead proxy is replaced well within 2 s. The proxy runs in its own session and outlives the
/// agent (it keeps enforcing the last rules from its policy file while the agent restarts); a new agent adopts
/// the running proxy through its pid file instead of starting a second one. While no proxy listens, the datapath
/// refuses the flows that need one (fail closed) and leaves the others alone.
/// </summary>
public sealed class ProxySupervisor : IDisposable
{
    private static readonly TimeSpan CheckInterval = TimeSpan.FromMilliseconds(200);
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(15);

    private readonly string _node;
    private readonly IReadOnlyList<string> _arguments;
    private readonly string _pidFile;
    private readonly string _log;
    private readonly ILogger _logger;
    private readonly Lock _gate = new();
    private Timer? _timer;
    private DateTime? _startedAt;
    private long _restarts;
    private int _pid;

    public ProxySupervisor(string node, IReadOnlyList<string> arguments, string pidFile, string log, ILogger logger)
    {
        _node = node;
        _arguments = arguments;
        _pidFile = pidFile;
        _log = log;
        _logger = logger;
    }

    /// <summary>How many times the proxy was found dead and started again (not counting the first start).</summary>
    public long Restarts => Interlocked.Read(ref _restarts);

    /// <summary>The running proxy's pid, 0 when none is up.</summary>
    public int Pid => Volatile.Read(ref _pid);

    public static string Executable => Path.Combine(AppContext.BaseDirectory, "trellis-proxy");

    public void Start()
    {
        Check(first: true);
        _timer = new Timer(_ => Check(first: false), null, CheckInterval, CheckInterval);
    }

    private void Check(bool first)
    {
        lock (_gate)
        {
            try
            {
                var pid = RunningPid();
                if (pid != 0)
                {
                    if (_pid != pid)
                        _logger.LogInformation("L7 proxy running (pid {Pid})", pid);
                    _pid = pid;
                    _startedAt = null;
                    return;
                }
                if (_startedAt is { } started && DateTime.UtcNow - started < StartTimeout)
                    return; // starting: it writes its pid file once it listens
                if (!first)
                {
                    _logger.LogWarning("L7 proxy (pid {Pid}) is not running; starting it again (log {Log})", _pid, _log);
                    Interlocked.Increment(ref _restarts);
                }
                _pid = 0;
                Launch();
                _startedAt = DateTime.UtcNow;
            }
            catch (Exception e) when (e is IOException or System.ComponentModel.Win32Exception or InvalidOperationException)
            {
                _logger.LogError(e, "cannot start the L7 proxy");
            }
        }
    }

    /// <summary>The pid in the pid file when that process is alive and is this node's proxy; else 0.</summary>
    private int RunningPid()
    {
        if (!File.Exists(_pidFile) || !int.TryParse(File.ReadAllText(_pidFile).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var pid))
            return 0;
        return IsProxy(pid, _node) ? pid : 0;
    }

    public static bool IsProxy(int pid, string node)
    {
        try
        {
            var argv = File.ReadAllText($"/proc/{pid}/cmdline").Split('\0');
            if (File.ReadAllText($"/proc/{pid}/stat").Split(' ') is [_, _, "Z", ..])
                return false; // a zombie is dead
            return argv.Any(a => a.EndsWith("trellis-proxy", StringComparison.Ordinal)) && argv.Contains(node);
        }
        catch (IOException)
        {
            return false;
        }
    }

    private void Launch()
    {
        File.Delete(_pidFile);
        Directory.CreateDirectory(Path.GetDirectoryName(_log)!);
        // Its own session, output appended to the log, no pipe to us: the proxy must not depend on the agent's life.
        var psi = new ProcessStartInfo("setsid") { UseShellExecute = false };
        foreach (var a in (string[])["-f", "/bin/sh", "-c", "exec \"$@\" >>\"$TRELLIS_PROXY_LOG\" 2>&1 </dev/null", "sh", Executable, .. _arguments])
            psi.ArgumentList.Add(a);
        psi.Environment["TRELLIS_PROXY_LOG"] = _log;
        // .NET's thread pool spins (sched_yield) waiting for work; on a node proxy that shares the CPUs with the pods it
        // serves, that spinning was most of its CPU time per request (docs/performance.md, L7 proxy).
        psi.Environment["DOTNET_ThreadPool_UnfairSemaphoreSpinLimit"] = "0";
        using var p = Process.Start(psi) ?? throw new InvalidOperationException("cannot run setsid");
        p.WaitForExit();
        if (p.ExitCode != 0)
            throw new InvalidOperationException($"setsid exited with {p.ExitCode} starting {Executable}");
        _logger.LogInformation("starting the L7 proxy: {Exe} {Args}", Executable, string.Join(' ', _arguments));
    }

    /// <summary>Stops supervising; the proxy keeps running (the next agent adopts it).</summary>
    public void Dispose() => _timer?.Dispose();

    /// <summary>Stops this node's proxy (lab down): SIGTERM, then SIGKILL after 5 s.</summary>
    public static void Kill(string pidFile, string node)
    {
        if (!File.Exists(pidFile) || !int.TryParse(File.ReadAllText(pidFile).Trim(), out var pid) || !IsProxy(pid, node))
            return;
        try
        {
            using var p = Process.GetProcessById(pid);
            Process.Start("kill", ["-TERM", pid.ToString(CultureInfo.InvariantCulture)])?.WaitForExit();
            if (!p.WaitForExit(5000))
                p.Kill();
        }
        catch (ArgumentException)
        {
            // already gone
        }
    }
}
