using System.Text.Json;
using Trellis.Agent.Policy;
using Trellis.Agent.State;
using Trellis.Policy;

namespace Trellis.Agent.Tests.Policy;

/// <summary>PolicyRepository on a real FileStateStore in a scratch directory.</summary>
public sealed class PolicyRepositoryTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), $"trellis-policies-test-{Guid.NewGuid():N}");

    public void Dispose()
    {
        if (Directory.Exists(_root)) Directory.Delete(_root, recursive: true);
    }

    private static string Policy(string name) => $"""
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata:
          name: {name}
          namespace: shop
        spec:
          endpointSelector:
            matchLabels:
              app: {name}
          ingress:
            - fromEndpoints:
                - matchLabels:
                    app: client
        """;

    [Fact]
    public void Each_policy_of_a_file_is_stored_as_its_own_document_and_reloads_the_same()
    {
        var names = Enumerable.Range(1, 30).Select(i => $"p{i}").ToList();
        var yaml = string.Join("\n---\n", names.Select(Policy));
        var store = new FileStateStore(_root);
        var repo = new PolicyRepository(store);
        repo.Apply(ManifestParser.Parse(yaml, "many.yaml").OfType<PolicyResource>().ToList(), "many.yaml", yaml, DateTimeOffset.UnixEpoch);

        // Linear in the file: each stored policy holds one document, not the 30 of its file.
        foreach (var (key, json) in store.List("policies"))
        {
            var stored = JsonSerializer.Deserialize<StoredPolicy>(json)!;
            Assert.Equal(Policy(stored.Name) + "\n", stored.Yaml);
        }

        var reloaded = new PolicyRepository(new FileStateStore(_root));
        Assert.Equal(names.Order(), reloaded.All.Select(p => p.Stored.Name).Order());
        Assert.Equal(repo.All.Select(p => (p.Stored.Id, p.Resource.Name, p.Resource.Namespace)),
            reloaded.All.Select(p => (p.Stored.Id, p.Resource.Name, p.Resource.Namespace)));
    }
}
