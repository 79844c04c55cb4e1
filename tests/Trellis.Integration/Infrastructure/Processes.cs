namespace Trellis.Integration.Infrastructure;

public static class Processes
{
    /// <summary>Whether the process still runs. A zombie leader counts as running while other threads of it
    /// still exit: they share its file descriptors (the agent's listening socket among them).</summary>
    public static bool IsRunning(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            return stat[stat.LastIndexOf(')') + 2] != 'Z' || Directory.EnumerateDirectories($"/proc/{pid}/task").Skip(1).Any();
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException or IOException)
        {
            return false;
        }
    }
}
