namespace Trellis.Policy;

/// <summary>
/// A manifest that is accepted but probably does not do what its author meant (a rule that can never match, an
/// allow that a deny of the same policy makes useless...). Formatted like <see cref="ManifestException"/>.
/// </summary>
public sealed record ManifestWarning(string File, int Line, int Column, string Field, string Problem)
{
    public SourceLocation Location => new(File, Line, Column);

    public override string ToString() =>
        Field.Length == 0 ? $"{File}:{Line}:{Column}: warning: {Problem}" : $"{File}:{Line}:{Column}: {Field}: warning: {Problem}";
}
