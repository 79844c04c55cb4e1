namespace Trellis.Integration;

// The machine running these has few cores and every lab runs an agent: two collections, so at most two labs
// are up at once. Tests inside a collection run one after the other.
[CollectionDefinition(Name)]
public sealed class LabCollectionA
{
    public const string Name = "labs A";
}

[CollectionDefinition(Name)]
public sealed class LabCollectionB
{
    public const string Name = "labs B";
}
