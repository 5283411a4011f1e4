//! Build contexts: a folder packed as the tar archive the engine's build API takes, leaving out
//! what its `.dockerignore` names (as `docker build` does), so a `node_modules` folder is not
//! sent to the engine on every build.

use std::io;
use std::path::Path;

/// The patterns of a `.dockerignore`: `*`, `?` and `**` wildcards, `!` to take a path back, the
/// last matching line deciding. A pattern that matches a folder leaves out all of it.
#[derive(Debug, Default)]
struct Ignore {
    rules: Vec<(bool, Vec<String>)>,
}

impl Ignore {
    fn parse(text: &str) -> Self {
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|line| {
                let (keep, pattern) = match line.strip_prefix('!') {
                    Some(rest) => (true, rest.trim()),
                    None => (false, line),
                };
                let segments = pattern
                    .trim_start_matches("./")
                    .split('/')
                    .filter(|s| !s.is_empty() && *s != ".")
                    .map(str::to_owned)
                    .collect();
                (keep, segments)
            })
            .collect();
        Ignore { rules }
    }

    /// Whether `path` (relative, `/`-separated) is left out.
    fn excludes(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').collect();
        let mut excluded = false;
        for (keep, pattern) in &self.rules {
            if matches(pattern, &parts) {
                excluded = !keep;
            }
        }
        excluded
    }
}

/// Whether the pattern's segments match the path's, `**` standing for any number of them.
fn matches(pattern: &[String], parts: &[&str]) -> bool {
    match pattern.split_first() {
        None => parts.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=parts.len()).any(|skip| matches(rest, &parts[skip..]))
        }
        Some((first, rest)) => match parts.split_first() {
            Some((part, others)) => segment_matches(first, part) && matches(rest, others),
            None => false,
        },
    }
}

/// One path segment against a glob segment: `*` any run of characters, `?` one character.
fn segment_matches(glob: &str, text: &str) -> bool {
    let glob: Vec<char> = glob.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut g, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if g < glob.len() && (glob[g] == '?' || glob[g] == text[t]) {
            g += 1;
            t += 1;
        } else if g < glob.len() && glob[g] == '*' {
            star = Some((g, t));
            g += 1;
        } else if let Some((sg, st)) = star {
            g = sg + 1;
            t = st + 1;
            star = Some((sg, st + 1));
        } else {
            return false;
        }
    }
    glob[g..].iter().all(|c| *c == '*')
}

/// `folder` as a tar archive, without what its `.dockerignore` leaves out. Links are stored as
/// links, so a context cannot bring in files from outside the folder through them.
pub(crate) fn pack(folder: &Path) -> io::Result<Vec<u8>> {
    let ignore = match std::fs::read_to_string(folder.join(".dockerignore")) {
        Ok(text) => Ignore::parse(&text),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ignore::default(),
        Err(err) => return Err(err),
    };
    let mut archive = tar::Builder::new(Vec::new());
    archive.follow_symlinks(false);
    add_folder(&mut archive, folder, "", &ignore)?;
    archive.into_inner()
}

fn add_folder(
    archive: &mut tar::Builder<Vec<u8>>,
    folder: &Path,
    prefix: &str,
    ignore: &Ignore,
) -> io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(folder)?.collect::<io::Result<_>>()?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not valid UTF-8", entry.path().display()),
            ));
        };
        let relative = if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}/{name}")
        };
        // The Dockerfile and .dockerignore always go, as docker build sends them regardless.
        let always = prefix.is_empty() && (name == "Dockerfile" || name == ".dockerignore");
        if !always && ignore.excludes(&relative) {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_dir() {
            archive.append_dir(&relative, entry.path())?;
            add_folder(archive, &entry.path(), &relative, ignore)?;
        } else {
            archive.append_path_with_name(entry.path(), &relative)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_docker_build() {
        assert!(segment_matches("*.log", "app.log"));
        assert!(segment_matches("a?c", "abc"));
        assert!(!segment_matches("*.log", "app.txt"));
        assert!(segment_matches("*", "anything"));
        let ignore = Ignore::parse(
            "# build output\nnode_modules\n**/*.pyc\n/dist/**\n*.md\n!README.md\n./tmp\n",
        );
        for left_out in [
            "node_modules",
            "src/cache/x.pyc",
            "x.pyc",
            "dist/app.js",
            "NOTES.md",
            "tmp",
        ] {
            assert!(ignore.excludes(left_out), "{left_out}");
        }
        for kept in [
            "src/main.py",
            "README.md",
            "docs/NOTES.md",
            "src/node_modules",
        ] {
            assert!(!ignore.excludes(kept), "{kept}");
        }
    }

    #[test]
    fn a_packed_context_leaves_out_what_dockerignore_names() {
        let dir = tempfile::TempDir::new().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("node_modules/lib")).unwrap();
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(root.join("node_modules/lib/big.js"), "x").unwrap();
        std::fs::write(root.join("src/app.js"), "y").unwrap();
        std::fs::write(root.join("Dockerfile"), "FROM scratch").unwrap();
        std::fs::write(root.join(".dockerignore"), "node_modules\nDockerfile\n").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("src/passwd")).unwrap();
        let bytes = pack(root).unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut names: Vec<String> = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            if entry.path().unwrap().ends_with("passwd") {
                assert!(
                    entry.header().entry_type().is_symlink(),
                    "a link stays a link"
                );
            }
            names.push(entry.path().unwrap().display().to_string());
        }
        names.sort();
        assert_eq!(
            names,
            [
                ".dockerignore",
                "Dockerfile",
                "src",
                "src/app.js",
                "src/passwd"
            ]
        );
    }
}
