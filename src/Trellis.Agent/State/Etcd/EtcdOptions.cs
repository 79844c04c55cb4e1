namespace Trellis.Agent.State.Etcd;

/// <summary>How to reach etcd and where in it this cluster's keys live.</summary>
public sealed record EtcdOptions
{
    /// <summary>Client URLs of the members ("http://10.0.0.1:2379" or "10.0.0.1:2379"). Calls are spread over the
    /// members that answer; a member that is down is skipped until it is back.</summary>
    public required IReadOnlyList<string> Endpoints { get; init; }

    /// <summary>Every key of this cluster is stored under "/trellis/&lt;Cluster&gt;/", so clusters (and tests) can share
    /// an etcd without seeing each other.</summary>
    public string Cluster { get; init; } = "default";

    /// <summary>How long one store call may take, retries over members included, before it throws
    /// <see cref="EtcdUnavailableException"/>. Covers a leader election (about a second with etcd's defaults).</summary>
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>How long one attempt on one member may take before the call is retried (a member that accepts a
    /// connection but cannot commit, e.g. cut off from the others, is given up on after this).</summary>
    public TimeSpan AttemptTimeout { get; init; } = TimeSpan.FromSeconds(3);

    /// <summary>Upper bound of the pause between two connection attempts to a member that is down, so a member that
    /// comes back is used again within about this long.</summary>
    public TimeSpan MaxReconnectBackoff { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>Connect to the members from this network namespace (a path such as /proc/1/ns/net) instead of the
    /// process's own: a lab node's agent runs in the node's namespace, etcd is reached through the host's.</summary>
    public string? NetworkNamespace { get; init; }

    /// <summary>A comma-separated list of client URLs as given on the command line (`--etcd`), each checked as
    /// <see cref="Endpoints"/> requires. Throws <see cref="FormatException"/> with a message for the user.</summary>
    public static IReadOnlyList<string> ParseEndpoints(string text)
    {
        var endpoints = (text ?? "").Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        if (endpoints.Length == 0)
            throw new FormatException("no etcd endpoint given; pass client URLs, e.g. --etcd http://10.0.0.1:2379,http://10.0.0.2:2379");
        foreach (var e in endpoints)
        {
            try { EtcdConnection.ParseEndpoint(e); }
            catch (ArgumentException x) { throw new FormatException(x.Message.Split(" (Parameter")[0]); }
        }
        return endpoints;
    }

    /// <summary>Whether <paramref name="name"/> can name a cluster (it becomes one etcd key segment).</summary>
    public static bool IsValidClusterName(string name) =>
        name.Length is > 0 and <= 63 && name.All(c => c is (>= 'a' and <= 'z') or (>= '0' and <= '9') or '-') && name[0] != '-' && name[^1] != '-';
}
