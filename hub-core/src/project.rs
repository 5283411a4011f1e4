//! The project model: a folder on disk, a stack of services and the host ports it holds.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{HubError, Result};
use crate::paths::{Missing, Roots};
use crate::ports::{PortRequest, PortSet};

/// Longest accepted project name, in characters.
pub const MAX_NAME_CHARS: usize = 255;

/// A registered project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    /// Registry id.
    pub id: i64,
    /// Display name, unique, 1–255 characters, trimmed.
    pub name: String,
    /// URL- and container-safe form of the name, unique (see [`slugify`]).
    pub slug: String,
    /// Absolute, canonical path of the project folder.
    pub path: PathBuf,
    /// The engine the stack runs on: [`LOCAL_HOST`], or the name of a host whose workers take
    /// the queue of that name (see [`Project::queue`]).
    pub host: String,
    /// Host ports held by the project, running or not.
    pub ports: PortSet,
    /// Lifecycle state of the stack.
    pub status: ProjectStatus,
    /// Last known health of the stack.
    pub health: Health,
    /// Why the last operation failed, when `status` is `error`.
    pub last_error: Option<String>,
    /// When the project was registered.
    pub created_at: DateTime<Utc>,
    /// When the project row last changed.
    pub updated_at: DateTime<Utc>,
    /// When the stack last finished starting.
    pub last_started: Option<DateTime<Utc>>,
    /// When the stack last finished stopping.
    pub last_stopped: Option<DateTime<Utc>>,
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// The lowercase name stored in the database and shown in JSON.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = HubError;

            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(HubError::invalid(
                        stringify!($name).to_lowercase(),
                        format!("unknown value '{other}'"),
                    )),
                }
            }
        }
    };
}

string_enum! {
    /// Lifecycle state of a project's stack.
    ProjectStatus {
        /// Nothing runs.
        Stopped => "stopped",
        /// A start task is bringing the stack up.
        Starting => "starting",
        /// Every service is up.
        Running => "running",
        /// A stop task is taking the stack down.
        Stopping => "stopping",
        /// The last operation failed; see `last_error`.
        Error => "error",
    }
}

string_enum! {
    /// Health of a project's stack as last observed.
    Health {
        /// Every service passes its health check.
        Healthy => "healthy",
        /// At least one service fails its health check.
        Unhealthy => "unhealthy",
        /// Not checked, or not running.
        Unknown => "unknown",
    }
}

/// What a caller supplies to register a project.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewProject {
    /// Display name; its slug must be unique too.
    pub name: String,
    /// Path of an existing folder; stored canonicalised.
    pub path: PathBuf,
    /// Ports to hold instead of allocated ones (any subset of roles).
    #[serde(default)]
    pub ports: PortRequest,
    /// The engine host it runs on (default [`LOCAL_HOST`]).
    #[serde(default)]
    pub host: Option<String>,
}

impl NewProject {
    /// A project with allocated ports.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        NewProject {
            name: name.into(),
            path: path.into(),
            ports: PortRequest::default(),
            host: None,
        }
    }

    /// Places the project on engine host `host`.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Asks for explicit ports.
    pub fn with_ports(mut self, ports: PortRequest) -> Self {
        self.ports = ports;
        self
    }
}

/// A partial change of a project; `None` fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectUpdate {
    /// New name (the slug follows it).
    pub name: Option<String>,
    /// New folder.
    pub path: Option<PathBuf>,
    /// New ports for some roles; the others keep theirs.
    #[serde(default)]
    pub ports: PortRequest,
    /// New engine host.
    #[serde(default)]
    pub host: Option<String>,
}

/// The host of a project that names none: the engine of the workers on the default queue.
pub const LOCAL_HOST: &str = "local";

/// Checks an engine host name; it names the queue the project's operations go to, so it
/// follows the queue-name rules.
pub fn validate_host(host: &str) -> Result<String> {
    crate::tasks::backend::validate_queue_name("host", host)?;
    Ok(host.to_owned())
}

