namespace Trellis.Policy;

/// <summary>Numeric identities with a fixed meaning (same numbers as Cilium's reserved identities).</summary>
public static class ReservedIdentity
{
    /// <summary>Not an identity: in policy keys it means "any peer" (including world).</summary>
    public const uint Unknown = 0;

    public const uint Host = 1;

    /// <summary>Any address outside the cluster that no more specific CIDR identity covers.</summary>
    public const uint World = 2;

    public const uint Unmanaged = 3;

    public const uint Health = 4;

    public const uint Init = 5;

    public const uint RemoteNode = 6;

    /// <summary>Ids below this are reserved; label-derived identities start here.</summary>
    public const uint MinimumAllocated = 256;

    /// <summary>Largest allocatable id: identities travel in the 24-bit VXLAN VNI.</summary>
    public const uint MaximumAllocated = 0xFF_FFFF;

    /// <summary>
    /// CIDR identities are node-local and allocated by the agent at or above this (Cilium's local identity scope),
    /// so they never collide with label-derived identities.
    /// </summary>
    public const uint CidrMinimum = 0x0100_0000;
}
