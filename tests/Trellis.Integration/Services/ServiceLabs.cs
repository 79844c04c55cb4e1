namespace Trellis.Integration.Services;

/// <summary>Lab file pieces the service tests share.</summary>
internal static class ServiceLabs
{
    /// <summary>Namespace shop and a client pod that only sleeps (commands run in it with exec), ending with a
    /// document separator so the test's own documents follow.</summary>
    public const string ShopWithClient = """
        apiVersion: v1
        kind: Namespace
        metadata: {name: shop}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: client, namespace: shop, labels: {app: client}}
        spec:
          containers: [{name: c, command: ["sleep", "infinity"]}]
        ---

        """;
}
