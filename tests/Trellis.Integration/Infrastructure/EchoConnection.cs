using System.Diagnostics;

namespace Trellis.Integration.Infrastructure;

/// <summary>One TCP connection kept open by a `socat` client inside a pod: a line is sent every 100 ms and
/// the echo server sends it back. <see cref="LastEcho"/> tells when the connection last carried traffic both ways.</summary>
public sealed class EchoConnection : IDisposable
{
    private readonly Process _socat;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _sender, _reader;
    private readonly Lock _gate = new();
    private long _received;
    private DateTime _lastEcho = DateTime.MinValue;
    private readonly string _what;

    internal EchoConnection(Pod from, string ip, int port)
    {
        _what = $"{from.Namespace}/{from.Name} -> {ip}:{port}";
        // No -T: an idle or stalled connection must stay open; only we end it.
        _socat = Process.Start(from.StartInfo(["socat", "-", $"TCP:{ip}:{port},connect-timeout=3"]))!;
        _sender = Task.Run(SendLoop);
        _reader = Task.Run(ReadLoop);
    }

    public long Received { get { lock (_gate) return _received; } }
    public DateTime LastEcho { get { lock (_gate) return _lastEcho; } }
    public bool Exited => _socat.HasExited;

    private async Task SendLoop()
    {
        for (long seq = 0; !_stop.IsCancellationRequested; seq++)
        {
            try
            {
                await _socat.StandardInput.WriteLineAsync($"ping {seq}");
                await _socat.StandardInput.FlushAsync();
                await Task.Delay(100, _stop.Token);
            }
            catch (Exception e) when (e is IOException or OperationCanceledException or ObjectDisposedException)
            {
                return;
            }
        }
    }

    private async Task ReadLoop()
    {
        try
        {
            while (await _socat.StandardOutput.ReadLineAsync(_stop.Token) is { } line)
                if (line.StartsWith("ping ", StringComparison.Ordinal))
                    lock (_gate)
                    {
                        _received++;
                        _lastEcho = DateTime.UtcNow;
                    }
        }
        catch (Exception e) when (e is IOException or OperationCanceledException or ObjectDisposedException)
        {
        }
    }

    /// <summary>Waits until an echo arrives that was received after <paramref name="since"/>.</summary>
    public async Task<bool> EchoesSinceAsync(DateTime since, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            if (LastEcho > since) return true;
            if (Exited) return false;
            await Task.Delay(50);
        }
        return LastEcho > since;
    }

    /// <summary>Asserts the connection carries traffic now (an echo within <paramref name="timeout"/>).</summary>
    public async Task AssertWorksAsync(string when, TimeSpan? timeout = null)
    {
        var now = DateTime.UtcNow;
        if (!await EchoesSinceAsync(now, timeout ?? TimeSpan.FromSeconds(3)))
            throw new Xunit.Sdk.XunitException($"connection {_what} carried no echo {when} (received {Received} echoes in all, last at {LastEcho:HH:mm:ss.fff}, socat {(Exited ? $"exited with {_socat.ExitCode}: {_socat.StandardError.ReadToEnd()}" : "still running")})");
    }

    public void Dispose()
    {
        _stop.Cancel();
        try
        {
            if (!_socat.HasExited) _socat.Kill(entireProcessTree: true);
            _socat.WaitForExit(2000);
        }
        catch (InvalidOperationException) { }
        Task.WaitAll([_sender, _reader], TimeSpan.FromSeconds(2));
        _socat.Dispose();
        _stop.Dispose();
    }
}
