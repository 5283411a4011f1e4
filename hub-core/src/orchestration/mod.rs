//! Running project stacks: start, stop, restart (as background tasks), status, logs, and
//! reconciling the registry with what the engine really runs.
//!
//! Everything the hub creates carries labels (see [`crate::runtime::labels`]); the engine, not
//! memory, is the truth about what runs.

mod effective;
mod health;
mod lifecycle;
mod startup;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

pub use effective::{EffectiveBuild, EffectiveService, EffectiveStack, EffectiveVolume};
pub use health::NOT_READY;

/// Most lines of a service's output one logs call returns.
pub const MAX_LOG_LINES: usize = 10_000;
/// Lines of a service's output returned when the caller does not say.
pub const DEFAULT_LOG_LINES: usize = 100;
pub use lifecycle::{BUILD_FAILED, CANCELLED, IMAGE_UNAVAILABLE, PORT_IN_USE};

use crate::error::{Entity, HubError, Result};
use crate::ports::PortRole;
use crate::project::{Health, Project, ProjectStatus};
use crate::registry::Registry;
use crate::runtime::{ContainerInfo, Ensured, LogLine, Runtime, labels};
use crate::stack::{Protocol, StackContext, StackFormat, StackSpec};
use crate::tasks::{
    Handlers, JobHandler, JobResult, TaskBackend, TaskContext, TaskError, TaskRecord,
};

/// Job kinds of the built-in project operations.
pub mod jobs {
    /// Bring a project's stack up.
    pub const START_PROJECT: &str = "start_project";
    /// Take a project's stack down (volumes are kept).
    pub const STOP_PROJECT: &str = "stop_project";
    /// Stop, then start.
    pub const RESTART_PROJECT: &str = "restart_project";
    /// Recreate one service of a running stack.
    pub const RESTART_SERVICE: &str = "restart_service";
}

// Engine names. A slug never holds `_`, so the first `_` ends it: project `a`'s volume `b-data`
// (`hub-a_b-data`) and project `a-b`'s volume `data` (`hub-a-b_data`) cannot share a name.

/// The compose project / network name of a project: `hub-<slug>`.
pub fn stack_name(project: &Project) -> String {
    format!("hub-{}", project.slug)
}

/// The container name of a service: `hub-<slug>_<service>`.
pub fn container_name(project: &Project, service: &str) -> String {
    format!("hub-{}_{service}", project.slug)
}

/// The engine name of a project's named volume: `hub-<slug>_<volume>`.
pub fn volume_name(project: &Project, volume: &str) -> String {
    format!("hub-{}_{volume}", project.slug)
}

/// The engine name of stack volume `short`, as [`Orchestrator::engine_volumes`] chose it.
fn engine_volume(volumes: &BTreeMap<String, String>, project: &Project, short: &str) -> String {
    volumes
        .get(short)
        .cloned()
        .unwrap_or_else(|| volume_name(project, short))
}

/// The name a volume had before names became unambiguous (`hub-<slug>-<volume>`): a project
/// registered then keeps its data, as long as the volume carries its ownership label.
fn legacy_volume_name(project: &Project, volume: &str) -> String {
    format!("hub-{}-{volume}", project.slug)
}

/// How [`Orchestrator::stack`] treats a compose file's extra ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtraPorts {
    /// Use the leases as they are; a port without one shows no host port.
    Read,
    /// Lease a port for every published port that has none.
    Lease,
    /// Lease the missing ones and give back the ones the file no longer publishes.
    Sync,
}

/// One published port of a service: `container port → host port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServicePort {
    /// The port in the container.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: Protocol,
    /// The host address it is published on.
    pub host_ip: String,
    /// The host port, from the project's allocation; `None` before an extra port is leased.
    pub host_port: Option<u16>,
    /// The project port role it uses; `None` for an extra port.
    pub role: Option<PortRole>,
    /// The mapping as text: `80/tcp → 127.0.0.1:8010`.
    pub mapping: String,
}

