using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Trellis.Bpf.Tests;

/// <summary>Needs root and a cgroup2 mount. A fresh cgroup named after the test gets deny_ports
/// (cgroup/connect4); a real child process moved into it connects to real listeners in this process.</summary>
public sealed class CgroupTests : IDisposable
{
    private readonly BpfObject _obj = TestPrograms.Load();
    private readonly string _cgroup;
    private readonly TcpListener _denied = new(IPAddress.Loopback, 0);
    private readonly TcpListener _allowed = new(IPAddress.Loopback, 0);

    public CgroupTests()
    {
        var root = BpfFs.FindCgroup2Mount()
            ?? throw new InvalidOperationException("cgroup2 is not mounted; mount it with 'mount -t cgroup2 none /sys/fs/cgroup/unified'");
        _cgroup = Path.Combine(root, "trellis-test-connect4-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(_cgroup);
        _denied.Start();
        _allowed.Start();
    }

    public void Dispose()
    {
        _denied.Stop();
        _allowed.Stop();
        _obj.Dispose(); // closing the last fd does not detach: the cgroup's removal does
        for (int i = 0; i < 50 && Directory.Exists(_cgroup); i++)
        {
            try { Directory.Delete(_cgroup); }
            catch (IOException) { Thread.Sleep(20); } // EBUSY until the exited child is gone from cgroup.procs
        }
    }

    private int Port(TcpListener l) => ((IPEndPoint)l.LocalEndpoint).Port;

    /// <summary>Runs python3 inside the cgroup; prints "ok" or the connect errno.</summary>
    private string ConnectFromCgroup(int port)
    {
        var script =
            "import socket,errno\n" +
            "s=socket.socket()\n" +
            "try:\n" +
            $"    s.connect(('127.0.0.1',{port})); print('ok')\n" +
            "except OSError as e:\n" +
            "    print(errno.errorcode[e.errno])\n";
        var r = Shell.Run("sh", "-c", $"echo $$ > {_cgroup}/cgroup.procs && exec /usr/bin/python3 -c \"$0\"", script);
        Assert.True(r.ExitCode == 0, $"child failed: {r.StdErr}");
        return r.StdOut.Trim();
    }

    [Fact]
    public void Connect_to_a_denied_port_fails_with_EPERM_and_other_ports_connect()
    {
        var prog = _obj.Program("deny_ports");
        _obj.Map("denied_ports").Update((ushort)Port(_denied), (byte)1);
        Assert.Equal("ok", ConnectFromCgroup(Port(_denied))); // not attached yet

        Cgroup.Attach(_cgroup, prog, CgroupAttachType.Inet4Connect);
        Assert.Equal([prog.Info().Id], Cgroup.Query(_cgroup, CgroupAttachType.Inet4Connect));

        Assert.Equal("EPERM", ConnectFromCgroup(Port(_denied)));
        Assert.Equal("ok", ConnectFromCgroup(Port(_allowed)));

        // This process is not in the cgroup: the same port is reachable from here.
        using (var c = new TcpClient()) c.Connect(IPAddress.Loopback, Port(_denied));

        Assert.True(Cgroup.Detach(_cgroup, prog, CgroupAttachType.Inet4Connect));
        Assert.Empty(Cgroup.Query(_cgroup, CgroupAttachType.Inet4Connect));
        Assert.Equal("ok", ConnectFromCgroup(Port(_denied)));
    }

    [Fact]
    public void Detach_of_a_program_not_attached_returns_false()
    {
        Assert.False(Cgroup.Detach(_cgroup, _obj.Program("deny_ports"), CgroupAttachType.Inet4Connect));
    }

    [Fact]
    public void Attach_to_a_missing_cgroup_fails_naming_the_path()
    {
        var e = Assert.Throws<BpfException>(() =>
            Cgroup.Attach(_cgroup + "-missing", _obj.Program("deny_ports"), CgroupAttachType.Inet4Connect));
        Assert.Contains(_cgroup + "-missing", e.Message);
        Assert.Equal(2, e.Errno);
    }

    [Fact]
    public void Cgroup2_mount_is_found_and_recognised()
    {
        var root = BpfFs.FindCgroup2Mount();
        Assert.NotNull(root);
        Assert.True(BpfFs.IsCgroup2(root));
        Assert.False(BpfFs.IsCgroup2("/sys/fs/bpf"));
    }
}
