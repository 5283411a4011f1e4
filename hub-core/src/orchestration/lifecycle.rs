//! Start, stop and restart of a project's stack, as task handlers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use futures_util::future::{join_all, try_join_all};
use serde_json::json;
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use super::health::wait_ready;
use super::startup::{Stage, Startup};
use super::{ExtraPorts, Orchestrator, container_name, engine_volume, stack_name};
use crate::error::Entity;
use crate::ports::probe_busy;
use crate::project::{Health, Project, ProjectStatus};
use crate::registry::StatusChange;
use crate::runtime::{
    Binding, BuildRequest, ContainerInfo, ContainerSpec, HealthCheck, PublishedPort, labels,
    pack_context,
};
use crate::stack::{Mount, Protocol, ServiceSpec, StackSpec};
use crate::sync::lock;
use crate::tasks::{CancelReason, JobResult, TaskContext, TaskError, TaskState};

/// Task error code of a start refused because a port is taken on the host.
pub const PORT_IN_USE: &str = "port_in_use";
/// Task error code of an image that is neither present nor pullable.
pub const IMAGE_UNAVAILABLE: &str = "image_unavailable";
/// Task error code of a service image whose build failed.
pub const BUILD_FAILED: &str = "build_failed";
/// Task error code of a start stopped by its task's cancellation (a revoke, a time limit, a
/// shutdown).
pub const CANCELLED: &str = "cancelled";

/// Maps a phase's 0–100 onto a slice of the task's progress bar, so a restart's stop and start
/// halves report one bar that only goes up.
struct Phase<'a> {
    ctx: &'a TaskContext,
    from: u8,
    to: u8,
    /// Reports every step in this state instead of the phase's own (e.g. `RESTARTING`).
    state: Option<TaskState>,
}

impl<'a> Phase<'a> {
    fn whole(ctx: &'a TaskContext) -> Self {
        Phase {
            ctx,
            from: 0,
            to: 100,
            state: None,
        }
    }

    async fn report(&self, state: TaskState, percent: u8, step: impl Into<String>) {
        let span = u16::from(self.to.saturating_sub(self.from));
        let scaled = u16::from(self.from) + span * u16::from(percent.min(100)) / 100;
        let state = self.state.unwrap_or(state);
        // Progress is best effort: a failed report must not fail the operation.
        let _ = self
            .ctx
            .progress(state, u8::try_from(scaled).unwrap_or(100), step)
            .await;
    }
}

/// A start's progress over its services, from 50 to 95 %: two steps each (started, ready).
/// Services report as they go, side by side; one report goes out at a time, so the bar only
/// goes up.
struct Progress<'a> {
    phase: &'a Phase<'a>,
    done: tokio::sync::Mutex<usize>,
    steps: usize,
}

impl<'a> Progress<'a> {
    fn new(phase: &'a Phase<'a>, services: usize) -> Self {
        Progress {
            phase,
            done: tokio::sync::Mutex::new(0),
            steps: 2 * services.max(1),
        }
    }

    /// Reports `status`, after counting a step done when `step_done`.
    async fn report(&self, step_done: bool, status: String) {
        let mut done = self.done.lock().await;
        *done = (*done + usize::from(step_done)).min(self.steps);
        let percent = 50 + 45 * *done / self.steps;
        self.phase
            .report(TaskState::Running, percent as u8, status)
            .await;
    }
}

/// A project's containers as the engine lists them, asked for as a start or stop begins. The
/// listing runs while the stack file is read: on a small stack those are an operation's longest
/// waits, and side by side they take as long as the longest of them. The operation holds the
/// project's exclusive key, so no other operation of the hub changes those containers
/// meanwhile. Dropped (the operation failed or was revoked first), the listing stops. Not asked
/// for (`None`) when the hub never created a container, nor the stack's network, for the
/// project: there is none.
struct Listing(Option<AbortOnDropHandle<crate::Result<Vec<ContainerInfo>>>>);

impl Listing {
    /// Whether the hub may have created containers, or the stack's network, for the project.
    fn asked(&self) -> bool {
        self.0.is_some()
    }