impl Project {
    /// The queue the project's operations go to: the default queue for [`LOCAL_HOST`], else
    /// the queue named after its host, which only the workers of that engine take.
    pub fn queue(&self, default_queue: &str) -> String {
        if self.host == LOCAL_HOST {
            default_queue.to_owned()
        } else {
            self.host.clone()
        }
    }
}

/// How a caller names a project: by id, or by slug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectKey {
    /// The registry id.
    Id(i64),
    /// The slug.
    Slug(String),
}

impl From<i64> for ProjectKey {
    fn from(id: i64) -> Self {
        ProjectKey::Id(id)
    }
}

impl From<&str> for ProjectKey {
    /// A string of digits is an id, anything else a slug.
    fn from(key: &str) -> Self {
        match key.parse::<i64>() {
            Ok(id) => ProjectKey::Id(id),
            Err(_) => ProjectKey::Slug(key.to_owned()),
        }
    }
}

impl From<String> for ProjectKey {
    fn from(key: String) -> Self {
        ProjectKey::from(key.as_str())
    }
}

impl fmt::Display for ProjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProjectKey::Id(id) => write!(f, "{id}"),
            ProjectKey::Slug(slug) => f.write_str(slug),
        }
    }
}

/// Most projects one page of the list holds.
pub const MAX_PROJECT_PAGE: u32 = 1000;

/// One page of the project list, ordered by id, and how many projects there are in all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectPage {
    /// The page's projects.
    pub projects: Vec<Project>,
    /// Projects registered in all.
    pub total: u64,
}

/// Checks a page size: 1 to [`MAX_PROJECT_PAGE`].
pub fn validate_page_limit(limit: u32) -> crate::error::Result<()> {
    if limit == 0 || limit > MAX_PROJECT_PAGE {
        return Err(crate::error::HubError::invalid(
            "limit",
            format!("must be 1 to {MAX_PROJECT_PAGE}, not {limit}"),
        ));
    }
    Ok(())
}

/// Counts of projects by status, as the original's `/api/projects/stats` gave them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProjectStats {
    /// All registered projects.
    pub total_projects: u64,
    /// Projects whose stack runs.
    pub running: u64,
    /// Projects whose stack is stopped.
    pub stopped: u64,
    /// Projects in `error`.
    pub errors: u64,
}

/// The key an operation on a project holds while it is queued or runs: one at a time per
/// project.
pub fn operation_key(project_id: i64) -> String {
    format!("project:{project_id}")
}

/// The slug of a name: transliterated to ASCII (`"Ünïcode"` → `"unicode"`, `"日本語"` →
/// `"ri-ben-yu"`), lowercase, each run of characters outside `[a-z0-9]` replaced by one `-`,
/// leading and trailing `-` trimmed (`"My App!"` → `"my-app"`). A name with nothing left gets
/// `project-<8 hex digits>`, derived from the name so that it is stable; one of digits alone
/// gets `project-<digits>`, so that it never reads as an id.
pub fn slugify(name: &str) -> String {
    let ascii = deunicode::deunicode(name);
    let mut slug = String::with_capacity(ascii.len());
    let mut pending_dash = false;
    for ch in ascii.chars().flat_map(char::to_lowercase) {
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
            if pending_dash && !slug.is_empty() {
                slug.push('-');
            }
            pending_dash = false;
            slug.push(ch);
        } else {
            pending_dash = true;
        }
    }
    // A slug of digits alone would read as an id wherever a project is named by id or slug.
    if !slug.is_empty() && slug.bytes().all(|b| b.is_ascii_digit()) {
        return format!("project-{slug}");
    }
    if slug.is_empty() {
        // FNV-1a: tiny, and the same on every platform and release.
        let hash = name.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
            (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
        });
        slug = format!("project-{hash:08x}");
    }
    slug
}

/// Characters a name may not hold: controls, bidirectional overrides and zero-width characters
/// make a name display as something it is not (and forge log lines).
fn forbidden_in_name(ch: char) -> bool {
    ch.is_control()
        || matches!(
            ch,
            '\u{061C}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
        )
}

