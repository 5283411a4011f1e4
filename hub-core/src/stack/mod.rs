//! Stack definitions: which services a project runs and how.
//!
//! A project's stack comes from `hub.toml` in its folder, read at each start; without one, from
//! its compose file (one of [`COMPOSE_FILES`], read after the Compose Specification); without
//! either, from the default CommandCenter template (postgres, redis, backend, frontend), which
//! is written in the `hub.toml` format (`stack/default.toml`). That format is compose-like:
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

mod compose;
mod file;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{HubError, Result};
use crate::paths::{Missing, Roots};
use crate::ports::{PortRole, PortSet};

pub use compose::{COMPOSE_FILES, role_by_name};
pub use file::{DEFAULT_STACK_TOML, STACK_FILE};

/// A project's stack: its services and how long to wait for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackSpec {
    /// Services by name (sorted).
    pub services: Vec<ServiceSpec>,
    /// Named volumes the file declares (compose's top-level `volumes`), by their name in the
    /// file. A `hub.toml` declares none: each named volume is the project's own.
    pub volumes: BTreeMap<String, VolumeSpec>,
    /// How long a start waits for every service to be healthy.
    pub health_timeout: Duration,
    /// How long a stop gives each container before killing it.
    pub stop_grace: Duration,
    /// Whether bind mounts may leave the project folder (`[hub] allow_outside = true`). Off by
    /// default: the hub usually runs as root beside the Docker socket, and a bind mount of `/`
    /// would hand the host to a container.
    pub allow_outside: bool,
    /// Where the definition came from (the file's path, or `default`).
    pub source: String,
    /// Which kind of file it came from.
    pub format: StackFormat,
    /// Things the file does that work but deserve a look (a variable used but not set, an
    /// obsolete key): shown with the effective stack.
    pub warnings: Vec<String>,
}

/// The kind of file a stack came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum StackFormat {
    /// The built-in CommandCenter template.
    Default,
    /// The project's `hub.toml`.
    HubToml,
    /// The project's compose file.
    Compose,
}

/// A named volume as the file declares it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSpec {
    /// The engine name, when the file sets one (`name:`); otherwise the project's own
    /// `hub-<slug>_<volume>`.
    pub name: Option<String>,
    /// A volume made outside the hub (`external: true`): used, never created or removed.
    pub external: bool,
    /// Labels to put on the volume when the hub creates it.
    pub labels: BTreeMap<String, String>,
}

/// One service of a stack.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Service name: the container's network alias, and part of its name.
    pub name: String,
    /// Image reference (for a service that is built: the tag the build gets).
    pub image: String,
    /// How to build the image, for a service with a `build:` section.
    pub build: Option<BuildSpec>,
    /// Entrypoint, replacing the image's.
    pub entrypoint: Option<Vec<String>>,
    /// Command, replacing the image's.
    pub command: Option<Vec<String>>,
    /// Published ports: the first one of a service with a role gets the project's port for
    /// that role, the others get extra ports leased to the project.
    pub ports: Vec<PortMapping>,
    /// Volumes and bind mounts.
    pub volumes: Vec<Mount>,
    /// Environment. A `hub.toml`'s keeps its `${…}` placeholders until the stack is loaded
    /// for a project; a compose file's is interpolated as it is read.
    pub environment: BTreeMap<String, String>,
    /// Services that must be ready before this one starts.
    pub depends_on: Vec<Dependency>,
    /// Health check; without one, health is a TCP probe of the first published port (if any).
    pub healthcheck: Option<HealthSpec>,
    /// Working directory inside the container.
    pub working_dir: Option<String>,
    /// User (and group) the container runs as.
    pub user: Option<String>,
    /// What the engine does when the container exits.
    pub restart: Option<RestartPolicy>,
    /// Labels of the container, besides the hub's own.
    pub labels: BTreeMap<String, String>,
    /// More names peers reach the service by, besides its own.
    pub aliases: Vec<String>,
    /// A task that runs to completion (another service waits for it with
    /// `service_completed_successfully`): ready when it exited with code 0, and not a failure
    /// of the stack once it has.
    pub run_once: bool,
}

/// A container port published on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// The project port role this mapping uses; `None` for an extra port.
    pub role: Option<PortRole>,
    /// The container port.
    pub target: u16,
    /// `tcp` or `udp`.
    pub protocol: Protocol,
    /// Host address to bind (127.0.0.1 unless the file names one).
    pub host_ip: String,
    /// The host port: the project's port for `role`, or its extra port for this mapping;
    /// `None` while no extra port has been leased for it yet.
    pub host_port: Option<u16>,
    /// The host port the file wrote, replaced by the hub's.
    pub published: Option<String>,
}