    async fn containers(self) -> crate::Result<Vec<ContainerInfo>> {
        let Some(listing) = self.0 else {
            return Ok(Vec::new());
        };
        listing.await.map_err(|err| {
            crate::HubError::Internal(format!("listing the project's containers failed: {err}"))
        })?
    }
}

/// What one start created, so that a revoked or failed start can take it away again.
#[derive(Default)]
struct Created {
    network: Option<String>,
    volumes: Vec<String>,
}

impl Orchestrator {
    pub(super) async fn run_start(&self, ctx: &TaskContext, project_id: i64) -> JobResult {
        let (project, created) = self.registry.get_for_operation(project_id).await?;
        let listing = self.list_containers(project_id, created);
        self.start_stack(&project, listing, &Phase::whole(ctx))
            .await
    }

    pub(super) async fn run_stop(&self, ctx: &TaskContext, project_id: i64) -> JobResult {
        let (project, created) = self.registry.get_for_operation(project_id).await?;
        let listing = self.list_containers(project_id, created);
        self.stop_stack(&project, listing, &Phase::whole(ctx)).await
    }

    pub(super) async fn run_restart(&self, ctx: &TaskContext, project_id: i64) -> JobResult {
        let (project, created) = self.registry.get_for_operation(project_id).await?;
        let listing = self.list_containers(project_id, created);
        let stop = Phase {
            ctx,
            from: 0,
            to: 40,
            state: Some(TaskState::Restarting),
        };
        let stopped = self.stop_stack(&project, listing, &stop).await?;
        let start = Phase {
            ctx,
            from: 40,
            to: 100,
            state: None,
        };
        // Listed again: the stop changed them.
        let listing = self.list_containers(project.id, created);
        let started = self.start_stack(&project, listing, &start).await?;
        Ok(json!({"stopped": stopped["stopped"], "started": started["services"]}))
    }

    pub(super) async fn run_restart_service(
        &self,
        ctx: &TaskContext,
        project_id: i64,
        service: &str,
    ) -> JobResult {
        let (project, created) = self.registry.get_for_operation(project_id).await?;
        let phase = Phase {
            state: Some(TaskState::Restarting),
            ..Phase::whole(ctx)
        };
        let result = self.restart_one(&project, created, service, &phase).await;
        if let Err(err) = &result {
            self.record_status(
                ctx,
                project.id,
                ProjectStatus::Error,
                Health::Unhealthy,
                Some(&err.message),
            )
            .await?;
        }
        result
    }

    /// Records a status change that the operation `ctx` runs makes: with the task's own
    /// writes when its backend keeps them in the registry's database, else directly. The
    /// former is not waited for: the writer stores it in order, before the task's end, and the
    /// backend reports an end only once stored — so whoever sees the task end sees the
    /// project's status too, and a worker does not wait a commit per task.
    async fn record_status(
        &self,
        ctx: &TaskContext,
        project_id: i64,
        status: ProjectStatus,
        health: Health,
        error: Option<&str>,
    ) -> crate::Result<()> {
        let change = StatusChange::new(project_id, status, health, error);
        match ctx.record_project_status(change.clone()) {
            // Dropping the answer leaves the writer to retry the change until it is stored.
            Some(_stored) => Ok(()),
            None => self.registry.apply_status(&change).await,
        }
    }

    /// Starts listing the project's containers on the engine, in the background, if the hub
    /// may have `created` some: see [`Listing`].
    fn list_containers(&self, project_id: i64, created: bool) -> Listing {
        if !created {
            return Listing(None);
        }
        let runtime = self.runtime.clone();
        let label = self.project_label(project_id);
        Listing(Some(AbortOnDropHandle::new(tokio::spawn(async move {
            runtime.containers_with_label(labels::PROJECT, &label).await
        }))))
    }