impl ServicePort {
    /// The status view of a stack's port mapping.
    pub fn of(mapping: &crate::stack::PortMapping) -> Self {
        let host = mapping.host_port.map_or_else(
            || "(no port leased yet)".to_owned(),
            |p| format!("{}:{p}", mapping.host_ip),
        );
        ServicePort {
            container_port: mapping.target,
            protocol: mapping.protocol,
            host_ip: mapping.host_ip.clone(),
            host_port: mapping.host_port,
            role: mapping.role,
            mapping: format!("{}/{} → {host}", mapping.target, mapping.protocol),
        }
    }
}

/// One service as the engine runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceStatus {
    /// Service name.
    pub name: String,
    /// Container name.
    pub container: String,
    /// Image.
    pub image: String,
    /// Engine state (`running`, `exited`, …) or `missing`.
    pub state: String,
    /// `healthy`, `unhealthy`, `starting`, or `None` without a health check.
    pub health: Option<String>,
    /// The port role the service publishes.
    pub role: Option<PortRole>,
    /// The host port it is published on.
    pub host_port: Option<u16>,
    /// The container port behind it.
    pub target_port: Option<u16>,
    /// Every published port, `container port → host port`.
    pub ports: Vec<ServicePort>,
}

/// A project's stack as the engine runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StackStatus {
    /// Project id.
    pub project_id: i64,
    /// Registry status.
    pub status: ProjectStatus,
    /// Registry health.
    pub health: Health,
    /// Where the stack definition came from.
    pub stack_source: String,
    /// Per-service state.
    pub services: Vec<ServiceStatus>,
}

/// The exclusive key of operations on a project: one at a time.
pub fn exclusive_key(project_id: i64) -> String {
    crate::project::operation_key(project_id)
}

/// A built-in project operation as a job handler.
struct ProjectJob {
    orchestrator: Arc<Orchestrator>,
    kind: &'static str,
    /// Runs again when its worker is lost (see `TaskConfig::retry_lost_operations`).
    retry: bool,
}

#[async_trait::async_trait]
impl JobHandler for ProjectJob {
    async fn run(&self, ctx: TaskContext, payload: Value) -> JobResult {
        let this = &self.orchestrator;
        let project_id = project_id(&payload)?;
        match self.kind {
            jobs::START_PROJECT => this.run_start(&ctx, project_id).await,
            jobs::STOP_PROJECT => this.run_stop(&ctx, project_id).await,
            jobs::RESTART_PROJECT => this.run_restart(&ctx, project_id).await,
            _ => {
                let service = payload["service"]
                    .as_str()
                    .ok_or_else(|| TaskError::new("invalid_input", "payload has no 'service'"))?;
                this.run_restart_service(&ctx, project_id, service).await
            }
        }
    }

    fn retry_when_lost(&self) -> bool {
        self.retry
    }

    async fn lost(&self, task: &TaskRecord) {
        self.orchestrator.recover_lost(task).await;
    }
}

/// What reconciling changed for one project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReconcileChange {
    /// Project id.
    pub project_id: i64,
    /// Status before.
    pub from: ProjectStatus,
    /// Status after.
    pub to: ProjectStatus,
    /// Health after.
    pub health: Health,
    /// Why.
    pub reason: String,
}

/// Runs project stacks on a [`Runtime`], recording their state in the [`Registry`].
pub struct Orchestrator {
    registry: Arc<Registry>,
    runtime: Arc<dyn Runtime>,
    /// Per-hub secret from which per-project passwords derive (stable across starts and hosts).
    secret: Uuid,
    /// This hub's id on the engine: what it created carries it, so hubs sharing an engine never
    /// touch each other's containers.
    instance: Uuid,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field("runtime", &self.runtime.address())
            .finish_non_exhaustive()
    }
}

