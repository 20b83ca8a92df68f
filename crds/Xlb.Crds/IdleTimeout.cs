namespace Xlb.Crds;

/// <summary>What an idle timeout may be (a mapping's spec.idleTimeout, a Service's annotation, the agent's flags): 1 s to a week.</summary>
public static class IdleTimeout
{
    public static readonly TimeSpan Min = TimeSpan.FromSeconds(1);
    public static readonly TimeSpan Max = TimeSpan.FromDays(7);

    /// <summary>The range as the CRD's rule and messages write it.</summary>
    public const string Range = "1s-168h";

    public static bool Allowed(TimeSpan t) => t >= Min && t <= Max;
}
