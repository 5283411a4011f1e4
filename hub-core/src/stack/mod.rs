//! Stack definitions: which services a project runs and how.
//!
//! A project's stack comes from `hub.toml` in its folder, read at each start, or — without one —
//! from the default CommandCenter template (postgres, redis, backend, frontend), which is
//! written in the same format (`stack/default.toml`). The format is compose-like:
//!
//! ```toml
//! [hub]                                   # optional
//! health_timeout = "5m"                   # how long a start waits for health
//! stop_grace = "10s"                      # how long a stop waits before killing
//! allow_outside = false                   # true lets bind mounts leave the project folder
//!
//! [services.cache]
//! image = "hubtest/redis:latest"
//! command = ["/usr/bin/redis-server", "--protected-mode", "no"]   # optional
//! publish = { role = "redis", target = 6379 }   # host port = the project's redis port; optional
//! volumes = ["data:/data"]          # "name:/path" = per-project named volume, "./rel:/path" = bind
//! environment = { LOG_LEVEL = "debug" }                            # optional
//! depends_on = ["db"]                                              # optional
//! healthcheck = { test = ["CMD", "/usr/bin/redis-cli", "ping"], interval = "1s", retries = 30 }
//! working_dir = "/data"                                            # optional
//! ```
//!
//! Roles are `backend`, `frontend`, `postgres` and `redis`; no two services publish the same
//! role. Environment values may use `${BACKEND_PORT}`, `${FRONTEND_PORT}`, `${POSTGRES_PORT}`,
//! `${REDIS_PORT}`, `${PROJECT_SLUG}`, `${PROJECT_NAME}`, `${POSTGRES_PASSWORD}` and
//! `${SECRET_KEY}` (the last two generated per project, stable across starts). A file with no
//! services is a valid, empty stack.

mod file;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{HubError, Result};
use crate::paths::{Missing, Roots};
use crate::ports::PortRole;

pub use file::{DEFAULT_STACK_TOML, STACK_FILE};

/// A project's stack: its services and how long to wait for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackSpec {
    /// Services by name (sorted).
    pub services: Vec<ServiceSpec>,
    /// How long a start waits for every service to be healthy.
    pub health_timeout: Duration,
    /// How long a stop gives each container before killing it.
    pub stop_grace: Duration,
    /// Whether bind mounts may leave the project folder (`[hub] allow_outside = true`). Off by
    /// default: the hub usually runs as root beside the Docker socket, and a bind mount of `/`
    /// would hand the host to a container.
    pub allow_outside: bool,
    /// Where the definition came from (`hub.toml` path, or `default`).
    pub source: String,
}

/// One service of a stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Service name: the container's network alias, and part of its name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Command, replacing the image's.
    pub command: Option<Vec<String>>,
    /// The port role this service publishes, and the container port behind it.
    pub publish: Option<Publish>,
    /// Volumes and bind mounts.
    pub volumes: Vec<Mount>,
    /// Environment, with `${…}` placeholders still in place.
    pub environment: BTreeMap<String, String>,
    /// Services that must be healthy before this one starts.
    pub depends_on: Vec<String>,
    /// Health check; without one, health is a TCP probe of the published port (if any).
    pub healthcheck: Option<HealthSpec>,
    /// Working directory inside the container.
    pub working_dir: Option<String>,
}

/// A published port: the project's host port for `role`, forwarded to container port `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publish {
    /// Which of the project's ports.
    pub role: PortRole,
    /// The container port.
    pub target: u16,
}

/// A volume or bind mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Mount {
    /// A named volume of the project (`hub-<slug>-<name>`), kept across stop/start.
    Volume {
        /// The name in the stack file.
        name: String,
        /// Path in the container.
        target: String,
    },
    /// A folder of the host; relative paths are relative to the project folder.
    Bind {
        /// Host path as written.
        source: String,
        /// Path in the container.
        target: String,
        /// The host path, resolved (links followed) and checked to lie inside the project
        /// folder; set when the stack is loaded from a folder.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<PathBuf>,
    },
}