impl Orchestrator {
    /// An orchestrator over `registry` and `runtime`.
    pub async fn new(registry: Arc<Registry>, runtime: Arc<dyn Runtime>) -> Result<Self> {
        let db = registry.database();
        let secret = stored_uuid(db, "stack_secret").await?;
        let instance = stored_uuid(db, "hub_instance").await?;
        Ok(Orchestrator {
            registry,
            runtime,
            secret,
            instance,
        })
    }

    /// The value of the [`labels::PROJECT`] label of `project_id`'s resources.
    pub fn project_label(&self, project_id: i64) -> String {
        format!("{}/{project_id}", self.instance)
    }

    /// The runtime.
    pub fn runtime(&self) -> &dyn Runtime {
        self.runtime.as_ref()
    }

    /// The job handlers for the built-in project operations; with `retry`, an operation whose
    /// worker was lost runs again (they are idempotent).
    pub fn handlers(self: &Arc<Self>, retry: bool) -> Handlers {
        [
            jobs::START_PROJECT,
            jobs::STOP_PROJECT,
            jobs::RESTART_PROJECT,
            jobs::RESTART_SERVICE,
        ]
        .into_iter()
        .fold(Handlers::new(), |handlers, kind| {
            handlers.register(
                kind,
                ProjectJob {
                    orchestrator: self.clone(),
                    kind,
                    retry,
                },
            )
        })
    }

    /// After the worker running an operation on a project was lost (and the task ended
    /// `interrupted`): a project left `starting` or `stopping` is marked `error` with the
    /// reason, then judged again from what the engine runs.
    pub async fn recover_lost(&self, task: &TaskRecord) {
        let Some(project_id) = task.project_id else {
            return;
        };
        let Ok(project) = self.registry.get(project_id).await else {
            return;
        };
        if !matches!(
            project.status,
            ProjectStatus::Starting | ProjectStatus::Stopping
        ) {
            return;
        }
        let message = format!(
            "{} was interrupted: the worker running it stopped (task {})",
            task.kind, task.id
        );
        if let Err(err) = self
            .registry
            .set_status(
                project.id,
                ProjectStatus::Error,
                Health::Unknown,
                Some(&message),
            )
            .await
        {
            tracing::warn!(project = %project.slug, error = %err, "cannot record a lost operation");
            return;
        }
        // What the engine runs may say better: containers all up, or none left.
        let Ok(containers) = self.containers(project.id).await else {
            return;
        };
        let mine: Vec<&ContainerInfo> = containers.iter().collect();
        let starting = Project {
            status: ProjectStatus::Starting,
            ..project
        };
        if let Some((to, health, reason)) = judge(&starting, &mine)
            && to != ProjectStatus::Error
        {
            tracing::info!(project = %starting.slug, %to, %reason, "project judged after a lost operation");
            let _ = self
                .registry
                .set_status(starting.id, to, health, None)
                .await;
        }
    }

    /// What the project's stack file is read with: the hub's variables and its role ports.
    fn stack_context(&self, project: &Project) -> StackContext {
        StackContext {
            variables: self.variables(project),
            ports: Some(project.ports),
            extra_ports: BTreeMap::new(),
        }
    }

    /// The project's stack, read for it. A compose file's extra ports come from the
    /// registry: as they are (`Read`), with missing ones leased (`Lease`), or also with the
    /// leases the file no longer uses given back (`Sync`, when a start replaces the stack).
    pub async fn stack(&self, project: &Project, ports: ExtraPorts) -> Result<StackSpec> {
        let mut context = self.stack_context(project);
        let stack = StackSpec::load(&project.path, &context).await?;
        if stack.format != StackFormat::Compose {
            return Ok(stack);
        }
        let wanted = stack.extra_port_keys();
        // Only a sync has work to do when the file publishes no extra port: give back old ones.
        if wanted.is_empty() && ports != ExtraPorts::Sync {
            return Ok(stack);
        }
        context.extra_ports = match ports {
            ExtraPorts::Read => self.registry.extra_ports(project.id).await?,
            ExtraPorts::Lease => {
                self.registry
                    .lease_extra_ports(project, &wanted, false)
                    .await?
            }
            ExtraPorts::Sync => {
                self.registry
                    .lease_extra_ports(project, &wanted, true)
                    .await?
            }
        };
        if wanted.is_empty() {
            return Ok(stack);
        }
        StackSpec::load(&project.path, &context).await
    }

