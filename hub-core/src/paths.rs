//! Confining paths to a set of root folders: the rule behind the folder browser, project folders
//! and bind mounts.
//!
//! A path is resolved one component at a time, following symbolic links by hand, and every
//! component is checked against the roots *before* the file system is asked about it. So a path
//! outside the roots is refused the same way whether or not it exists (no existence oracle),
//! and a link that leads out is refused even when what it points at is missing.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Entity, HubError, Result};

/// Longest accepted path, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;

/// Most symbolic links followed while resolving one path (Linux's limit too).
const MAX_LINKS: usize = 40;

/// A set of canonical root folders that paths must stay inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    roots: Vec<PathBuf>,
}

/// What to do when a component of the path does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// A missing component is `not_found`.
    Refuse,
    /// The rest is taken as written (it cannot hide a link); used for bind mounts, whose
    /// missing source folder the engine creates.
    Allow,
}

impl Roots {
    /// Roots that must each be an existing folder; they are kept in canonical form. `field`
    /// names the setting in the error (`browse_root`, `project_root`).
    pub fn existing(field: &str, roots: &[PathBuf]) -> Result<Self> {
        let mut canonical = Vec::with_capacity(roots.len());
        for root in roots {
            match std::fs::canonicalize(root) {
                Ok(path) if path.is_dir() => canonical.push(path),
                _ => {
                    return Err(HubError::invalid(
                        field,
                        format!("'{}' is not an existing folder", root.display()),
                    ));
                }
            }
        }
        Ok(Roots { roots: canonical })
    }

    /// The roots among `roots` that exist as folders, canonical; the others are dropped.
    pub fn usable(roots: &[PathBuf]) -> Self {
        Roots {
            roots: roots
                .iter()
                .filter_map(|root| std::fs::canonicalize(root).ok())
                .filter(|root| root.is_dir())
                .collect(),
        }
    }

    /// One root taken as it is, already canonical (a project folder).
    pub fn single(root: PathBuf) -> Self {
        Roots { roots: vec![root] }
    }

