//! The folder browser behind "add a project": lists sub-folders, confined to configured roots.
//!
//! The original listed any folder on the machine. Here every path is resolved (`..` and symlinks
//! included) before it is checked against the roots, so nothing outside them can be seen.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{HubError, Result};
use crate::paths::{Missing, Roots};

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
    roots: Roots,
}

impl FolderBrowser {
    /// A browser confined to `roots` (canonicalised; roots that do not exist are dropped).
    /// With no usable root, the user's home folder is the root.
    pub fn new(roots: &[PathBuf]) -> Self {
        let mut usable = Roots::usable(roots);
        if usable.as_slice().is_empty() {
            usable = Roots::usable(&default_roots());
        }
        FolderBrowser { roots: usable }
    }

    /// A browser over `roots`, every one of which must be an existing folder (empty: the home
    /// folder). What a server checks at start, so that a mistyped root is an error naming it
    /// rather than a silent fall-back to the home folder.
    pub fn try_new(roots: &[PathBuf]) -> Result<Self> {
        if roots.is_empty() {
            return Ok(FolderBrowser::new(roots));
        }
        Ok(FolderBrowser {
            roots: Roots::existing("browse_root", roots)?,
        })
    }

    /// The roots in force.
    pub fn roots(&self) -> &[PathBuf] {
        self.roots.as_slice()
    }

    /// Where browsing starts: the first root.
    pub fn home(&self) -> Result<&Path> {
        self.roots
            .as_slice()
            .first()
            .map(PathBuf::as_path)
            .ok_or_else(|| HubError::Forbidden {
                message: "no folder may be browsed: no browse root exists".into(),
            })
    }

    /// [`FolderBrowser::list`] on a blocking thread, for async callers: it reads the file
    /// system.
    pub async fn list_async(&self, path: Option<String>) -> Result<FolderListing> {
        let browser = self.clone();
        tokio::task::spawn_blocking(move || browser.list(path.as_deref()))
            .await
            .map_err(|err| HubError::Internal(format!("folder listing failed: {err}")))?
    }

    /// The sub-folders of `path` (the home folder when `None` or empty).
    pub fn list(&self, path: Option<&str>) -> Result<FolderListing> {
        let requested = match path.map(str::trim).filter(|p| !p.is_empty()) {
            Some(p) => PathBuf::from(p),
            None => self.home()?.to_path_buf(),
        };
        let canonical = self
            .roots
            .resolve("path", &requested, None, Missing::Refuse)?;
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
                std::fs::canonicalize(entry.path()).is_ok_and(|target| self.roots.contains(&target))
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
            .filter(|parent| self.roots.contains(parent))
            .map(|parent| parent.display().to_string());
        Ok(FolderListing {
            current_path: canonical.display().to_string(),
            parent,
            directories,
        })
    }
}

/// The roots used when none is configured: the user's home folder.
pub fn default_roots() -> Vec<PathBuf> {
    dirs::home_dir().into_iter().collect()
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