    /// The values `${…}` placeholders of this project's stack take.
    fn variables(&self, project: &Project) -> BTreeMap<String, String> {
        let derive = |purpose: &str| {
            Uuid::new_v5(&self.secret, format!("{}/{purpose}", project.id).as_bytes())
                .simple()
                .to_string()
        };
        [
            ("BACKEND_PORT", project.ports.backend.to_string()),
            ("FRONTEND_PORT", project.ports.frontend.to_string()),
            ("POSTGRES_PORT", project.ports.postgres.to_string()),
            ("REDIS_PORT", project.ports.redis.to_string()),
            ("PROJECT_SLUG", project.slug.clone()),
            ("PROJECT_NAME", project.name.clone()),
            ("POSTGRES_PASSWORD", derive("postgres-password")),
            ("SECRET_KEY", derive("secret-key")),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }

    /// Containers of a project, as the engine has them.
    async fn containers(&self, project_id: i64) -> Result<Vec<ContainerInfo>> {
        self.runtime
            .containers_with_label(labels::PROJECT, &self.project_label(project_id))
            .await
    }

    /// The container of one service of the project, found by its ownership labels (never by
    /// name alone: a name may be taken by something else, or date from before a rename).
    async fn service_container(&self, project: &Project, service: &str) -> Result<ContainerInfo> {
        self.containers(project.id)
            .await?
            .into_iter()
            .find(|c| c.labels.get(labels::SERVICE).map(String::as_str) == Some(service))
            .ok_or_else(|| service_not_found(project, service))
    }

    /// Whether an engine object with `found` labels belongs to `project`.
    fn owns(&self, project: &Project, found: &HashMap<String, String>) -> bool {
        found.get(labels::PROJECT) == Some(&self.project_label(project.id))
    }

    /// The `conflict` for an engine object named like one of `project`'s but not its own.
    fn taken(
        &self,
        project: &Project,
        entity: Entity,
        name: &str,
        found: &HashMap<String, String>,
    ) -> HubError {
        let owner = match found.get(labels::PROJECT) {
            Some(owner) => format!("hub project {owner}"),
            None => "something this hub does not manage".to_owned(),
        };
        HubError::Conflict {
            message: format!(
                "{entity} '{name}' already exists and belongs to {owner}, not to project '{}'; \
                 remove or rename it",
                project.slug
            ),
        }
    }

    /// Creates the project's network or volume unless it exists; an existing one must be the
    /// project's own. Returns whether it was created.
    async fn ensure_owned(
        &self,
        project: &Project,
        entity: Entity,
        name: &str,
        labels: HashMap<String, String>,
    ) -> Result<bool> {
        let found = match entity {
            Entity::Volume => self.runtime.ensure_volume(name, labels).await?,
            _ => self.runtime.ensure_network(name, labels).await?,
        };
        match found {
            Ensured::Created => Ok(true),
            Ensured::Existing(found) if self.owns(project, &found) => Ok(false),
            Ensured::Existing(found) => Err(self.taken(project, entity, name, &found)),
        }
    }

    /// The engine name of each named volume of `stack` (short name → engine name): the current
    /// scheme, or the volume an earlier version created under the old one when it exists and
    /// is this project's, so that an upgrade keeps the project's data.
    async fn engine_volumes(
        &self,
        project: &Project,
        stack: &StackSpec,
    ) -> Result<BTreeMap<String, String>> {
        let mut names = BTreeMap::new();
        for mount in stack.services.iter().flat_map(|s| &s.volumes) {
            let crate::stack::Mount::Volume { name, .. } = mount else {
                continue;
            };
            if names.contains_key(name) {
                continue;
            }
            let current = volume_name(project, name);
            let mut chosen = current.clone();
            if self.runtime.volume_labels(&current).await?.is_none() {
                let legacy = legacy_volume_name(project, name);
                if let Some(found) = self.runtime.volume_labels(&legacy).await?
                    && self.owns(project, &found)
                {
                    chosen = legacy;
                }
            }
            names.insert(name.clone(), chosen);
        }
        Ok(names)
    }

    /// Removes the project's networks, leaving any network of the same name it does not own.
    /// `known`: the engine's answer for networks the caller looked up already (by name, `None`
    /// for one that does not exist); the others are looked up here.
    async fn remove_networks(
        &self,
        project: &Project,
        containers: &[ContainerInfo],
        mut known: HashMap<String, Option<HashMap<String, String>>>,
    ) -> Result<()> {
        for network in networks_of(project, containers) {
            let found = match known.remove(&network) {
                Some(found) => found,
                None => self.runtime.network_labels(&network).await?,
            };
            match found {
                Some(found) if self.owns(project, &found) => {
                    self.runtime.remove_network(&network).await?;
                }
                Some(_) => {
                    tracing::warn!(project = %project.slug, %network, "network of that name is not this project's: left in place");
                }
                None => {}
            }
        }
        Ok(())
    }

    /// The stack a start of `project` would run: interpolated, with every published port's
    /// host port (extra ports are leased for it if they were not yet).
    pub async fn effective_stack(&self, project: &Project) -> Result<EffectiveStack> {
        let stack = self.stack(project, ExtraPorts::Lease).await?;
        Ok(EffectiveStack::of(project, &stack))
    }

    /// Per-service state of a project's stack.
    pub async fn status(&self, project: &Project) -> Result<StackStatus> {
        let containers = self.containers(project.id).await?;
        let stack = self.stack(project, ExtraPorts::Read).await.ok();
        let mut services: Vec<ServiceStatus> = Vec::new();
        let mut seen = HashSet::new();
        if let Some(stack) = &stack {
            for spec in &stack.services {
                // By the service label, not the name: a container started by an earlier
                // version (or before a rename) is still this service's.
                let running = containers
                    .iter()
                    .find(|c| c.labels.get(labels::SERVICE) == Some(&spec.name));
                let name =
                    running.map_or_else(|| container_name(project, &spec.name), |c| c.name.clone());
                seen.insert(name.clone());
                services.push(ServiceStatus {
                    name: spec.name.clone(),
                    container: name,
                    image: running.map_or_else(|| spec.image.clone(), |c| c.image.clone()),
                    state: running.map_or_else(|| "missing".into(), |c| c.state.clone()),
                    health: running.and_then(|c| c.health.clone()),
                    role: spec.ports.iter().find_map(|p| p.role),
                    host_port: spec.ports.first().and_then(|p| p.host_port),
                    target_port: spec.ports.first().map(|p| p.target),
                    ports: spec.ports.iter().map(ServicePort::of).collect(),
                });
            }
        }
        // Containers the current definition no longer names (the file changed since start).
        for container in containers.iter().filter(|c| !seen.contains(&c.name)) {
            let role = container
                .labels
                .get(labels::ROLE)
                .and_then(|r| r.parse::<PortRole>().ok());
            services.push(ServiceStatus {
                name: container
                    .labels
                    .get(labels::SERVICE)
                    .cloned()
                    .unwrap_or_else(|| container.name.clone()),
                container: container.name.clone(),
                image: container.image.clone(),
                state: container.state.clone(),
                health: container.health.clone(),
                role,
                host_port: container
                    .labels
                    .get(labels::PUBLISHED_PORT)
                    .and_then(|p| p.split(',').next()?.parse().ok()),
                target_port: None,
                ports: Vec::new(),
            });
        }
        Ok(StackStatus {
            project_id: project.id,
            status: project.status,
            health: project.health,
            stack_source: stack.map_or_else(|| "unreadable".into(), |s| s.source),
            services,
        })
    }

    /// The last `lines` lines of one service's output.
    pub async fn logs(
        &self,
        project: &Project,
        service: &str,
        lines: usize,
    ) -> Result<Vec<String>> {
        let container = self.service_container(project, service).await?;
        self.runtime
            .logs(&container.id, lines)
            .await
            .map_err(|err| as_service_error(err, project, service))
    }

    /// The last `lines` lines of one service's output, then new ones as they come.
    pub async fn follow_logs(
        &self,
        project: &Project,
        service: &str,
        lines: usize,
    ) -> Result<BoxStream<'static, Result<LogLine>>> {
        let container = self.service_container(project, service).await?;
        self.runtime
            .follow_logs(&container.id, lines)
            .await
            .map_err(|err| as_service_error(err, project, service))
    }

