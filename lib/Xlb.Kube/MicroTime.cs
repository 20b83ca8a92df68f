using System.Globalization;

namespace Xlb.Kube;

/// <summary>metav1.MicroTime: RFC 3339 in UTC with microseconds, as Leases and events.k8s.io Events carry it.</summary>
public static class MicroTime
{
    public static string Format(DateTimeOffset t) => t.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.ffffff'Z'", CultureInfo.InvariantCulture);
}
