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

    /// <summary>Puts every pair, as if by one <see cref="Put"/> each in order (a later duplicate of a key wins),
    /// but in one step that implementations may make much cheaper (the file store syncs the disk about once,
    /// not once per key). Guarantees:
    /// <list type="bullet">
    /// <item>Per key crash-safe like <see cref="Put"/>: after a crash each key holds its old or its new value, never a mix.</item>
    /// <item>NOT atomic across keys: a crash or I/O error during the call may leave any subset of the keys updated
    /// (the caller must be able to redo the batch). When the call returns normally, every pair is durable.</item>
    /// <item>Every key is validated first: an <see cref="ArgumentException"/> naming the bad key means nothing was written.</item>
    /// <item>While it runs, other calls on the same store instance wait: they see the store before or after the batch.</item>
    /// <item>An empty batch is a no-op.</item>
    /// </list></summary>
    void PutMany(IReadOnlyList<KeyValuePair<string, string>> items);

    /// <summary>Deletes every key that exists; returns how many did. Same guarantees as <see cref="PutMany"/>:
    /// each key is crash-safely present or gone, not atomic across keys, all keys validated first.</summary>
    int DeleteMany(IReadOnlyCollection<string> keys);
}