/// A health check in the stack file's terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSpec {
    /// `["CMD", …]` or `["CMD-SHELL", "…"]`.
    pub test: Vec<String>,
    /// Time between checks (default 5 s).
    pub interval: Duration,
    /// Time one check may take (default 5 s).
    pub timeout: Duration,
    /// Failures before `unhealthy` (default 3).
    pub retries: u32,
    /// Grace period after start (default 0).
    pub start_period: Duration,
}

impl StackSpec {
    /// The stack of the project in `folder` (canonical): its `hub.toml`, or the default
    /// template, with bind mounts resolved and confined to the folder. Reads files on a
    /// blocking thread, never on the async ones.
    pub async fn load(folder: &Path) -> Result<StackSpec> {
        let folder = folder.to_path_buf();
        tokio::task::spawn_blocking(move || StackSpec::load_blocking(&folder))
            .await
            .map_err(|err| HubError::Internal(format!("reading the stack file failed: {err}")))?
    }

    /// [`StackSpec::load`] for callers that may block.
    pub fn load_blocking(folder: &Path) -> Result<StackSpec> {
        let path = folder.join(STACK_FILE);
        let mut stack = match std::fs::read_to_string(&path) {
            Ok(text) => file::parse(&text, &path.display().to_string())?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                StackSpec::default_template()?
            }
            Err(err) => return Err(HubError::io(format!("cannot read {}", path.display()), err)),
        };
        stack.resolve_binds(folder)?;
        Ok(stack)
    }

    /// Fills in each bind mount's host path: joined to `folder`, and, unless `allow_outside`,
    /// resolved through links and refused when it leads out of the folder.
    fn resolve_binds(&mut self, folder: &Path) -> Result<()> {
        let roots = Roots::single(folder.to_path_buf());
        for service in &mut self.services {
            for mount in &mut service.volumes {
                let Mount::Bind { source, host, .. } = mount else {
                    continue;
                };
                let field = format!("{}: services.{}.volumes", self.source, service.name);
                *host =
                    Some(if self.allow_outside {
                        folder.join(&*source)
                    } else {
                        roots
                        .resolve(&field, Path::new(source.as_str()), Some(folder), Missing::Allow)
                        .map_err(|err| match err {
                            HubError::Forbidden { .. } => HubError::invalid(
                                field.clone(),
                                format!(
                                    "'{source}' leads out of the project folder through a link; \
                                     set `allow_outside = true` under [hub] to allow it"
                                ),
                            ),
                            other => other,
                        })?
                    });
            }
        }
        Ok(())
    }

    /// Parses a stack file's text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<StackSpec> {
        file::parse(text, source)
    }

    /// The default CommandCenter stack.
    pub fn default_template() -> Result<StackSpec> {
        file::parse(DEFAULT_STACK_TOML, "default")
    }

    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Services grouped in start order: each group depends only on earlier groups, so the
    /// services of one group can start together.
    pub fn start_order(&self) -> Vec<Vec<&ServiceSpec>> {
        let mut placed: HashMap<&str, usize> = HashMap::new();
        let mut levels: Vec<Vec<&ServiceSpec>> = Vec::new();
        // Validation rejected cycles, so every round places at least one service.
        while placed.len() < self.services.len() {
            let level: Vec<&ServiceSpec> = self
                .services
                .iter()
                .filter(|s| !placed.contains_key(s.name.as_str()))
                .filter(|s| s.depends_on.iter().all(|d| placed.contains_key(d.as_str())))
                .collect();
            if level.is_empty() {
                break;
            }
            for service in &level {
                placed.insert(&service.name, levels.len());
            }
            levels.push(level);
        }
        levels
    }

    /// The roles this stack publishes.
    pub fn published_roles(&self) -> Vec<PortRole> {
        self.services
            .iter()
            .filter_map(|s| s.publish.map(|p| p.role))
            .collect()
    }
}

