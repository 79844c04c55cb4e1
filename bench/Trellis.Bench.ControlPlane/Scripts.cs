namespace Trellis.Bench.ControlPlane;

/// <summary>The programs the lab's pods run. They share the host's filesystem and clock (CLOCK_REALTIME is not
/// namespaced), so their timestamps compare directly with the bench's.</summary>
internal static class Scripts
{
    public const int StreamPort = 9000; // client -> server, the port the toggled policy allows or not
    public const int ProbePort = 9001;  // new pods -> server, always allowed to app=probe
    public const int DeniedPort = 9002; // the toggled policy's "deny" version allows this port instead of StreamPort

    /// <summary>Server pod: logs every UDP datagram as "RECV_NS PORT SRC PAYLOAD", and for the probe port creates
    /// WORK/ack/NAME at the first datagram of each probe (so the probe stops sending).</summary>
    public const string Server = """
        # Written by bench/Trellis.Bench.ControlPlane: the server pod.
        import os, select, socket, sys, time
        work = sys.argv[1]
        stream_port, probe_port = int(sys.argv[2]), int(sys.argv[3])
        socks = {}
        for port in (stream_port, probe_port):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            s.bind(("0.0.0.0", port))
            s.setblocking(False)
            socks[s] = port
        os.makedirs(os.path.join(work, "ack"), exist_ok=True)
        log = open(os.path.join(work, "server.log"), "a", buffering=1 << 16)
        acked = set()
        open(os.path.join(work, "server.ready"), "w").close()
        while True:
            ready, _, _ = select.select(list(socks), [], [])
            for s in ready:
                port = socks[s]
                while True:
                    try:
                        data, addr = s.recvfrom(512)
                    except BlockingIOError:
                        break
                    now = time.time_ns()
                    text = data.decode("ascii", "replace").strip()
                    log.write(f"{now} {port} {addr[0]} {text}\n")
                    if port == probe_port:
                        name = text.split(" ", 1)[0]
                        if name not in acked and name.replace("-", "").isalnum():
                            acked.add(name)
                            open(os.path.join(work, "ack", name), "w").close()
            log.flush()
        """;

    /// <summary>Client pod: while WORK/stream.on exists, sends "SEQ SEND_NS" to the server every INTERVAL_US from one
    /// UDP socket (one flow, so every packet meets the policy: Trellis looks policy up for every packet of the original
    /// direction) and logs "SEQ SEND_NS" for every datagram sent.</summary>
    public const string Client = """
        # Written by bench/Trellis.Bench.ControlPlane: the client pod's steady stream.
        import os, socket, sys, time
        work, ip, port, interval = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) / 1e6
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect((ip, port))
        log = open(os.path.join(work, "client.log"), "a", buffering=1 << 16)
        on = os.path.join(work, "stream.on")
        seq, enabled, next_check = 0, False, 0.0
        while True:
            now = time.monotonic()
            if now >= next_check:
                log.flush()
                enabled = os.path.exists(on)
                next_check = now + 0.02
            if not enabled:
                time.sleep(0.02)
                continue
            t = time.time_ns()
            try:
                s.send(f"{seq} {t}".encode())
                log.write(f"{seq} {t}\n")
            except OSError:
                pass  # not sent (e.g. ECONNREFUSED from an earlier ICMP error): not logged, so never counted
            seq += 1
            time.sleep(interval)
        """;

    /// <summary>A new pod's command (bash: starts in a few ms, unlike python): one UDP datagram "NAME SEQ EPOCHREALTIME"
    /// to the server about every millisecond, each from a new socket (a new flow), until the server acknowledges
    /// (WORK/ack/NAME) or 3,000 were sent.</summary>
    public static string Probe(string name, string serverIp, string work) => $$"""
        exec 9<> <(:)
        i=0
        while [ $i -lt 3000 ] && [ ! -e {{work}}/ack/{{name}} ]; do
          echo "{{name}} $i $EPOCHREALTIME" >/dev/udp/{{serverIp}}/{{ProbePort}}
          i=$((i+1))
          read -t 0.001 -u 9
        done
        """;
}