    /// Removes a project's containers and network, and its volumes when `delete_data` is set.
    pub async fn remove_resources(&self, project: &Project, delete_data: bool) -> Result<()> {
        let containers = self.containers(project.id).await?;
        for container in &containers {
            self.runtime.remove_container(&container.name).await?;
        }
        self.remove_networks(project, &containers, HashMap::new())
            .await?;
        if delete_data {
            for volume in self
                .runtime
                .volumes_with_label(labels::PROJECT, &self.project_label(project.id))
                .await?
            {
                self.runtime.remove_volume(&volume).await?;
            }
        }
        Ok(())
    }

    /// Brings the registry in line with the engine: a project recorded as running whose
    /// containers died becomes `error` (or `stopped` when all are gone); one recorded as stopped
    /// whose containers run becomes `running`. Projects with an operation in flight are left to
    /// it.
    pub async fn reconcile(&self, tasks: &dyn TaskBackend) -> Result<Vec<ReconcileChange>> {
        let containers = self
            .runtime
            .containers_with_label(labels::INSTANCE, &self.instance.to_string())
            .await?;
        let mut by_project: HashMap<i64, Vec<&ContainerInfo>> = HashMap::new();
        for container in &containers {
            if let Some(id) = container
                .labels
                .get(labels::PROJECT_ID)
                .and_then(|id| id.parse().ok())
            {
                by_project.entry(id).or_default().push(container);
            }
        }
        let mut changes = Vec::new();
        for project in self.registry.list().await? {
            let mine = by_project.remove(&project.id).unwrap_or_default();
            // A stack that defines no services runs with no containers: nothing to judge.
            let defines_services = StackSpec::load(&project.path, &self.stack_context(&project))
                .await
                .map(|stack| !stack.services.is_empty())
                .unwrap_or(true);
            if !defines_services && mine.is_empty() {
                continue;
            }
            let Some((to, health, reason)) = judge(&project, &mine) else {
                continue;
            };
            if to == project.status && health == project.health {
                continue;
            }
            // A project with an operation queued or running is left to it: checked right before
            // writing, so an operation that started meanwhile is seen.
            if unfinished_task(tasks, project.id).await?.is_some() {
                continue;
            }
            let error = (to == ProjectStatus::Error).then_some(reason.as_str());
            self.registry
                .set_status(project.id, to, health, error)
                .await?;
            tracing::info!(project = %project.slug, from = %project.status, %to, %reason, "reconciled");
            changes.push(ReconcileChange {
                project_id: project.id,
                from: project.status,
                to,
                health,
                reason,
            });
        }
        Ok(changes)
    }
}

