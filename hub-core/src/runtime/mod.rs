//! Container runtimes: the [`Runtime`] trait the orchestration talks to, and [`DockerRuntime`],
//! its implementation on the Docker Engine API (bollard).
//!
//! The trait speaks in the hub's terms — a network per project, named volumes, containers built
//! from a [`ContainerSpec`] — so orchestration rules stay independent of the engine.

mod context;
mod docker;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::stack::{Protocol, RestartPolicy};

pub(crate) use context::pack as pack_context;
pub use docker::{DEFAULT_DOCKER_HOST, DockerRuntime, resolve_address};

/// Label keys the hub puts on everything it creates. The `com.docker.compose.*` ones make our
/// stacks visible to `docker compose ls`/`ps` and desktop tools; ours let the hub rebuild its
/// view from the engine alone.
pub mod labels {
    /// Compose project name (`hub-<slug>`).
    pub const COMPOSE_PROJECT: &str = "com.docker.compose.project";
    /// Compose service name.
    pub const COMPOSE_SERVICE: &str = "com.docker.compose.service";
    /// Compose volume name.
    pub const COMPOSE_VOLUME: &str = "com.docker.compose.volume";
    /// Compose network name.
    pub const COMPOSE_NETWORK: &str = "com.docker.compose.network";
    /// Compose: not a one-off container.
    pub const COMPOSE_ONEOFF: &str = "com.docker.compose.oneoff";
    /// Compose: replica number.
    pub const COMPOSE_CONTAINER_NUMBER: &str = "com.docker.compose.container-number";
    /// Compose: the project folder.
    pub const COMPOSE_WORKING_DIR: &str = "com.docker.compose.project.working_dir";
    /// Set on everything the hub manages.
    pub const MANAGED: &str = "dev.commandcenter.hub.managed";
    /// The owning hub: its instance id (one per registry database).
    pub const INSTANCE: &str = "dev.commandcenter.hub.instance";
    /// The owning project, as `<instance>/<project id>`: unique even when several hubs share
    /// one engine.
    pub const PROJECT: &str = "dev.commandcenter.hub.project";
    /// Registry id of the owning project (for people; filter on [`PROJECT`]).
    pub const PROJECT_ID: &str = "dev.commandcenter.hub.project-id";
    /// Slug of the owning project.
    pub const PROJECT_SLUG: &str = "dev.commandcenter.hub.project-slug";
    /// Service name inside the stack.
    pub const SERVICE: &str = "dev.commandcenter.hub.service";
    /// Port role the service publishes, if any.
    pub const ROLE: &str = "dev.commandcenter.hub.role";
    /// Host ports the service publishes, comma-separated, if any.
    pub const PUBLISHED_PORT: &str = "dev.commandcenter.hub.published-port";
    /// Set (to `true`) on a service that runs to completion: once it exited with code 0,
    /// its stack is still whole.
    pub const RUN_ONCE: &str = "dev.commandcenter.hub.run-once";
    /// A digest of everything the container was created from: a start keeps a running
    /// container whose digest still matches, and recreates the others.
    pub const CONFIG_HASH: &str = "dev.commandcenter.hub.config-hash";
}

/// A container to create.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Container name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Entrypoint (replaces the image's `ENTRYPOINT`), if set.
    pub entrypoint: Option<Vec<String>>,
    /// Command (replaces the image's `CMD`), if set.
    pub command: Option<Vec<String>>,
    /// User (and group) to run as, if set.
    pub user: Option<String>,
    /// What the engine does when the container exits; `None` is the engine's default (`no`).
    pub restart: Option<RestartPolicy>,
    /// Environment, `KEY=value`.
    pub env: Vec<String>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// Labels.
    pub labels: HashMap<String, String>,
    /// Network to join, with these aliases.
    pub network: Option<String>,
    /// Aliases on `network` (the service name, so peers reach it by name).
    pub aliases: Vec<String>,
    /// Named volumes (`source` is the volume's engine name).
    pub volumes: Vec<Binding>,
    /// Bind mounts (`source` is the host path).
    pub binds: Vec<Binding>,
    /// Published ports.
    pub ports: Vec<PublishedPort>,
    /// Health check, in Docker's form.
    pub healthcheck: Option<HealthCheck>,
}

impl ContainerSpec {
    /// A digest of the spec (labels in sorted order, without [`labels::CONFIG_HASH`]): equal
    /// for equal specs on every platform and release (FNV-1a over the canonical JSON).
    pub fn config_hash(&self) -> String {
        let mut canonical = self.clone();
        canonical.labels.remove(labels::CONFIG_HASH);
        let sorted: std::collections::BTreeMap<&String, &String> =
            canonical.labels.iter().collect();
        let text = serde_json::json!({"spec": &canonical, "labels": sorted}).to_string();
        let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        format!("{hash:016x}")
    }

    /// The spec with its digest among its labels.
    pub fn with_config_hash(mut self) -> Self {
        let hash = self.config_hash();
        self.labels.insert(labels::CONFIG_HASH.into(), hash);
        self
    }
}

/// A volume or host folder mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// Volume name or host path.
    pub source: String,
    /// Path in the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// A container port published on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPort {
    /// Host address to bind (127.0.0.1 by default).
    pub host_ip: String,
    /// Host port.
    pub host_port: u16,
    /// Container port.
    pub target: u16,
    /// `tcp` or `udp`.
    pub protocol: Protocol,
}

