using System.Buffers.Binary;
using System.Net;
using System.Runtime.InteropServices;

namespace Trellis.Bpf;

/// <summary>An interface of this network namespace that has IPv4 addresses.</summary>
public sealed record InterfaceAddresses(int Ifindex, string Name, bool Up, bool Loopback, IReadOnlyList<IPAddress> Addresses);

/// <summary>
/// The IPv4 addresses of this network namespace, from one rtnetlink RTM_GETADDR dump. Used instead of .NET's
/// <c>NetworkInterface.GetAllNetworkInterfaces()</c>, which dumps every link (each pod veth too, and the kernel walks
/// the netns id table for each veth's peer) and parses <c>/proc/net/route</c> (one /32 route per pod) for every
/// interface: on a node with n pods that is n x n work per call, and the agent polls every second. An address dump
/// only returns interfaces with an address, which pod veths on the node side do not have.
/// </summary>
public static partial class NodeAddresses
{
    private const int AF_NETLINK = 16, AF_INET = 2, SOCK_RAW = 3, SOCK_CLOEXEC = 0x80000, NETLINK_ROUTE = 0;
    private const ushort RTM_GETADDR = 22, RTM_NEWADDR = 20, NLMSG_ERROR = 2, NLMSG_DONE = 3;
    private const ushort NLM_F_REQUEST = 1, NLM_F_DUMP = 0x300;
    private const ushort IFA_ADDRESS = 1, IFA_LOCAL = 2;
    private const uint SIOCGIFFLAGS = 0x8913;
    private const short IFF_UP = 1, IFF_LOOPBACK = 8;

    public static IReadOnlyList<InterfaceAddresses> Ipv4()
    {
        int fd = Socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
        if (fd < 0) throw Error("socket(AF_NETLINK)");
        try
        {
            Span<byte> request = stackalloc byte[24]; // nlmsghdr + ifaddrmsg
            request.Clear();
            BinaryPrimitives.WriteUInt32LittleEndian(request, 24);
            BinaryPrimitives.WriteUInt16LittleEndian(request[4..], RTM_GETADDR);
            BinaryPrimitives.WriteUInt16LittleEndian(request[6..], NLM_F_REQUEST | NLM_F_DUMP);
            BinaryPrimitives.WriteUInt32LittleEndian(request[8..], 1); // sequence
            request[16] = AF_INET;
            if (Send(fd, request, request.Length, 0) != request.Length) throw Error("send RTM_GETADDR");

            var byIndex = new SortedDictionary<int, List<IPAddress>>();
            var buffer = new byte[64 * 1024];
            while (true)
            {
                int n = Recv(fd, buffer, buffer.Length, 0);
                if (n < 0) throw Error("recv RTM_GETADDR");
                for (int off = 0; off + 16 <= n;)
                {
                    int len = (int)BinaryPrimitives.ReadUInt32LittleEndian(buffer.AsSpan(off));
                    ushort type = BinaryPrimitives.ReadUInt16LittleEndian(buffer.AsSpan(off + 4));
                    if (len < 16 || off + len > n) throw new IOException("rtnetlink: malformed message in the address dump");
                    if (type == NLMSG_DONE) return Describe(byIndex);
                    if (type == NLMSG_ERROR)
                        throw new IOException($"rtnetlink address dump: {Marshal.GetPInvokeErrorMessage(-BinaryPrimitives.ReadInt32LittleEndian(buffer.AsSpan(off + 16)))}");
                    if (type == RTM_NEWADDR && len >= 24 && buffer[off + 16] == AF_INET)
                    {
                        int index = (int)BinaryPrimitives.ReadUInt32LittleEndian(buffer.AsSpan(off + 20));
                        IPAddress? local = null, address = null;
                        for (int a = off + 24; a + 4 <= off + len;)
                        {
                            int alen = BinaryPrimitives.ReadUInt16LittleEndian(buffer.AsSpan(a));
                            int atype = BinaryPrimitives.ReadUInt16LittleEndian(buffer.AsSpan(a + 2));
                            if (alen < 4) break;
                            if (alen == 8 && atype == IFA_LOCAL) local = new IPAddress(buffer.AsSpan(a + 4, 4));
                            if (alen == 8 && atype == IFA_ADDRESS) address = new IPAddress(buffer.AsSpan(a + 4, 4));
                            a += (alen + 3) & ~3;
                        }
                        // IFA_LOCAL is the interface's own address; IFA_ADDRESS the peer's on point-to-point links.
                        if ((local ?? address) is { } ip)
                        {
                            if (!byIndex.TryGetValue(index, out var list)) byIndex[index] = list = [];
                            list.Add(ip);
                        }
                    }
                    off += (len + 3) & ~3;
                }
            }
        }
        finally
        {
            Interop.LibC.Close(fd);
        }
    }

    private static List<InterfaceAddresses> Describe(SortedDictionary<int, List<IPAddress>> byIndex)
    {
        var result = new List<InterfaceAddresses>();
        int fd = Socket(AF_INET, 2 /* SOCK_DGRAM */ | SOCK_CLOEXEC, 0); // for SIOCGIFFLAGS
        if (fd < 0) throw Error("socket(AF_INET)");
        try
        {
            Span<byte> name = stackalloc byte[16];
            Span<byte> ifreq = stackalloc byte[40];
            foreach (var (index, addresses) in byIndex)
            {
                name.Clear();
                if (IfIndexToName((uint)index, name) == 0) continue; // gone since the dump
                int nameLength = name.IndexOf((byte)0);
                ifreq.Clear();
                name[..nameLength].CopyTo(ifreq);
                if (Ioctl(fd, SIOCGIFFLAGS, ifreq) != 0) continue;
                short flags = BinaryPrimitives.ReadInt16LittleEndian(ifreq[16..]);
                result.Add(new InterfaceAddresses(index, System.Text.Encoding.ASCII.GetString(name[..nameLength]),
                    (flags & IFF_UP) != 0, (flags & IFF_LOOPBACK) != 0, addresses));
            }
        }
        finally
        {
            Interop.LibC.Close(fd);
        }
        return result;
    }

    private static IOException Error(string what) => new($"{what}: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");

    [LibraryImport("libc", EntryPoint = "socket", SetLastError = true)]
    private static partial int Socket(int domain, int type, int protocol);

    [LibraryImport("libc", EntryPoint = "send", SetLastError = true)]
    private static partial nint SendNative(int fd, ref byte buf, nint len, int flags);

    private static int Send(int fd, ReadOnlySpan<byte> buf, int len, int flags) =>
        (int)SendNative(fd, ref MemoryMarshal.GetReference(buf), len, flags);

    [LibraryImport("libc", EntryPoint = "recv", SetLastError = true)]
    private static partial nint RecvNative(int fd, ref byte buf, nint len, int flags);

    private static int Recv(int fd, byte[] buf, int len, int flags) => (int)RecvNative(fd, ref buf[0], len, flags);

    [LibraryImport("libc", EntryPoint = "if_indextoname", SetLastError = true)]
    private static partial nint IfIndexToNameNative(uint index, ref byte name);

    private static nint IfIndexToName(uint index, Span<byte> name) => IfIndexToNameNative(index, ref MemoryMarshal.GetReference(name));

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    private static partial int IoctlNative(int fd, nuint request, ref byte arg);

    private static int Ioctl(int fd, uint request, Span<byte> arg) => IoctlNative(fd, request, ref MemoryMarshal.GetReference(arg));
}