impl PortMapping {
    /// The key of this mapping's extra-port lease: `<service>:<target>/<protocol>`.
    pub fn lease_key(&self, service: &str) -> String {
        format!("{service}:{}/{}", self.target, self.protocol)
    }
}

/// A transport protocol of a published port.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Protocol {
    /// TCP (the default).
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// A dependency of a service, and what "ready" means for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    /// The service depended on.
    pub service: String,
    /// When the dependant may start.
    pub condition: Condition,
}

/// Compose's `depends_on` conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Once it runs (`service_started`).
    ServiceStarted,
    /// Once its health check passes (`service_healthy`).
    ServiceHealthy,
    /// Once it has exited with code 0 (`service_completed_successfully`).
    ServiceCompletedSuccessfully,
}

impl Condition {
    /// Every condition, in the order Compose documents them.
    pub const ALL: [Condition; 3] = [
        Condition::ServiceStarted,
        Condition::ServiceHealthy,
        Condition::ServiceCompletedSuccessfully,
    ];

    /// The condition Compose spells `name`.
    pub fn named(name: &str) -> Option<Condition> {
        Condition::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The condition as Compose spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::ServiceStarted => "service_started",
            Condition::ServiceHealthy => "service_healthy",
            Condition::ServiceCompletedSuccessfully => "service_completed_successfully",
        }
    }
}

/// How to build a service's image with the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildSpec {
    /// The build context as written, relative to the project folder.
    pub context: String,
    /// The context folder, resolved and checked to lie inside the project folder; set when
    /// the stack is loaded from a folder.
    pub context_dir: Option<PathBuf>,
    /// The Dockerfile, relative to the context.
    pub dockerfile: String,
    /// Build arguments.
    pub args: BTreeMap<String, String>,
    /// The stage to build, in a multi-stage Dockerfile.
    pub target: Option<String>,
}

/// What the engine does when a container exits (compose's `restart`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "policy")]
pub enum RestartPolicy {
    /// Never restart (`"no"`).
    No,
    /// Always restart.
    Always,
    /// Restart after a non-zero exit, at most `max_retries` times when set.
    OnFailure {
        /// Most restarts.
        max_retries: Option<u32>,
    },
    /// Restart unless stopped by the user.
    UnlessStopped,
}

/// A volume or bind mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Mount {
    /// A named volume of the project (`hub-<slug>_<name>`), kept across stop/start.
    Volume {
        /// The name in the stack file.
        name: String,
        /// Path in the container.
        target: String,
        /// Mounted read-only.
        #[serde(default)]
        read_only: bool,
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
        /// Mounted read-only.
        #[serde(default)]
        read_only: bool,
    },
}

/// A health check in the stack file's terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSpec {
    /// `["CMD", …]`, `["CMD-SHELL", "…"]`, or `["NONE"]` to turn off the image's own check.
    pub test: Vec<String>,
    /// Time between checks.
    pub interval: Duration,
    /// Time one check may take.
    pub timeout: Duration,
    /// Failures before `unhealthy`.
    pub retries: u32,
    /// Grace period after start.
    pub start_period: Duration,
}

/// What a stack file is read with for one project: the hub's variables and the project's
/// ports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackContext {
    /// The hub's variables (`BACKEND_PORT`, `PROJECT_SLUG`, …), which stack files may use.
    pub variables: BTreeMap<String, String>,
    /// The project's role ports.
    pub ports: Option<PortSet>,
    /// The project's extra-port leases, by [`PortMapping::lease_key`].
    pub extra_ports: BTreeMap<String, u16>,
}

impl StackSpec {
    /// The stack of the project in `folder` (canonical), read for the project `context`
    /// describes: its `hub.toml`, else its compose file, else the default template. Bind
    /// mounts and build contexts are resolved and confined to the folder, `${…}` filled in,
    /// and host ports assigned. Reads files on a blocking thread, never on the async ones.
    pub async fn load(folder: &Path, context: &StackContext) -> Result<StackSpec> {
        let folder = folder.to_path_buf();
        let context = context.clone();
        tokio::task::spawn_blocking(move || StackSpec::load_blocking(&folder, &context))
            .await
            .map_err(|err| HubError::Internal(format!("reading the stack file failed: {err}")))?
    }

    /// [`StackSpec::load`] for callers that may block.
    pub fn load_blocking(folder: &Path, context: &StackContext) -> Result<StackSpec> {
        let mut stack = match read_if_present(&folder.join(STACK_FILE))? {
            Some((text, path)) => {
                let mut stack = file::parse(&text, &path)?;
                stack.format = StackFormat::HubToml;
                stack.fill_in(context)?;
                stack
            }
            None => match StackSpec::compose_file(folder)? {
                Some((text, path)) => compose::parse(&text, &path, folder, context)?,
                None => {
                    let mut stack = StackSpec::default_template()?;
                    stack.fill_in(context)?;
                    stack
                }
            },
        };
        stack.resolve_paths(folder)?;
        Ok(stack)
    }

