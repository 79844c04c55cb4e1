using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Trellis.Bpf;

/// <summary>Sockets in another network namespace: a socket belongs to the namespace it was created in, whatever thread
/// uses it later. A lab node's agent runs in the node's namespace but reaches etcd through the host's.</summary>
public static partial class NetNs
{
    private const int CloneNewNet = 0x40000000;

    /// <summary>A TCP socket connected to <paramref name="host"/>:<paramref name="port"/> from the network namespace at
    /// <paramref name="netnsPath"/> (e.g. /proc/1/ns/net). The socket is created on a short-lived thread that enters the
    /// namespace (setns(2) changes only the calling thread), so no other thread of the process moves.</summary>
    public static async Task<Socket> ConnectTcpAsync(string netnsPath, string host, int port, CancellationToken ct)
    {
        var addresses = IPAddress.TryParse(host, out var ip) ? [ip] : await Dns.GetHostAddressesAsync(host, ct);
        if (addresses.Length == 0) throw new SocketException((int)SocketError.HostNotFound);
        var socket = CreateIn(netnsPath, addresses[0].AddressFamily);
        try
        {
            socket.NoDelay = true;
            await socket.ConnectAsync(addresses, port, ct);
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    private static Socket CreateIn(string netnsPath, AddressFamily family)
    {
        Socket? socket = null;
        Exception? error = null;
        var thread = new Thread(() =>
        {
            try
            {
                using var ns = File.OpenHandle(netnsPath);
                if (Setns(ns, CloneNewNet) != 0)
                    throw new IOException($"setns {netnsPath}: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
                socket = new Socket(family, SocketType.Stream, ProtocolType.Tcp);
            }
            catch (Exception e)
            {
                error = e;
            }
        }) { IsBackground = true, Name = "netns socket" };
        thread.Start();
        thread.Join(); // the thread ends in the other namespace: nothing else ever runs on it
        return socket ?? throw new IOException($"cannot create a socket in network namespace {netnsPath}: {error?.Message}", error);
    }

    [LibraryImport("libc", EntryPoint = "setns", SetLastError = true)]
    private static partial int Setns(SafeFileHandle fd, int nstype);
}
