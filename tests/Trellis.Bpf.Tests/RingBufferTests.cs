using System.Runtime.InteropServices;

namespace Trellis.Bpf.Tests;

/// <summary>Needs root. record_packet writes one record per run into test_events.</summary>
public sealed class RingBufferTests : IDisposable
{
    private readonly BpfObject _obj = TestPrograms.Load();

    public void Dispose() => _obj.Dispose();

    [Fact]
    public void Record_written_by_a_test_run_arrives_through_Poll()
    {
        var records = new List<TestRecord>();
        using var rb = new RingBuffer(_obj.Map("test_events"), r => records.Add(MemoryMarshal.Read<TestRecord>(r)));
        Assert.Equal(0, rb.Poll(0));

        var packet = Packets.Udp(payload: 20);
        _obj.Program("record_packet").TestRun(packet, repeat: 3);

        var n = rb.Poll(1000);
        Assert.Equal(3, n);
        Assert.Equal(3, records.Count);
        Assert.All(records, r =>
        {
            Assert.Equal(TestRecord.ExpectedMagic, r.Magic);
            Assert.Equal((uint)packet.Length, r.Len);
            Assert.Equal(1u, r.Ifindex); // BPF_PROG_TEST_RUN runs on the netns' loopback
            Assert.Equal(0x0800u, r.Protocol);
        });
        Assert.Equal(0, rb.HandlerErrors);
    }

    [Fact]
    public void Handler_exception_is_counted_not_thrown_through_libbpf()
    {
        using var rb = new RingBuffer(_obj.Map("test_events"), _ => throw new InvalidOperationException("boom"));
        _obj.Program("record_packet").TestRun(Packets.Udp());
        Assert.Equal(1, rb.Poll(1000));
        Assert.Equal(1, rb.HandlerErrors);
        Assert.IsType<InvalidOperationException>(rb.LastHandlerError);
    }

    [Fact]
    public void Consume_takes_what_is_there_without_waiting()
    {
        int count = 0;
        using var rb = new RingBuffer(_obj.Map("test_events"), _ => count++);
        Assert.Equal(0, rb.Consume());
        _obj.Program("record_packet").TestRun(Packets.Udp(), repeat: 2);
        Assert.Equal(2, rb.Consume());
        Assert.Equal(2, count);
        Assert.Equal(0, rb.Consume());
    }

    [Fact]
    public void Ring_buffer_over_a_non_ringbuf_map_is_rejected()
    {
        var e = Assert.Throws<ArgumentException>(() => new RingBuffer(_obj.Map("test_hash"), _ => { }));
        Assert.Contains("not a ring buffer", e.Message);
    }

    [Fact]
    public void Poll_after_dispose_throws_ObjectDisposed()
    {
        var rb = new RingBuffer(_obj.Map("test_events"), _ => { });
        rb.Dispose();
        rb.Dispose();
        Assert.Throws<ObjectDisposedException>(() => rb.Poll(0));
    }
}