    /// Brings the stack up; on failure or revoke, removes what this start created and records
    /// the outcome on the project.
    async fn start_stack(
        &self,
        project: &Project,
        listing: Listing,
        phase: &Phase<'_>,
    ) -> JobResult {
        let created = Mutex::new(Created::default());
        // Not dropped when the task is cancelled: the start stops at its next wait (images,
        // dependencies, readiness) instead, so that whatever the engine was creating under it
        // is recorded for the undo below, and every registry write it began is ended.
        let outcome = self
            .start_inner(project, listing, phase, &created)
            .await
            .map_err(|err| match phase.ctx.cancel_reason() {
                Some(reason) => TaskError::new(CANCELLED, format!("start cancelled ({reason:?})")),
                None => err,
            });
        match outcome {
            Ok(result) => {
                self.record_status(
                    phase.ctx,
                    project.id,
                    ProjectStatus::Running,
                    Health::Healthy,
                    None,
                )
                .await?;
                tracing::info!(project = %project.slug, "stack running");
                Ok(result)
            }
            Err(err) => {
                if err.code != PORT_IN_USE && err.code != "invalid_input" {
                    let created = std::mem::take(&mut *lock(&created));
                    self.undo_start(project, created).await;
                }
                let (status, error) = match phase.ctx.cancel_reason() {
                    Some(CancelReason::Revoked) => (ProjectStatus::Stopped, None),
                    _ => (ProjectStatus::Error, Some(err.message.as_str())),
                };
                self.record_status(phase.ctx, project.id, status, Health::Unknown, error)
                    .await?;
                tracing::warn!(project = %project.slug, error = %err, "start did not complete");
                Err(err)
            }
        }
    }

