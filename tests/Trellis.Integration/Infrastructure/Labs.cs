namespace Trellis.Integration.Infrastructure;

/// <summary>Lab files the tests share. Servers are real programs started as the pods' commands.</summary>
public static class Labs
{
    public const int Http = 8080;
    public const int TcpEcho = 7000;
    public const int TcpEcho2 = 7100;
    public const int UdpEcho = 7001;
    public const int UdpEcho2 = 7002;

    /// <summary>Namespaces shop (client, server) and data (intruder). The server runs HTTP on 8080, TCP echo on
    /// 7000 and 7100, UDP echo on 7001 and 7002; client and intruder run a TCP echo on 7000 too.</summary>
    public const string Shop = """
        apiVersion: v1
        kind: Namespace
        metadata:
          name: shop
          labels:
            team: web
        ---
        apiVersion: v1
        kind: Namespace
        metadata:
          name: data
          labels:
            team: storage
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: server
          namespace: shop
          labels:
            app: server
        spec:
          containers:
            - name: http
              command: ["python3", "-m", "http.server", "8080"]
              ports:
                - containerPort: 8080
            - name: echo
              command: ["socat", "TCP-LISTEN:7000,fork,reuseaddr", "EXEC:cat"]
            - name: echo2
              command: ["socat", "TCP-LISTEN:7100,fork,reuseaddr", "EXEC:cat"]
            - name: udp
              command: ["socat", "UDP-RECVFROM:7001,fork", "EXEC:cat"]
            - name: udp2
              command: ["socat", "UDP-RECVFROM:7002,fork", "EXEC:cat"]
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: client
          namespace: shop
          labels:
            app: client
        spec:
          containers:
            - name: echo
              command: ["socat", "TCP-LISTEN:7000,fork,reuseaddr", "EXEC:cat"]
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: intruder
          namespace: data
          labels:
            app: client
        spec:
          containers:
            - name: echo
              command: ["socat", "TCP-LISTEN:7000,fork,reuseaddr", "EXEC:cat"]
        """;

    /// <summary>Brings the shop lab up and waits until every server listens.</summary>
    public static async Task<TestLab> ShopAsync([System.Runtime.CompilerServices.CallerMemberName] string test = "",
        [System.Runtime.CompilerServices.CallerFilePath] string file = "")
    {
        var lab = await TestLab.UpAsync(Shop, test, file);
        try
        {
            var server = lab.Pod("shop", "server");
            await server.WaitListeningAsync(Http);
            await server.WaitListeningAsync(TcpEcho);
            await server.WaitListeningAsync(TcpEcho2);
            await server.WaitListeningAsync(UdpEcho, "udp");
            await server.WaitListeningAsync(UdpEcho2, "udp");
            await lab.Pod("shop", "client").WaitListeningAsync(TcpEcho);
            await lab.Pod("data", "intruder").WaitListeningAsync(TcpEcho);
        }
        catch
        {
            await lab.DisposeAsync();
            throw;
        }
        return lab;
    }

    /// <summary>Ingress to shop/server: only shop/client, only on the given ports (TCP unless said).</summary>
    public static string ServerIngressFromClient(string name, params (int Port, string Proto)[] ports) => $$"""
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata:
          name: {{name}}
          namespace: shop
        spec:
          endpointSelector:
            matchLabels:
              app: server
          ingress:
            - fromEndpoints:
                - matchLabels:
                    app: client
              toPorts:
                - ports:
        {{string.Join("\n", ports.Select(p => $"                - port: \"{p.Port}\"\n                  protocol: {p.Proto}"))}}
        """;
}
