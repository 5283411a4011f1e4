//! The folder browser behind "add a project": lists sub-folders, confined to configured roots.
//!
//! The original listed any folder on the machine. Here every path is resolved (`..` and symlinks
//! included) before it is checked against the roots, so nothing outside them can be seen.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Entity, HubError, Result};

/// A sub-folder in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FolderEntry {
    /// Folder name.
    pub name: String,
    /// Absolute path.
    pub path: String,
}

/// One folder's listing, in the original's JSON shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FolderListing {
    /// The listed folder (canonical).
    pub current_path: String,
    /// Its parent, when that is still inside a root.
    pub parent: Option<String>,
    /// Sub-folders, sorted by name; hidden ones (`.name`) skipped.
    pub directories: Vec<FolderEntry>,
}

/// Lists folders under a fixed set of roots.
#[derive(Debug, Clone)]
pub struct FolderBrowser {
    roots: Vec<PathBuf>,
}

impl FolderBrowser {
    /// A browser confined to `roots` (canonicalised; roots that do not exist are dropped).
    /// With no usable root, the user's home folder is the root.
    pub fn new(roots: &[PathBuf]) -> Self {
        let mut usable: Vec<PathBuf> = roots
            .iter()
            .filter_map(|root| std::fs::canonicalize(root).ok())
            .filter(|root| root.is_dir())
            .collect();
        if usable.is_empty()
            && let Some(home) = dirs::home_dir().and_then(|h| std::fs::canonicalize(h).ok())
        {
            usable.push(home);
        }
        FolderBrowser { roots: usable }
    }

    /// A browser over `roots`, every one of which must be an existing folder (empty: the home
    /// folder). What a server checks at start, so that a mistyped root is an error naming it
    /// rather than a silent fall-back to the home folder.
    pub fn try_new(roots: &[PathBuf]) -> Result<Self> {
        for root in roots {
            let usable = std::fs::canonicalize(root).is_ok_and(|path| path.is_dir());
            if !usable {
                return Err(HubError::invalid(
                    "browse_root",
                    format!("'{}' is not an existing folder", root.display()),
                ));
            }
        }
        Ok(FolderBrowser::new(roots))
    }

    /// The roots in force.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Where browsing starts: the first root.
    pub fn home(&self) -> Result<&Path> {
        self.roots
            .first()
            .map(PathBuf::as_path)
            .ok_or_else(|| HubError::Forbidden {
                message: "no folder may be browsed: no browse root exists".into(),
            })
    }

    /// The sub-folders of `path` (the home folder when `None` or empty).
    pub fn list(&self, path: Option<&str>) -> Result<FolderListing> {
        let requested = match path.map(str::trim).filter(|p| !p.is_empty()) {
            Some(p) => PathBuf::from(p),
            None => self.home()?.to_path_buf(),
        };
        if !requested.is_absolute() {
            return Err(HubError::invalid(
                "path",
                format!("'{}' is not an absolute path", requested.display()),
            ));
        }
        let canonical = match std::fs::canonicalize(&requested) {
            Ok(canonical) => canonical,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                // Do not reveal whether something exists outside the roots.
                if !self.contains(&requested) {
                    return Err(self.outside(&requested));
                }
                return Err(HubError::not_found(Entity::Path, requested.display()));
            }
            Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(HubError::Forbidden {
                    message: format!("permission denied: {}", requested.display()),
                });
            }
            Err(err) => {
                return Err(HubError::io(
                    format!("cannot open {}", requested.display()),
                    err,
                ));
            }
        };
        if !self.contains(&canonical) {
            return Err(self.outside(&requested));
        }
        if !canonical.is_dir() {
            return Err(HubError::invalid(
                "path",
                format!("'{}' is not a directory", requested.display()),
            ));
        }
        let entries = std::fs::read_dir(&canonical).map_err(|err| match err.kind() {
            std::io::ErrorKind::PermissionDenied => HubError::Forbidden {
                message: format!("permission denied: {}", canonical.display()),
            },
            _ => HubError::io(format!("cannot list {}", canonical.display()), err),
        })?;
        let mut directories: Vec<FolderEntry> = entries
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.path().is_dir())
            // A link that leads outside the roots could not be opened: do not offer it.
            .filter(|entry| {
                std::fs::canonicalize(entry.path()).is_ok_and(|target| self.contains(&target))
            })
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                (!name.starts_with('.')).then(|| FolderEntry {
                    path: canonical.join(&name).display().to_string(),
                    name,
                })
            })
            .collect();
        directories.sort_by_key(|entry| entry.name.to_lowercase());
        let parent = canonical
            .parent()
            .filter(|parent| self.contains(parent))
            .map(|parent| parent.display().to_string());
        Ok(FolderListing {
            current_path: canonical.display().to_string(),
            parent,
            directories,
        })
    }

    fn contains(&self, path: &Path) -> bool {
        self.roots.iter().any(|root| path.starts_with(root))
    }

    fn outside(&self, path: &Path) -> HubError {
        HubError::Forbidden {
            message: format!(
                "'{}' is outside the folders that may be browsed",
                path.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, FolderBrowser) {
        let dir = tempfile::TempDir::new().unwrap();
        let root = dir.path().join("root");
        for sub in ["b", "A", ".hidden", "c/deeper"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::write(root.join("file.txt"), "x").unwrap();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), root.join("escape")).unwrap();
        let browser = FolderBrowser::new(&[root]);
        (dir, browser)
    }

    #[test]
    fn lists_sorted_visible_folders_only() {
        let (_dir, browser) = tree();
        let listing = browser.list(None).unwrap();
        let names: Vec<&str> = listing
            .directories
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        assert_eq!(names, ["A", "b", "c"]);
        assert_eq!(listing.parent, None, "the root's parent is outside");
        let child = browser.list(Some(&listing.directories[2].path)).unwrap();
        assert_eq!(child.parent.as_deref(), Some(listing.current_path.as_str()));
    }

    #[test]
    fn nothing_outside_the_roots_can_be_seen() {
        let (dir, browser) = tree();
        let root = browser.roots()[0].clone();
        for path in [
            dir.path().join("outside"),
            root.join("escape"),
            root.join("../outside"),
            PathBuf::from("/"),
            dir.path().join("missing-outside"),
        ] {
            let err = browser.list(Some(path.to_str().unwrap())).unwrap_err();
            assert_eq!(
                err.code(),
                crate::ErrorCode::Forbidden,
                "{}",
                path.display()
            );
        }
        let err = browser
            .list(Some(root.join("nope").to_str().unwrap()))
            .unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::NotFound);
        let err = browser
            .list(Some(root.join("file.txt").to_str().unwrap()))
            .unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::InvalidInput);
        let err = browser.list(Some("relative")).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::InvalidInput);
    }
}