    /// The folder's compose file, in compose's order of preference, with its text.
    fn compose_file(folder: &Path) -> Result<Option<(String, String)>> {
        for name in COMPOSE_FILES {
            if let Some(found) = read_if_present(&folder.join(name))? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Fills a `hub.toml` or template stack in for a project: `${…}` in the environment and
    /// the role ports.
    fn fill_in(&mut self, context: &StackContext) -> Result<()> {
        for service in &mut self.services {
            for (key, value) in &mut service.environment {
                *value = interpolate(value, &context.variables).map_err(|message| {
                    HubError::invalid(
                        format!(
                            "{}: services.{}.environment.{key}",
                            self.source, service.name
                        ),
                        message,
                    )
                })?;
            }
            for mapping in &mut service.ports {
                mapping.host_port = match (mapping.role, &context.ports) {
                    (Some(role), Some(ports)) => Some(ports.get(role)),
                    _ => None,
                };
            }
        }
        Ok(())
    }

    /// Fills in each bind mount's host path and each build context's folder: joined to
    /// `folder`, and, unless `allow_outside`, resolved through links and refused when it leads
    /// out of the folder.
    fn resolve_paths(&mut self, folder: &Path) -> Result<()> {
        let roots = Roots::single(folder.to_path_buf());
        let allow_outside = self.allow_outside;
        let resolve = |field: String, written: &str| -> Result<PathBuf> {
            if allow_outside {
                return Ok(folder.join(written));
            }
            roots
                .resolve(&field, Path::new(written), Some(folder), Missing::Allow)
                .map_err(|err| match err {
                    HubError::Forbidden { .. } => HubError::invalid(
                        field.clone(),
                        format!(
                            "'{written}' leads out of the project folder through a link; \
                             set `allow_outside = true` (under [hub], or x-hub in a compose \
                             file) to allow it"
                        ),
                    ),
                    other => other,
                })
        };
        for service in &mut self.services {
            for mount in &mut service.volumes {
                let Mount::Bind { source, host, .. } = mount else {
                    continue;
                };
                let field = format!("{}: services.{}.volumes", self.source, service.name);
                *host = Some(resolve(field, source)?);
            }
            if let Some(build) = &mut service.build {
                let field = format!("{}: services.{}.build", self.source, service.name);
                build.context_dir = Some(resolve(field, &build.context)?);
            }
        }
        Ok(())
    }

    /// The lease keys of every published port that needs an extra port (no role).
    pub fn extra_port_keys(&self) -> Vec<String> {
        self.services
            .iter()
            .flat_map(|s| {
                s.ports
                    .iter()
                    .filter(|p| p.role.is_none())
                    .map(|p| p.lease_key(&s.name))
            })
            .collect()
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
                .filter(|s| {
                    s.depends_on
                        .iter()
                        .all(|d| placed.contains_key(d.service.as_str()))
                })
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

    /// The services a dependency cycle keeps out of [`StackSpec::start_order`], in stack
    /// order; empty for a valid stack.
    pub fn in_cycle(&self) -> Vec<&str> {
        let order = self.start_order();
        let placed: std::collections::HashSet<&str> =
            order.iter().flatten().map(|s| s.name.as_str()).collect();
        self.services
            .iter()
            .map(|s| s.name.as_str())
            .filter(|name| !placed.contains(name))
            .collect()
    }

    /// The roles this stack publishes.
    pub fn published_roles(&self) -> Vec<PortRole> {
        self.services
            .iter()
            .flat_map(|s| s.ports.iter().filter_map(|p| p.role))
            .collect()
    }
}

/// The text of the file at `path` and its name for messages, or `None` when there is no file.
fn read_if_present(path: &Path) -> Result<Option<(String, String)>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some((text, path.display().to_string()))),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(HubError::io(format!("cannot read {}", path.display()), err)),
    }
}

/// Fills `${NAME}` placeholders from `vars`; an unknown name is an error naming it.
pub fn interpolate(
    value: &str,
    vars: &BTreeMap<String, String>,
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
                let known: Vec<&str> = vars.keys().map(String::as_str).collect();
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
                target: "/var/lib/postgresql/data".into(),
                read_only: false,
            }]
        );
        let mut roles = stack.published_roles();
        roles.sort();
        assert_eq!(roles, PortRole::ALL);
    }

    #[test]
    fn placeholders_are_filled_and_unknown_ones_named() {
        let vars = BTreeMap::from([("REDIS_PORT".to_string(), "6389".to_string())]);
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
            StackSpec::load_blocking(&folder, &StackContext::default())
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
