namespace Trellis.Policy;

/// <summary>
/// A manifest that cannot be accepted, with the exact place: "{file}:{line}:{col}: {field}: {problem}".
/// <see cref="Field"/> is a path such as spec.ingress[0].toPorts[0].ports[1].protocol; it is empty for YAML syntax
/// errors, and then the message leaves it out.
/// </summary>
public sealed class ManifestException : Exception
{
    public ManifestException(string file, int line, int column, string field, string problem, Exception? inner = null)
        : base(Format(file, line, column, field, problem), inner)
    {
        File = file;
        Line = line;
        Column = column;
        Field = field;
        Problem = problem;
    }

    public string File { get; }

    public int Line { get; }

    public int Column { get; }

    public string Field { get; }

    /// <summary>What is wrong, without the location prefix.</summary>
    public string Problem { get; }

    public SourceLocation Location => new(File, Line, Column);

    private static string Format(string file, int line, int column, string field, string problem) =>
        field.Length == 0 ? $"{file}:{line}:{column}: {problem}" : $"{file}:{line}:{column}: {field}: {problem}";
}
