using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Trellis.Bpf;
using Trellis.Datapath;

namespace Trellis.Datapath.Tests;

/// <summary>
/// proxy_lookup (sk_lookup) with BPF_PROG_TEST_RUN: a SYN that to_proxy handed to one of the proxy's TIME_WAIT
/// sockets makes the kernel look up a listener for the original destination; the program must answer with the
/// proxy's listener for exactly the tuples to_proxy listed, once, and leave every other lookup alone.
/// </summary>
[Trait("Requires", "root")]
public sealed class ProxyLookupTests : IDisposable
{
    private const uint SkPass = 1;
    private readonly string _pinRoot = $"/sys/fs/bpf/trellis-test-{Guid.NewGuid().ToString("N")[..8]}";
    private readonly NodeDatapath _dp;
    private readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);

    public ProxyLookupTests()
    {
        _dp = NodeDatapath.Load(_pinRoot);
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen();
    }

    public void Dispose()
    {
        _listener.Dispose();
        _dp.Dispose();
        NodeDatapath.RemovePins(_pinRoot);
    }

    // struct bpf_sk_lookup: cookie (out) @0, family @8, protocol @12, remote_ip4 @16, remote_port (be16) @36,
    // local_ip4 @40, local_port (host order) @60; 72 bytes.
    private static byte[] Lookup(string client, ushort clientPort, string original, ushort originalPort)
    {
        var ctx = new byte[72];
        BinaryPrimitives.WriteUInt32LittleEndian(ctx.AsSpan(8), 2);  // AF_INET
        BinaryPrimitives.WriteUInt32LittleEndian(ctx.AsSpan(12), 6); // TCP
        IPAddress.Parse(client).TryWriteBytes(ctx.AsSpan(16), out _);
        BinaryPrimitives.WriteUInt16BigEndian(ctx.AsSpan(36), clientPort);
        IPAddress.Parse(original).TryWriteBytes(ctx.AsSpan(40), out _);
        BinaryPrimitives.WriteUInt32LittleEndian(ctx.AsSpan(60), originalPort);
        return ctx;
    }

    private static byte[] TwKey(string client, ushort clientPort, string original, ushort originalPort)
    {
        var key = new byte[12];
        IPAddress.Parse(client).TryWriteBytes(key.AsSpan(0), out _);
        IPAddress.Parse(original).TryWriteBytes(key.AsSpan(4), out _);
        BinaryPrimitives.WriteUInt16BigEndian(key.AsSpan(8), clientPort);
        BinaryPrimitives.WriteUInt16BigEndian(key.AsSpan(10), originalPort);
        return key;
    }

    private ulong Run(byte[] ctx)
    {
        var (ret, ctxOut) = _dp.ProxyLookup.TestRunContext(ctx);
        Assert.Equal(SkPass, ret);
        return BinaryPrimitives.ReadUInt64LittleEndian(ctxOut); // the selected socket's cookie, 0 = none
    }

    private ulong ListenerCookie()
    {
        Span<byte> cookie = stackalloc byte[8];
        _listener.GetRawSocketOption(1 /* SOL_SOCKET */, 57 /* SO_COOKIE */, cookie);
        return BinaryPrimitives.ReadUInt64LittleEndian(cookie);
    }

    [Fact]
    public void Listed_tuples_get_the_proxys_listener_once_and_other_lookups_are_untouched()
    {
        using var sockmap = BpfMap.OpenPinned(Path.Combine(_pinRoot, Names.ProxySock));
        using var tw = BpfMap.OpenPinned(Path.Combine(_pinRoot, "trellis_proxy_tw"));
        var ctx = Lookup("10.200.0.3", 40000, "10.200.0.2", 8080);

        Assert.Equal(0UL, Run(ctx)); // not listed: the kernel's own lookup decides

        var key = TwKey("10.200.0.3", 40000, "10.200.0.2", 8080);
        tw.Update(new Key12(key), (byte)1);
        Assert.Equal(0UL, Run(ctx)); // listed, but no proxy registered: nothing to hand it to
        tw.Update(new Key12(key), (byte)1);
        sockmap.Update(0u, (ulong)_listener.Handle);
        Assert.Equal(ListenerCookie(), Run(ctx));
        Assert.False(tw.TryLookup(new Key12(key), out byte _)); // used once: the next lookup of the tuple is the kernel's
        Assert.Equal(0UL, Run(ctx));

        tw.Update(new Key12(key), (byte)1);
        Assert.Equal(0UL, Run(Lookup("10.200.0.3", 40001, "10.200.0.2", 8080))); // another client port
        Assert.Equal(0UL, Run(Lookup("10.200.0.4", 40000, "10.200.0.2", 8080))); // another client
        Assert.Equal(0UL, Run(Lookup("10.200.0.3", 40000, "10.200.0.2", 8081))); // another destination port
    }

    [System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Sequential, Pack = 4)]
    private readonly record struct Key12
    {
        private readonly uint _a, _b, _c; // struct proxy_tw_key, bytes as the kernel has them

        public Key12(byte[] k)
        {
            _a = BitConverter.ToUInt32(k, 0);
            _b = BitConverter.ToUInt32(k, 4);
            _c = BitConverter.ToUInt32(k, 8);
        }
    }
}