/// The queued or running operation on `project_id`, if there is one.
pub(crate) async fn unfinished_task(
    tasks: &dyn TaskBackend,
    project_id: i64,
) -> Result<Option<TaskRecord>> {
    tasks.holder(&exclusive_key(project_id)).await
}

/// What a project's status should be given its containers, or `None` to leave it.
fn judge(
    project: &Project,
    containers: &[&ContainerInfo],
) -> Option<(ProjectStatus, Health, String)> {
    let running: Vec<&&ContainerInfo> = containers.iter().filter(|c| c.is_running()).collect();
    // A task that ran to completion (exit code 0) is done, not dead.
    let completed = |c: &ContainerInfo| {
        c.labels.get(labels::RUN_ONCE).is_some_and(|v| v == "true")
            && c.state == "exited"
            && c.exit_code == Some(0)
    };
    let dead: Vec<&&ContainerInfo> = containers
        .iter()
        .filter(|c| !c.is_running() && !completed(c))
        .collect();
    let health = if running
        .iter()
        .any(|c| c.health.as_deref() == Some("unhealthy"))
    {
        Health::Unhealthy
    } else {
        Health::Healthy
    };
    match project.status {
        ProjectStatus::Running | ProjectStatus::Starting | ProjectStatus::Stopping => {
            if containers.is_empty() {
                Some((
                    ProjectStatus::Stopped,
                    Health::Unknown,
                    "no container of the stack exists any more".into(),
                ))
            } else if !dead.is_empty() {
                let names: Vec<String> = dead
                    .iter()
                    .map(|c| match c.exit_code {
                        Some(code) => format!("{} ({}, exit code {code})", c.name, c.state),
                        None => format!("{} ({})", c.name, c.state),
                    })
                    .collect();
                Some((
                    ProjectStatus::Error,
                    Health::Unhealthy,
                    format!("not running: {}", names.join(", ")),
                ))
            } else {
                Some((
                    ProjectStatus::Running,
                    health,
                    "every container runs".into(),
                ))
            }
        }
        ProjectStatus::Stopped | ProjectStatus::Error => {
            if !running.is_empty() && dead.is_empty() {
                Some((
                    ProjectStatus::Running,
                    health,
                    "its containers run (started outside this hub, or before a restart)".into(),
                ))
            } else {
                None
            }
        }
    }
}

