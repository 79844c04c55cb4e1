namespace Trellis.Agent.State.Etcd;

/// <summary>etcd refused or failed a request (not a connectivity problem: see <see cref="EtcdUnavailableException"/>).
/// An <see cref="IOException"/>, like the file store's failures, so a caller of <see cref="IStateStore"/> handles both.</summary>
public class EtcdException : IOException
{
    public EtcdException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>No etcd member answered within the request timeout.</summary>
public sealed class EtcdUnavailableException : EtcdException
{
    public IReadOnlyList<string> Endpoints { get; }

    public EtcdUnavailableException(string message, IReadOnlyList<string> endpoints, Exception? inner)
        : base(message, inner) => Endpoints = endpoints;
}
