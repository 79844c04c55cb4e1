using System.Diagnostics;
using Trellis.Datapath;

namespace Trellis.Agent.Proxy;

/// <summary>
/// The node's policy routing for packets the datapath hands to the L7 proxy: marked packets are addressed to other
/// hosts (the original destination) and would be forwarded; a fwmark rule sends them to a table whose default
/// route is local, so the stack delivers them to the socket bpf_sk_assign chose (Cilium's TPROXY routing).
/// Idempotent; run in the node's network namespace.
/// </summary>
public static class ProxyRouting
{
    private const string RulePriority = "9000";

    public static void Ensure()
    {
        var mark = $"0x{ProxyMarks.ToProxy:x}/0x{ProxyMarks.Mask:x}";
        var table = ProxyMarks.RouteTable.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var rules = Ip("-4", "rule", "show", "table", table);
        if (!rules.Contains($"fwmark {mark}", StringComparison.Ordinal))
            Ip("-4", "rule", "add", "fwmark", mark, "lookup", table, "pref", RulePriority);
        Ip("-4", "route", "replace", "local", "0.0.0.0/0", "dev", "lo", "table", table);
    }

    private static string Ip(params string[] args)
    {
        var psi = new ProcessStartInfo("ip") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException("cannot run ip");
        var output = p.StandardOutput.ReadToEnd();
        var error = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0)
            throw new DatapathException($"ip {string.Join(' ', args)} failed: {error.Trim()} (the L7 proxy's policy routing)");
        return output;
    }
}
