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
}
