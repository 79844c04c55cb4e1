namespace Trellis.Agent.State;

/// <summary>The agent's persistent key/value state. Keys are '/'-separated paths ("endpoints/ns/pod").
/// The embedded implementation is files; a distributed one (etcd) slots in behind the same interface.</summary>
public interface IStateStore
{
    string? Get(string key);
    /// <summary>Crash-safe: after a crash the key holds either the old or the new value, never a mix.</summary>
    void Put(string key, string value);
    bool Delete(string key);
    /// <summary>All (key, value) pairs whose key starts with <paramref name="prefix"/> + '/'.</summary>
    IReadOnlyList<KeyValuePair<string, string>> List(string prefix);
}