    async fn start_inner(
        &self,
        project: &Project,
        listing: Listing,
        phase: &Phase<'_>,
        created: &Mutex<Created>,
    ) -> JobResult {
        phase
            .report(TaskState::Building, 2, "Reading the stack definition")
            .await;
        let stack = self.stack(project, ExtraPorts::Sync).await?;
        let volumes = self.engine_volumes(project, &stack).await?;
        let specs: HashMap<&str, ContainerSpec> = stack
            .services
            .iter()
            .map(|service| {
                Ok((
                    service.name.as_str(),
                    self.container_spec(project, service, &volumes)?,
                ))
            })
            .collect::<Result<_, TaskError>>()?;

        // Ports held by this project's own running containers are not "in use" by others.
        let created_before = listing.asked();
        let existing = listing.containers().await?;
        let own_ports: HashSet<u16> = existing
            .iter()
            .filter(|c| c.is_running())
            .filter_map(|c| c.labels.get(labels::PUBLISHED_PORT))
            .flat_map(|ports| ports.split(',').filter_map(|p| p.parse().ok()))
            .collect();
        let published: Vec<(String, u16)> = stack
            .services
            .iter()
            .flat_map(|service| {
                service.ports.iter().filter_map(|mapping| {
                    let port = mapping.host_port?;
                    let what = match mapping.role {
                        Some(role) => format!("{} port {port}", role.title()),
                        None => format!(
                            "port {port} (service {}, {}/{})",
                            service.name, mapping.target, mapping.protocol
                        ),
                    };
                    // Probing binds TCP; a UDP port is left to the engine to refuse.
                    (mapping.protocol == Protocol::Tcp).then_some((what, port))
                })
            })
            .filter(|(_, port)| !own_ports.contains(port))
            .collect();
        let taken = probe_busy(published.iter().map(|(_, port)| *port).collect()).await?;
        let busy: Vec<&str> = published
            .iter()
            .filter(|(_, port)| taken.contains(port))
            .map(|(what, _)| what.as_str())
            .collect();
        if !busy.is_empty() {
            return Err(TaskError::new(
                PORT_IN_USE,
                format!(
                    "Cannot start project: The following ports are already in use: {}",
                    busy.join(", ")
                ),
            ));
        }

        self.record_status(
            phase.ctx,
            project.id,
            ProjectStatus::Starting,
            Health::Unknown,
            None,
        )
        .await?;
        if !created_before && !specs.is_empty() {
            self.registry.note_containers_created(project.id).await?;
        }
        // A running container created from the same spec is kept, so a start repeated (by the
        // user, or after a lost worker) does not recreate a stack that runs; whatever else an
        // earlier run left is replaced.
        let kept: HashSet<String> = existing
            .iter()
            .filter(|c| c.is_running())
            .filter(|c| {
                specs.values().any(|spec| {
                    spec.name == c.name
                        && c.labels.get(labels::CONFIG_HASH) == spec.labels.get(labels::CONFIG_HASH)
                })
            })
            .map(|c| c.name.clone())
            .collect();
        for container in existing.iter().filter(|c| !kept.contains(&c.name)) {
            self.runtime.remove_container(&container.name).await?;
        }

        // The network, the volumes and the images do not depend on one another, so they are
        // prepared together; each is waited for to its end (not dropped when another fails),
        // so that whatever was created is known to the undo.
        let network = async {
            // Engines have a limited pool of bridge networks (about 30 by default): an empty
            // stack takes none.
            if stack.services.is_empty() {
                return Ok(());
            }
            let network = stack_name(project);
            phase
                .report(
                    TaskState::Building,
                    5,
                    format!("Creating network {network}"),
                )
                .await;
            let labels = self.resource_labels(project, labels::COMPOSE_NETWORK, "default");
            if self
                .ensure_owned(project, Entity::Network, &network, labels)
                .await?
            {
                lock(created).network = Some(network);
            }
            Ok::<(), TaskError>(())
        };
        let stack_ref = &stack;
        let volumes = join_all(volumes.iter().map(|(short, volume)| async move {
            if self
                .ensure_volume(project, stack_ref, short, volume)
                .await?
            {
                lock(created).volumes.push(volume.clone());
            }
            Ok::<(), TaskError>(())
        }));
        // A pull or a build may take minutes: it is the one step here a cancel cuts short
        // (it leaves at most an image); the network and volumes are created to the end.
        let images = phase.ctx.cancellation().run_until_cancelled(async {
            self.build_missing(project, &stack, phase).await?;
            self.pull_missing(&stack, phase).await
        });
        let (network, volumes, images) = tokio::join!(network, volumes, images);
        network?;
        volumes.into_iter().collect::<Result<(), TaskError>>()?;
        match images {
            Some(images) if !phase.ctx.is_cancelled() => images?,
            _ => return Err(TaskError::new(CANCELLED, "start cancelled")),
        }

        // Each service comes up on its own: its container is created at once (creating copies
        // image layers and runs nothing), started as soon as its own dependencies allow (see
        // `startup`), then waited for until ready. The start ends when every service is ready.
        phase
            .report(
                TaskState::Running,
                40,
                format!("Creating {} containers", specs.len()),
            )
            .await;
        let deadline = Instant::now() + stack.health_timeout;
        let startup = Startup::new(&stack.services, phase.ctx.cancellation());
        let progress = Progress::new(phase, stack.services.len());
        join_all(stack.services.iter().map(|service| {
            let spec = &specs[service.name.as_str()];
            let kept = kept.contains(&spec.name);
            let (startup, progress) = (&startup, &progress);
            async move {
                let outcome = async {
                    if !kept {
                        self.runtime.create_container(spec).await?;
                    }
                    startup.dependencies_of(service, deadline).await?;
                    if !kept {
                        progress
                            .report(false, format!("Starting {}", service.name))
                            .await;
                        self.runtime.start_container(&spec.name).await?;
                    }
                    startup.reached(&service.name, Stage::Started);
                    progress
                        .report(true, format!("Waiting for {} to be healthy", service.name))
                        .await;
                    let ready = wait_ready(self.runtime.as_ref(), service, &spec.name, deadline);
                    startup.unless_failed(ready).await?;
                    startup.reached(&service.name, Stage::Ready);
                    progress
                        .report(true, format!("{} is ready", service.name))
                        .await;
                    Ok(())
                };
                startup.ended(outcome.await);
            }
        }))
        .await;
        startup.outcome()?;
        phase
            .report(TaskState::Running, 99, "All services are healthy")
            .await;
        let services: Vec<&str> = stack.services.iter().map(|s| s.name.as_str()).collect();
        Ok(json!({"services": services, "ports": project.ports, "stack": stack.source}))
    }

