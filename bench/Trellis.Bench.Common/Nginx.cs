namespace Trellis.Bench.Common;

/// <summary>The server the HTTP benches measure against.</summary>
public static class Nginx
{
    /// <summary>The smallest server that answers HTTP: 200 "ok" to every request on <paramref name="ports"/>, no
    /// access log, no disk I/O per request, keep-alive without limits; its pid, error log and temp paths under
    /// <paramref name="dir"/>. <paramref name="header"/>: the comment on top (who wrote the file).</summary>
    public static string Conf(string header, string dir, int workers, int workerConnections, IEnumerable<int> ports) => $$"""
        {{header}}
        worker_processes {{workers}};
        pid {{dir}}/nginx.pid;
        error_log {{dir}}/error.log warn;
        events { worker_connections {{workerConnections}}; }
        http {
            access_log off;
            client_body_temp_path {{dir}}/client_body;
            proxy_temp_path {{dir}}/proxy;
            fastcgi_temp_path {{dir}}/fastcgi;
            uwsgi_temp_path {{dir}}/uwsgi;
            scgi_temp_path {{dir}}/scgi;
            default_type text/plain;
            keepalive_requests 1000000000;
            keepalive_timeout 300s;
            server {
                {{string.Join(" ", ports.Select(p => $"listen {p};"))}}
                location / { return 200 "ok\n"; }
            }
        }

        """;
}