    /// The roots, canonical.
    pub fn as_slice(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Whether `path` (canonical) lies inside one of the roots.
    pub fn contains(&self, path: &Path) -> bool {
        self.roots.iter().any(|root| path.starts_with(root))
    }

    /// Whether resolving may go on through `path`: inside a root, or on the way down to one.
    fn may_visit(&self, path: &Path) -> bool {
        self.roots
            .iter()
            .any(|root| path.starts_with(root) || root.starts_with(path))
    }

    /// Resolves `path` (absolute, or relative to `base`) to its canonical form inside the roots.
    ///
    /// Errors, with `field` naming the input: `invalid_input` for a relative path without a
    /// base, a NUL byte, an over-long path, a symlink loop or a file used as a folder;
    /// `forbidden` for anything that leads outside the roots (existing or not); `not_found` for
    /// a missing component inside them (unless `missing` allows it).
    pub fn resolve(
        &self,
        field: &str,
        path: &Path,
        base: Option<&Path>,
        missing: Missing,
    ) -> Result<PathBuf> {
        let bytes = path.as_os_str().as_bytes();
        if bytes.is_empty() {
            return Err(HubError::invalid(field, "must not be empty"));
        }
        if bytes.contains(&0) {
            return Err(HubError::invalid(field, "contains a NUL character"));
        }
        if bytes.len() > MAX_PATH_BYTES {
            return Err(HubError::invalid(
                field,
                format!(
                    "is {} bytes long; at most {MAX_PATH_BYTES} are allowed",
                    bytes.len()
                ),
            ));
        }
        let full = match base {
            _ if path.is_absolute() => path.to_path_buf(),
            Some(base) => base.join(path),
            None => {
                return Err(HubError::invalid(
                    field,
                    format!("'{}' is not an absolute path", path.display()),
                ));
            }
        };
        let outside = || HubError::Forbidden {
            message: format!(
                "'{}' is outside the allowed folders ({})",
                path.display(),
                self.describe()
            ),
        };

        let mut pending: VecDeque<OsString> = parts(&full);
        let mut current = PathBuf::from("/");
        let mut links = 0;
        while let Some(part) = pending.pop_front() {
            if part == ".." {
                current.pop();
                continue;
            }
            let candidate = current.join(&part);
            // Checked before the file system is asked, so that nothing outside is revealed.
            if !self.may_visit(&candidate) {
                return Err(outside());
            }
            let meta = match std::fs::symlink_metadata(&candidate) {
                Ok(meta) => meta,
                Err(err) if err.kind() == ErrorKind::NotFound && missing == Missing::Allow => {
                    current = candidate;
                    for rest in pending.drain(..) {
                        if rest == ".." {
                            current.pop();
                        } else {
                            current.push(rest);
                        }
                    }
                    break;
                }
                Err(err) => return Err(io_error(field, path, &candidate, err)),
            };
            if meta.file_type().is_symlink() {
                links += 1;
                if links > MAX_LINKS {
                    return Err(HubError::invalid(
                        field,
                        format!(
                            "'{}' goes through more than {MAX_LINKS} symbolic links (a loop?)",
                            path.display()
                        ),
                    ));
                }
                let target = std::fs::read_link(&candidate)
                    .map_err(|err| io_error(field, path, &candidate, err))?;
                if target.is_absolute() {
                    current = PathBuf::from("/");
                }
                for piece in parts(&target).into_iter().rev() {
                    pending.push_front(piece);
                }
                continue;
            }
            if !meta.is_dir() && !pending.is_empty() {
                return Err(HubError::invalid(
                    field,
                    format!("'{}' is not a directory", candidate.display()),
                ));
            }
            current = candidate;
        }
        if !self.contains(&current) {
            return Err(outside());
        }
        Ok(current)
    }

    fn describe(&self) -> String {
        let names: Vec<String> = self
            .roots
            .iter()
            .map(|root| root.display().to_string())
            .collect();
        if names.is_empty() {
            "none configured".to_owned()
        } else {
            names.join(", ")
        }
    }
}

/// The normal and `..` components of `path`, in order (`.` and the root dropped).
fn parts(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|component| match component {
            Component::Normal(name) => Some(name.to_os_string()),
            Component::ParentDir => Some(OsStr::new("..").to_os_string()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// An OS error met inside the roots, in the hub's terms: a bad path is the caller's mistake
/// (4xx), never an internal error.
fn io_error(field: &str, path: &Path, at: &Path, err: std::io::Error) -> HubError {
    match err.kind() {
        ErrorKind::NotFound => HubError::not_found(Entity::Path, path.display()),
        ErrorKind::PermissionDenied => HubError::Forbidden {
            message: format!("permission denied: {}", at.display()),
        },
        ErrorKind::NotADirectory | ErrorKind::InvalidFilename | ErrorKind::InvalidInput => {
            HubError::invalid(field, format!("'{}': {err}", path.display()))
        }
        // ELOOP: `ErrorKind::FilesystemLoop` is not stable yet.
        _ if err.raw_os_error() == Some(40) => {
            HubError::invalid(field, format!("'{}': {err}", path.display()))
        }
        _ => HubError::io(format!("cannot open {}", at.display()), err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    struct Tree {
        _dir: tempfile::TempDir,
        base: PathBuf,
        roots: Roots,
    }

    /// `base/root` is the root; `base/outside` holds a secret file; links lead in and out.
    fn tree() -> Tree {
        let dir = tempfile::TempDir::new().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        let root = base.join("root");
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::write(root.join("file.txt"), "x").unwrap();
        std::fs::create_dir_all(base.join("outside")).unwrap();
        std::fs::write(base.join("outside/secret"), "x").unwrap();
        std::os::unix::fs::symlink(base.join("outside"), root.join("escape")).unwrap();
        std::os::unix::fs::symlink("sub/deeper", root.join("inward")).unwrap();
        std::os::unix::fs::symlink("loop-b", root.join("loop-a")).unwrap();
        std::os::unix::fs::symlink("loop-a", root.join("loop-b")).unwrap();
        let roots = Roots::existing("root", &[root]).unwrap();
        Tree {
            _dir: dir,
            base,
            roots,
        }
    }

    fn code(tree: &Tree, path: &str) -> ErrorCode {
        let path = path.replace("ROOT", &tree.base.join("root").display().to_string());
        let path = path.replace("BASE", &tree.base.display().to_string());
        tree.roots
            .resolve("path", Path::new(&path), None, Missing::Refuse)
            .unwrap_err()
            .code()
    }

    #[test]
    fn outside_is_forbidden_whether_or_not_it_exists() {
        let tree = tree();
        for path in [
            "ROOT/../outside/secret",
            "ROOT/../outside/secretX",
            "ROOT/../../../etc/shadow",
            "ROOT/../../../etc/shadowX",
            "BASE/outside/secret/x",
            "BASE/outside/nofile/x",
            "ROOT/escape",
            "ROOT/escape/secret/x",
            "ROOT/escape/missing",
            "/",
        ] {
            assert_eq!(code(&tree, path), ErrorCode::Forbidden, "{path}");
        }
    }

    #[test]
    fn bad_paths_inside_are_the_callers_mistake() {
        let tree = tree();
        assert_eq!(code(&tree, "ROOT/nope"), ErrorCode::NotFound);
        for path in [
            "ROOT/file.txt/x",
            "ROOT/loop-a",
            "ROOT/loop-a/x",
            "relative",
            "ROOT/\0",
            &format!("ROOT/{}", "a".repeat(300)),
            &format!("ROOT/{}", "a/".repeat(2500)),
        ] {
            assert_eq!(code(&tree, path), ErrorCode::InvalidInput, "{path:.40}");
        }
    }

    #[test]
    fn links_inside_resolve_to_their_target() {
        let tree = tree();
        let root = tree.base.join("root");
        let resolved = tree
            .roots
            .resolve(
                "path",
                &root.join("inward/../deeper"),
                None,
                Missing::Refuse,
            )
            .unwrap();
        assert_eq!(resolved, root.join("sub/deeper"));
        let relative = tree
            .roots
            .resolve(
                "path",
                Path::new("./sub/./new/x"),
                Some(&root),
                Missing::Allow,
            )
            .unwrap();
        assert_eq!(relative, root.join("sub/new/x"));
        let err = tree
            .roots
            .resolve(
                "path",
                Path::new("new/../../x"),
                Some(&root),
                Missing::Allow,
            )
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Forbidden);
    }
}