    /// Creates a named volume of the stack unless it exists (an `external` one must exist
    /// already); returns whether it was created.
    async fn ensure_volume(
        &self,
        project: &Project,
        stack: &StackSpec,
        short: &str,
        volume: &str,
    ) -> Result<bool, TaskError> {
        let declared = stack.volumes.get(short).cloned().unwrap_or_default();
        if declared.external {
            if self.runtime.volume_labels(volume).await?.is_none() {
                return Err(TaskError::new(
                    "invalid_input",
                    format!(
                        "external volume '{volume}' (volumes.{short} in {}) does not exist; \
                         create it with `docker volume create {volume}`",
                        stack.source
                    ),
                ));
            }
            return Ok(false);
        }
        let mut labels = self.resource_labels(project, labels::COMPOSE_VOLUME, short);
        labels.extend(declared.labels);
        Ok(self
            .ensure_owned(project, Entity::Volume, volume, labels)
            .await?)
    }

    /// Builds the images of services with a `build:` section that are not present yet, as
    /// `docker compose up` does; the last line of the build's output is the task's step.
    async fn build_missing(
        &self,
        project: &Project,
        stack: &StackSpec,
        phase: &Phase<'_>,
    ) -> Result<(), TaskError> {
        let mut missing = Vec::new();
        for service in stack.services.iter().filter(|s| s.build.is_some()) {
            if !self.runtime.image_exists(&service.image).await? {
                missing.push(service);
            }
        }
        let count = missing.len();
        for (i, service) in missing.into_iter().enumerate() {
            let Some(build) = &service.build else {
                continue;
            };
            let step = format!("Building {} ({}/{count})", service.image, i + 1);
            let percent = (8 + 30 * i / count) as u8;
            phase
                .report(TaskState::Building, percent, step.clone())
                .await;
            let folder = build
                .context_dir
                .clone()
                .unwrap_or_else(|| project.path.join(&build.context));
            let context = tokio::task::spawn_blocking(move || pack_context(&folder))
                .await
                .map_err(|err| {
                    TaskError::new(
                        "internal",
                        format!("packing the build context failed: {err}"),
                    )
                })?
                .map_err(|err| {
                    TaskError::new(
                        BUILD_FAILED,
                        format!(
                            "cannot pack the build context of service '{}': {err}",
                            service.name
                        ),
                    )
                })?;
            let request = BuildRequest {
                tag: service.image.clone(),
                context,
                dockerfile: build.dockerfile.clone(),
                args: build.args.clone().into_iter().collect(),
                target: build.target.clone(),
            };
            let (sender, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
            let run = async move {
                let output = move |line: String| {
                    let _ = sender.send(line);
                };
                self.runtime.build_image(request, &output).await
            };
            let forward = async {
                while let Some(line) = lines.recv().await {
                    phase
                        .report(TaskState::Building, percent, format!("{step}: {line}"))
                        .await;
                }
            };
            let (built, ()) = tokio::join!(run, forward);
            built.map_err(|err| {
                let detail = match err {
                    crate::HubError::Internal(detail) => detail,
                    other => other.to_string(),
                };
                TaskError::new(
                    BUILD_FAILED,
                    format!(
                        "building the image of service '{}' failed: {detail}",
                        service.name
                    ),
                )
            })?;
        }
        Ok(())
    }

    /// Pulls the images the stack needs that are not present, reporting per-image progress.
    /// Images the stack builds are not pulled.
    async fn pull_missing(&self, stack: &StackSpec, phase: &Phase<'_>) -> Result<(), TaskError> {
        let mut images: Vec<&str> = stack
            .services
            .iter()
            .filter(|s| s.build.is_none())
            .map(|s| s.image.as_str())
            .collect();
        images.sort();
        images.dedup();
        let present =
            try_join_all(images.iter().map(|image| self.runtime.image_exists(image))).await?;
        let missing: Vec<&str> = images
            .into_iter()
            .zip(present)
            .filter_map(|(image, present)| (!present).then_some(image))
            .collect();
        let count = missing.len();
        for (i, image) in missing.into_iter().enumerate() {
            let base = 10 + 30 * i / count;
            let span = 30 / count;
            let step = format!("Pulling {image} ({}/{count})", i + 1);
            phase
                .report(TaskState::Building, base as u8, step.clone())
                .await;
            let (sender, mut updates) = tokio::sync::mpsc::unbounded_channel();
            // The sender lives in this block, so `forward` ends when the pull does.
            let pull = async move {
                let report = move |p| {
                    let _ = sender.send(p);
                };
                self.runtime.pull_image(image, &report).await
            };
            let forward = async {
                while let Some(progress) = updates.recv().await {
                    let percent = base + span * usize::from(progress.percent()) / 100;
                    phase
                        .report(
                            TaskState::Building,
                            percent as u8,
                            format!("{step}: {}%", progress.percent()),
                        )
                        .await;
                }
            };
            let (pulled, ()) = tokio::join!(pull, forward);
            pulled.map_err(|err| {
                TaskError::new(
                    IMAGE_UNAVAILABLE,
                    format!(
                        "image {image} is not available locally and could not be pulled: {err}"
                    ),
                )
            })?;
        }
        Ok(())
    }

    /// Removes what a failed or revoked start created: the project's containers, and the
    /// network and volumes this start made (volumes that existed before keep their data).
    async fn undo_start(&self, project: &Project, created: Created) {
        let result: crate::Result<()> = async {
            for container in self.containers(project.id).await? {
                self.runtime.remove_container(&container.name).await?;
            }
            if let Some(network) = created.network {
                self.runtime.remove_network(&network).await?;
            }
            for volume in created.volumes {
                self.runtime.remove_volume(&volume).await?;
            }
            Ok(())
        }
        .await;
        if let Err(err) = result {
            tracing::warn!(project = %project.slug, error = %err, "cleaning up a failed start failed");
        }
    }

    /// Stops and removes the stack's containers in reverse dependency order, then its network.
    /// Named volumes stay.
    async fn stop_stack(
        &self,
        project: &Project,
        listing: Listing,
        phase: &Phase<'_>,
    ) -> JobResult {
        self.record_status(
            phase.ctx,
            project.id,
            ProjectStatus::Stopping,
            project.health,
            None,
        )
        .await?;
        match self.stop_inner(project, listing, phase).await {
            Ok(result) => {
                self.record_status(
                    phase.ctx,
                    project.id,
                    ProjectStatus::Stopped,
                    Health::Unknown,
                    None,
                )
                .await?;
                Ok(result)
            }
            Err(err) => {
                self.record_status(
                    phase.ctx,
                    project.id,
                    ProjectStatus::Error,
                    Health::Unknown,
                    Some(&err.message),
                )
                .await?;
                Err(err)
            }
        }
    }

    async fn stop_inner(
        &self,
        project: &Project,
        listing: Listing,
        phase: &Phase<'_>,
    ) -> JobResult {
        phase
            .report(TaskState::Stopping, 5, "Looking up running services")
            .await;
        // None of these depends on another, so they are waited for at once. The network is
        // looked up before the containers go (a stop creates none) and removed after them;
        // the hub creates a stack's network only once the project is marked (see `Listing`),
        // so an unmarked project has none to look up.
        let network = stack_name(project);
        let created = listing.asked();
        let (containers, stack, network_labels) = tokio::join!(
            listing.containers(),
            self.stack(project, ExtraPorts::Read),
            async {
                if created {
                    self.runtime.network_labels(&network).await.map(Some)
                } else {
                    Ok(None)
                }
            },
        );
        let (containers, stack) = (containers?, stack.ok());
        let grace = stack
            .as_ref()
            .map_or(std::time::Duration::from_secs(10), |s| s.stop_grace);
        let levels = stop_order(stack.as_ref(), &containers);
        let total = containers.len().max(1);
        let mut done = 0;
        for level in &levels {
            let names: Vec<&str> = level.iter().map(|c| service_of(c)).collect();
            phase
                .report(
                    TaskState::Stopping,
                    (10 + 80 * done / total) as u8,
                    format!("Stopping {}", names.join(", ")),
                )
                .await;
            try_join_all(level.iter().map(|container| async {
                self.runtime.stop_container(&container.name, grace).await?;
                self.runtime.remove_container(&container.name).await
            }))
            .await?;
            done += level.len();
        }
        if let Some(network_labels) = network_labels? {
            phase
                .report(TaskState::Stopping, 92, "Removing the network")
                .await;
            let known = HashMap::from([(network, network_labels)]);
            self.remove_networks(project, &containers, known).await?;
        }
        let stopped: Vec<&str> = containers.iter().map(service_of).collect();
        Ok(json!({"stopped": stopped}))
    }

    /// Recreates `service`'s container; `created` says whether the hub may have created a
    /// container for the project before (else this one is noted first).
    async fn restart_one(
        &self,
        project: &Project,
        created: bool,
        service: &str,
        phase: &Phase<'_>,
    ) -> JobResult {
        let stack = self.stack(project, ExtraPorts::Lease).await?;
        let spec = stack.service(service).ok_or_else(|| {
            TaskError::from(crate::HubError::not_found(
                Entity::Service,
                format!("{}/{service}", project.slug),
            ))
        })?;
        let volumes = self.engine_volumes(project, &stack).await?;
        let container = self.container_spec(project, spec, &volumes)?;
        phase
            .report(TaskState::Restarting, 10, format!("Stopping {service}"))
            .await;
        // The running container is found by its labels: a container that merely has the
        // name is not this project's to stop.
        match self.service_container(project, service).await {
            Ok(old) => {
                self.runtime
                    .stop_container(&old.id, stack.stop_grace)
                    .await?;
                self.runtime.remove_container(&old.id).await?;
            }
            Err(crate::HubError::NotFound { .. }) => {}
            Err(err) => return Err(err.into()),
        }
        // Marked before the network too: a stop of an unmarked project does not look for it.
        if !created {
            self.registry.note_containers_created(project.id).await?;
        }
        self.ensure_owned(
            project,
            Entity::Network,
            &stack_name(project),
            self.resource_labels(project, labels::COMPOSE_NETWORK, "default"),
        )
        .await?;
        for mount in &spec.volumes {
            if let Mount::Volume { name, .. } = mount {
                let volume = engine_volume(&volumes, project, name);
                self.ensure_volume(project, &stack, name, &volume).await?;
            }
        }
        phase
            .report(TaskState::Restarting, 40, format!("Starting {service}"))
            .await;
        self.runtime.create_container(&container).await?;
        self.runtime.start_container(&container.name).await?;
        phase
            .report(
                TaskState::Restarting,
                70,
                format!("Waiting for {service} to be healthy"),
            )
            .await;
        wait_ready(
            self.runtime.as_ref(),
            spec,
            &container.name,
            Instant::now() + stack.health_timeout,
        )
        .await?;
        Ok(json!({"restarted": service}))
    }

    /// The container a service of this project runs as.
    fn container_spec(
        &self,
        project: &Project,
        service: &ServiceSpec,
        engine_volumes: &BTreeMap<String, String>,
    ) -> Result<ContainerSpec, TaskError> {
        let env = service
            .environment
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        let name = container_name(project, &service.name);
        // The file's labels first: the hub's own cannot be overridden.
        let mut labels: HashMap<String, String> = service.labels.clone().into_iter().collect();
        labels.extend(self.resource_labels(project, labels::COMPOSE_SERVICE, &service.name));
        labels.insert(labels::COMPOSE_ONEOFF.into(), "False".into());
        labels.insert(labels::COMPOSE_CONTAINER_NUMBER.into(), "1".into());
        labels.insert(labels::SERVICE.into(), service.name.clone());
        if let Some(role) = service.ports.iter().find_map(|p| p.role) {
            labels.insert(labels::ROLE.into(), role.to_string());
        }
        let mut ports = Vec::with_capacity(service.ports.len());
        for mapping in &service.ports {
            let host_port = mapping.host_port.ok_or_else(|| {
                TaskError::new(
                    "internal",
                    format!(
                        "no host port is leased for {}/{} of service '{}'",
                        mapping.target, mapping.protocol, service.name
                    ),
                )
            })?;
            ports.push(PublishedPort {
                host_ip: mapping.host_ip.clone(),
                host_port,
                target: mapping.target,
                protocol: mapping.protocol,
            });
        }
        if !ports.is_empty() {
            let list: Vec<String> = ports.iter().map(|p| p.host_port.to_string()).collect();
            labels.insert(labels::PUBLISHED_PORT.into(), list.join(","));
        }
        if service.run_once {
            labels.insert(labels::RUN_ONCE.into(), "true".into());
        }
        let mut volumes = Vec::new();
        let mut binds = Vec::new();
        for mount in &service.volumes {
            match mount {
                Mount::Volume {
                    name,
                    target,
                    read_only,
                } => volumes.push(Binding {
                    source: engine_volume(engine_volumes, project, name),
                    target: target.clone(),
                    read_only: *read_only,
                }),
                Mount::Bind {
                    source,
                    target,
                    host,
                    read_only,
                } => {
                    let host = host.clone().unwrap_or_else(|| project.path.join(source));
                    binds.push(Binding {
                        source: host.display().to_string(),
                        target: target.clone(),
                        read_only: *read_only,
                    });
                }
            }
        }
        let mut aliases = vec![service.name.clone()];
        aliases.extend(service.aliases.iter().cloned());
        Ok(ContainerSpec {
            name,
            image: service.image.clone(),
            entrypoint: service.entrypoint.clone(),
            command: service.command.clone(),
            user: service.user.clone(),
            restart: service.restart,
            env,
            working_dir: service.working_dir.clone(),
            labels,
            network: Some(stack_name(project)),
            aliases,
            volumes,
            binds,
            ports,
            healthcheck: service.healthcheck.as_ref().map(|h| HealthCheck {
                test: h.test.clone(),
                interval: h.interval,
                timeout: h.timeout,
                retries: h.retries,
                start_period: h.start_period,
            }),
        }
        .with_config_hash())
    }

    /// Labels of everything the hub creates for `project`, plus `kind = value`.
    fn resource_labels(
        &self,
        project: &Project,
        kind: &str,
        value: &str,
    ) -> HashMap<String, String> {
        HashMap::from([
            (labels::COMPOSE_PROJECT.to_owned(), stack_name(project)),
            (
                labels::COMPOSE_WORKING_DIR.to_owned(),
                project.path.display().to_string(),
            ),
            (labels::MANAGED.to_owned(), "true".to_owned()),
            (labels::INSTANCE.to_owned(), self.instance.to_string()),
            (labels::PROJECT.to_owned(), self.project_label(project.id)),
            (labels::PROJECT_ID.to_owned(), project.id.to_string()),
            (labels::PROJECT_SLUG.to_owned(), project.slug.clone()),
            (kind.to_owned(), value.to_owned()),
        ])
    }
}

fn service_of(container: &ContainerInfo) -> &str {
    container
        .labels
        .get(labels::SERVICE)
        .map_or(container.name.as_str(), String::as_str)
}

/// Containers grouped for stopping: dependents before what they depend on. Containers the
/// current definition does not know go first.
fn stop_order<'a>(
    stack: Option<&StackSpec>,
    containers: &'a [ContainerInfo],
) -> Vec<Vec<&'a ContainerInfo>> {
    let Some(stack) = stack else {
        return vec![containers.iter().collect()];
    };
    let mut levels: Vec<Vec<&ContainerInfo>> = Vec::new();
    let known: HashSet<&str> = stack.services.iter().map(|s| s.name.as_str()).collect();
    let unknown: Vec<&ContainerInfo> = containers
        .iter()
        .filter(|c| !known.contains(service_of(c)))
        .collect();
    if !unknown.is_empty() {
        levels.push(unknown);
    }
    for level in stack.start_order().into_iter().rev() {
        let names: HashSet<&str> = level.iter().map(|s| s.name.as_str()).collect();
        let group: Vec<&ContainerInfo> = containers
            .iter()
            .filter(|c| names.contains(service_of(c)))
            .collect();
        if !group.is_empty() {
            levels.push(group);
        }
    }
    levels
}