/// Trims and checks a name, returning it with its slug. Any script is welcome; control,
/// bidirectional-override and zero-width characters are not.
pub fn validate_name(name: &str) -> Result<(String, String)> {
    let name = name.trim();
    if name.is_empty() {
        return Err(HubError::invalid("name", "must not be empty"));
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(HubError::invalid(
            "name",
            format!("is {chars} characters long; at most {MAX_NAME_CHARS} are allowed"),
        ));
    }
    if let Some((at, ch)) = name
        .chars()
        .enumerate()
        .find(|(_, ch)| forbidden_in_name(*ch))
    {
        return Err(HubError::invalid(
            "name",
            format!(
                "character {} is U+{:04X}, a control, bidirectional or zero-width character; \
                 names may not hold those",
                at + 1,
                u32::from(ch)
            ),
        ));
    }
    Ok((name.to_owned(), slugify(name)))
}

/// Checks that `path` is an existing folder inside `roots`, and returns its canonical form.
/// Touches the file system: call it off the async threads.
pub fn validate_path(path: &Path, roots: &Roots) -> Result<PathBuf> {
    let canonical =
        roots
            .resolve("path", path, None, Missing::Refuse)
            .map_err(|err| match err {
                // A project folder that does not exist is bad input, not a missing resource.
                HubError::NotFound { .. } => {
                    HubError::invalid("path", format!("'{}' does not exist", path.display()))
                }
                HubError::Forbidden { message } => HubError::invalid("path", message),
                other => other,
            })?;
    if !canonical.is_dir() {
        return Err(HubError::invalid(
            "path",
            format!("'{}' is not a directory", path.display()),
        ));
    }
    if canonical.to_str().is_none() {
        return Err(HubError::invalid(
            "path",
            format!("'{}' is not valid UTF-8", path.display()),
        ));
    }
    Ok(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_follows_the_original_rules() {
        assert_eq!(slugify("My App"), "my-app");
        assert_eq!(slugify("  --Hello,  World!!-- "), "hello-world");
        assert_eq!(slugify("CommandCenter_2.0"), "commandcenter-2-0");
        assert_eq!(slugify("already-a-slug"), "already-a-slug");
        assert_eq!(slugify("Ünïcode Ñame"), "unicode-name");
        assert_eq!(slugify("日本語"), "ri-ben-yu");
        assert_eq!(slugify("🚀🚀"), "rocket-rocket");
        assert_eq!(slugify("2024"), "project-2024");
        assert_eq!(slugify("2024 plan"), "2024-plan");
        let fallback = slugify("!!!");
        assert!(
            fallback.starts_with("project-") && fallback.len() == 16,
            "{fallback}"
        );
        assert_eq!(slugify("!!!"), fallback, "stable");
        assert_ne!(slugify("???"), fallback);
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            validate_name("  Alpha  ").unwrap(),
            ("Alpha".into(), "alpha".into())
        );
        assert_eq!(validate_name("   ").unwrap_err().field(), Some("name"));
        assert!(validate_name(&"x".repeat(255)).is_ok());
        assert_eq!(
            validate_name(&"x".repeat(256)).unwrap_err().field(),
            Some("name")
        );
        for bad in [
            "a\0b",
            "a\u{1b}[31mred",
            "evil\u{202E}gnp.exe",
            "zero\u{200B}width",
            "x\ny",
        ] {
            assert_eq!(
                validate_name(bad).unwrap_err().field(),
                Some("name"),
                "{bad:?}"
            );
        }
        for good in ["日本語", "🚀🚀", "Ελληνικά", "***", "Ünïcode"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn project_key_parses_ids_and_slugs() {
        assert_eq!(ProjectKey::from("42"), ProjectKey::Id(42));
        assert_eq!(ProjectKey::from("alpha"), ProjectKey::Slug("alpha".into()));
    }

    #[test]
    fn statuses_round_trip_through_text() {
        for status in [
            ProjectStatus::Stopped,
            ProjectStatus::Starting,
            ProjectStatus::Running,
            ProjectStatus::Stopping,
            ProjectStatus::Error,
        ] {
            assert_eq!(status.as_str().parse::<ProjectStatus>().unwrap(), status);
        }
        assert!("bogus".parse::<Health>().is_err());
    }
}