/// `not_found` naming a service of `project`.
fn service_not_found(project: &Project, service: &str) -> HubError {
    HubError::not_found(Entity::Service, format!("{}/{service}", project.slug))
}

/// An engine error about a service's container: a container gone meanwhile is the service's
/// `not_found`.
fn as_service_error(err: HubError, project: &Project, service: &str) -> HubError {
    match err {
        HubError::NotFound { .. } => service_not_found(project, service),
        other => other,
    }
}

/// Networks a project's stack uses: its current name, and the names its containers were
/// created under (the project may have been renamed since).
fn networks_of(project: &Project, containers: &[ContainerInfo]) -> Vec<String> {
    let mut names = vec![stack_name(project)];
    for container in containers {
        if let Some(name) = container.labels.get(labels::COMPOSE_PROJECT)
            && !names.contains(name)
        {
            names.push(name.clone());
        }
    }
    names
}

/// A UUID kept in the settings table under `key`, made on first use.
async fn stored_uuid(db: &crate::db::Database, key: &str) -> Result<Uuid> {
    db.setting_or_insert(key, || Uuid::new_v4().to_string())
        .await?
        .parse()
        .map_err(|err| HubError::Internal(format!("stored {key} is not a UUID: {err}")))
}

fn project_id(payload: &Value) -> std::result::Result<i64, TaskError> {
    payload["project_id"]
        .as_i64()
        .ok_or_else(|| TaskError::new("invalid_input", "payload has no integer 'project_id'"))
}

/// The payload of a project operation.
pub fn payload(project_id: i64, service: Option<&str>) -> Value {
    match service {
        Some(service) => json!({"project_id": project_id, "service": service}),
        None => json!({"project_id": project_id}),
    }
}