/// An image to build from a context folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRequest {
    /// The tag the image gets.
    pub tag: String,
    /// The context, as a tar archive.
    pub context: Vec<u8>,
    /// The Dockerfile's path inside the context.
    pub dockerfile: String,
    /// Build arguments.
    pub args: HashMap<String, String>,
    /// The stage to build, if not the last.
    pub target: Option<String>,
}

/// A health check as Docker runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// `["CMD", …]`, `["CMD-SHELL", "…"]` or `["NONE"]`.
    pub test: Vec<String>,
    /// Time between checks.
    pub interval: Duration,
    /// Time one check may take.
    pub timeout: Duration,
    /// Consecutive failures before `unhealthy`.
    pub retries: u32,
    /// Grace period after start during which failures do not count.
    pub start_period: Duration,
}

/// What the engine says about one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// Container id.
    pub id: String,
    /// Container name (without the leading `/`).
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Engine state: `created`, `running`, `exited`, …
    pub state: String,
    /// Health as Docker reports it (`starting`, `healthy`, `unhealthy`), or `None` without a
    /// health check.
    pub health: Option<String>,
    /// Exit code, for stopped containers.
    pub exit_code: Option<i64>,
    /// The container's labels.
    pub labels: HashMap<String, String>,
    /// Its addresses on the networks it is attached to (none while it is not running).
    pub addresses: Vec<IpAddr>,
}

impl ContainerInfo {
    /// Whether the container runs.
    pub fn is_running(&self) -> bool {
        self.state == "running"
    }
}

/// Progress of an image pull, summed over its layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PullProgress {
    /// Bytes done, over all layers seen so far.
    pub current: u64,
    /// Bytes to do, over all layers seen so far.
    pub total: u64,
}

impl PullProgress {
    /// 0–100.
    pub fn percent(&self) -> u8 {
        (self.current.min(self.total) * 100)
            .checked_div(self.total)
            .map_or(0, |percent| u8::try_from(percent).unwrap_or(100))
    }
}

/// What an `ensure_*` call of a [`Runtime`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ensured {
    /// It did not exist and was created, with the labels asked for.
    Created,
    /// It existed already, with these labels; it may belong to someone else.
    Existing(HashMap<String, String>),
}

/// A container engine. Every call fails with `runtime_unavailable` (naming the address) when
/// the engine cannot be reached, and never hangs past the runtime's timeout.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// The address the runtime talks to (socket path or URL).
    fn address(&self) -> String;

    /// Checks the engine answers; returns its API version.
    async fn ping(&self) -> Result<String>;

    /// Whether `image` is present locally.
    async fn image_exists(&self, image: &str) -> Result<bool>;

    /// Pulls `image`, reporting progress as layers download.
    async fn pull_image(
        &self,
        image: &str,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<()>;

    /// Builds an image from `request`'s context; each line of the build's output goes to
    /// `output` as it comes.
    async fn build_image(
        &self,
        request: BuildRequest,
        output: &(dyn Fn(String) + Send + Sync),
    ) -> Result<()>;

    /// Creates network `name` unless it exists; an existing one is returned with its labels,
    /// for the caller to check whose it is.
    async fn ensure_network(&self, name: &str, labels: HashMap<String, String>) -> Result<Ensured>;

    /// The labels of network `name`, if it exists.
    async fn network_labels(&self, name: &str) -> Result<Option<HashMap<String, String>>>;

    /// Removes network `name`; a missing one is fine.
    async fn remove_network(&self, name: &str) -> Result<()>;

    /// Creates volume `name` unless it exists; an existing one is returned with its labels.
    async fn ensure_volume(&self, name: &str, labels: HashMap<String, String>) -> Result<Ensured>;

    /// The labels of volume `name`, if it exists.
    async fn volume_labels(&self, name: &str) -> Result<Option<HashMap<String, String>>>;

    /// Removes volume `name`; a missing one is fine.
    async fn remove_volume(&self, name: &str) -> Result<()>;

    /// Names of the volumes carrying label `key=value`.
    async fn volumes_with_label(&self, key: &str, value: &str) -> Result<Vec<String>>;

    /// Creates a container; returns its id.
    async fn create_container(&self, spec: &ContainerSpec) -> Result<String>;

    /// Starts a created container.
    async fn start_container(&self, name: &str) -> Result<()>;

    /// Stops a container, giving it `grace` before it is killed; a missing or stopped one is fine.
    async fn stop_container(&self, name: &str, grace: Duration) -> Result<()>;

    /// Removes a container (forcibly); a missing one is fine.
    async fn remove_container(&self, name: &str) -> Result<()>;

    /// The container named `name`, if it exists.
    async fn inspect_container(&self, name: &str) -> Result<Option<ContainerInfo>>;

    /// Every container (running or not) carrying label `key=value`.
    async fn containers_with_label(&self, key: &str, value: &str) -> Result<Vec<ContainerInfo>>;

    /// Runs `command` in a running container and returns its exit code.
    async fn exec(&self, name: &str, command: &[String]) -> Result<i64>;

    /// The last `tail` lines of a container's output (stdout and stderr).
    async fn logs(&self, name: &str, tail: usize) -> Result<Vec<String>>;

    /// The last `tail` lines, then new lines as they come, until the container stops; each
    /// says which stream it came from.
    async fn follow_logs(
        &self,
        name: &str,
        tail: usize,
    ) -> Result<BoxStream<'static, Result<LogLine>>>;
}

/// Which output of a container a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line of a container's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Where it came from.
    pub stream: LogStream,
    /// The line, without its newline.
    pub text: String,
}
