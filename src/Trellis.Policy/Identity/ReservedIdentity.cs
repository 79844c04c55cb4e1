namespace Trellis.Policy;

/// <summary>Numeric identities with a fixed meaning (same numbers as Cilium).</summary>
public static class ReservedIdentity
{
    /// <summary>Not an identity: in policy keys it means "any peer".</summary>
    public const uint Unknown = 0;

    public const uint Host = 1;

    public const uint World = 2;

    /// <summary>Ids below this are reserved; label-derived identities start here.</summary>
    public const uint MinimumAllocated = 256;

    /// <summary>Largest allocatable id: identities travel in the 24-bit VXLAN VNI.</summary>
    public const uint MaximumAllocated = 0xFF_FFFF;
}
