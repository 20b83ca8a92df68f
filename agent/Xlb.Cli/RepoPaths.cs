namespace Xlb.Cli;

/// <summary>Finds files of the source tree from the working folder or from the binary's folder.</summary>
public static class RepoPaths
{
    public static string Find(string relative)
    {
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                var candidate = Path.Combine(dir.FullName, relative);
                if (Path.Exists(candidate) && File.Exists(Path.Combine(dir.FullName, "Xlb.sln")))
                {
                    return candidate;
                }
            }
        }
        return Path.GetFullPath(relative);
    }
}