/// Fills `${NAME}` placeholders from `vars`; an unknown name is an error naming it.
pub fn interpolate(
    value: &str,
    vars: &BTreeMap<&str, String>,
) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unclosed '${{' in '{value}'"));
        };
        let name = &after[..end];
        match vars.get(name) {
            Some(v) => out.push_str(v),
            None => {
                let known: Vec<&str> = vars.keys().copied().collect();
                return Err(format!(
                    "unknown variable ${{{name}}} (available: {})",
                    known.join(", ")
                ));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_template_is_the_commandcenter_stack() {
        let stack = StackSpec::default_template().unwrap();
        let names: Vec<&str> = stack.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["backend", "frontend", "postgres", "redis"]);
        let order: Vec<Vec<&str>> = stack
            .start_order()
            .iter()
            .map(|level| level.iter().map(|s| s.name.as_str()).collect())
            .collect();
        assert_eq!(
            order,
            [vec!["postgres", "redis"], vec!["backend"], vec!["frontend"]]
        );
        let postgres = stack.service("postgres").unwrap();
        assert_eq!(postgres.image, "postgres:15-alpine");
        assert_eq!(
            postgres.volumes,
            [Mount::Volume {
                name: "postgres-data".into(),
                target: "/var/lib/postgresql/data".into()
            }]
        );
        let mut roles = stack.published_roles();
        roles.sort();
        assert_eq!(roles, PortRole::ALL);
    }

    #[test]
    fn placeholders_are_filled_and_unknown_ones_named() {
        let vars = BTreeMap::from([("REDIS_PORT", "6389".to_string())]);
        assert_eq!(
            interpolate("redis://localhost:${REDIS_PORT}/0", &vars).unwrap(),
            "redis://localhost:6389/0"
        );
        assert_eq!(interpolate("plain", &vars).unwrap(), "plain");
        let err = interpolate("${NOPE}", &vars).unwrap_err();
        assert!(
            err.contains("${NOPE}") && err.contains("REDIS_PORT"),
            "{err}"
        );
        assert!(interpolate("${REDIS_PORT", &vars).is_err());
    }

    /// A bind mount stays inside the project folder: `/…` and `../…` are refused as written,
    /// a link that leads out is refused when the stack is loaded, unless `allow_outside`.
    #[test]
    fn bind_mounts_stay_inside_the_project_folder() {
        let dir = tempfile::TempDir::new().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        let folder = base.join("project");
        std::fs::create_dir_all(folder.join("conf")).unwrap();
        std::os::unix::fs::symlink("/etc", folder.join("etc-link")).unwrap();
        let stack_with = |hub: &str, source: &str| {
            std::fs::write(
                folder.join(STACK_FILE),
                format!("{hub}\n[services.app]\nimage = \"x\"\nvolumes = [\"{source}:/mnt\"]\n"),
            )
            .unwrap();
            StackSpec::load_blocking(&folder)
        };
        let host = |stack: StackSpec| match &stack.services[0].volumes[0] {
            Mount::Bind { host, .. } => host.clone().unwrap(),
            other => panic!("{other:?}"),
        };

        assert_eq!(host(stack_with("", "./conf").unwrap()), folder.join("conf"));
        assert_eq!(
            host(stack_with("", "./new/dir").unwrap()),
            folder.join("new/dir")
        );
        for escape in [
            "/",
            "/etc",
            "../",
            "./conf/../../x",
            "./etc-link",
            "./etc-link/ssl",
        ] {
            let err = stack_with("", escape).unwrap_err();
            assert_eq!(err.code(), crate::ErrorCode::InvalidInput, "{escape}");
            assert!(
                err.field()
                    .is_some_and(|f| f.ends_with("services.app.volumes")),
                "{escape}: {err}"
            );
        }
        let opted = stack_with("[hub]\nallow_outside = true", "/etc").unwrap();
        assert!(opted.allow_outside);
        assert_eq!(host(opted), PathBuf::from("/etc"));
    }
}
