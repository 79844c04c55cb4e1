using System.Diagnostics;
using Trellis.Lab;

namespace Trellis.Integration.Infrastructure;

public sealed record ExecResult(int ExitCode, string Stdout, string Stderr, bool TimedOut)
{
    public bool Ok => ExitCode == 0 && !TimedOut;
    public override string ToString() => $"exit {ExitCode}{(TimedOut ? " (timed out)" : "")}; stdout: {Stdout.Trim()}; stderr: {Stderr.Trim()}";
}

/// <summary>A pod of a <see cref="TestLab"/>: runs commands inside its network namespace and cgroup with
/// captured output (LabRunner.Exec inherits our stdio).</summary>
public sealed class Pod(TestLab lab, string ns, string name)
{
    public string Namespace => ns;
    public string Name => name;
    public string NetnsPath => Naming.NetnsPath(Naming.PodNetns(lab.Node, ns, name));
    private string Cgroup => Cgroups.PodDir(lab.Node, ns, name);

    /// <summary>nsenter into the pod; the shell joins the pod's cgroup first, so `lab down` kills what we leave.</summary>
    internal ProcessStartInfo StartInfo(IReadOnlyList<string> command)
    {
        if (!File.Exists(NetnsPath)) throw new InvalidOperationException($"pod {ns}/{name} has no netns {NetnsPath}");
        var psi = new ProcessStartInfo("nsenter")
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
        };
        foreach (var a in new[] { $"--net={NetnsPath}", "--", "/bin/sh", "-c", "[ -d \"$0\" ] && echo $$ > \"$0/cgroup.procs\"; exec \"$@\"", Cgroup })
            psi.ArgumentList.Add(a);
        foreach (var a in command) psi.ArgumentList.Add(a);
        return psi;
    }

    public Task<ExecResult> ExecAsync(params string[] command) => ExecAsync(TimeSpan.FromSeconds(10), command);

    public Task<ExecResult> ExecAsync(TimeSpan timeout, params string[] command) => Processes.RunAsync(StartInfo(command), timeout);

    /// <summary>Connects over TCP (and closes at once): true when the handshake completes within <paramref name="timeoutSeconds"/>.</summary>
    public async Task<ExecResult> TcpConnectAsync(string ip, int port, int timeoutSeconds = 1) =>
        await ExecAsync(TimeSpan.FromSeconds(timeoutSeconds + 5), "socat", $"-T{timeoutSeconds}", "/dev/null", $"TCP:{ip}:{port},connect-timeout={timeoutSeconds}");

    public async Task<ExecResult> HttpGetAsync(string ip, int port, int timeoutSeconds = 2) =>
        await ExecAsync(TimeSpan.FromSeconds(timeoutSeconds + 5), "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-m", timeoutSeconds.ToString(), $"http://{ip}:{port}/");

    /// <summary>Sends one datagram and waits up to <paramref name="timeoutSeconds"/> for the echo.</summary>
    public async Task<ExecResult> UdpEchoAsync(string ip, int port, string payload, int timeoutSeconds = 1) =>
        await ExecAsync(TimeSpan.FromSeconds(timeoutSeconds + 5), "/bin/sh", "-c",
            $"printf '%s\\n' \"$0\" | socat -T{timeoutSeconds} - UDP:{ip}:{port}", payload);

    /// <summary>Waits until something listens on the port inside the pod (its command was started detached).</summary>
    public async Task WaitListeningAsync(int port, string proto = "tcp", TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(10));
        ExecResult r;
        do
        {
            r = await ExecAsync("ss", "-H", proto == "udp" ? "-lun" : "-ltn", $"sport = :{port}");
            if (r.Ok && r.Stdout.Trim().Length > 0) return;
            await Task.Delay(100);
        } while (DateTime.UtcNow < deadline);
        var log = Naming.PodLog(lab.Node, ns, name);
        throw new Xunit.Sdk.XunitException($"nothing listens on {proto}/{port} in pod {ns}/{name} after 10 s ({r}); pod log {log}: " +
            (File.Exists(log) ? File.ReadAllText(log) : "(none)"));
    }

    /// <summary>A long-lived TCP connection from this pod to an echo server.</summary>
    public EchoConnection OpenEcho(string ip, int port) => lab.Own(new EchoConnection(this, ip, port));
}
