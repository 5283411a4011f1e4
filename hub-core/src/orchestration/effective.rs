//! The effective stack: what a start of the project would run, after interpolation and port
//! remapping (what `docker compose config` shows for compose).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ServicePort, container_name, stack_name, volume_name};
use crate::project::Project;
use crate::stack::{HealthSpec, Mount, RestartPolicy, ServiceSpec, StackFormat, StackSpec};

/// A project's stack as the hub would run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EffectiveStack {
    /// Project id.
    pub project_id: i64,
    /// Project name.
    pub project: String,
    /// The file the stack comes from, or `default`.
    pub source: String,
    /// `compose`, `hub_toml` or `default`.
    pub format: StackFormat,
    /// The project's network.
    pub network: String,
    /// How long a start waits for health (`5m`).
    pub health_timeout: String,
    /// How long a stop waits before killing (`10s`).
    pub stop_grace: String,
    /// Services, by name.
    pub services: Vec<EffectiveService>,
    /// Named volumes: name in the file → engine volume.
    pub volumes: BTreeMap<String, EffectiveVolume>,
    /// What deserves a look: unset variables, ignored keys, services left out.
    pub warnings: Vec<String>,
}

/// A named volume as the engine has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EffectiveVolume {
    /// The engine's name for it.
    pub name: String,
    /// Made outside the hub, used as it is.
    pub external: bool,
}

/// One service as the hub would run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EffectiveService {
    /// Service name.
    pub name: String,
    /// Container name.
    pub container: String,
    /// Image (the tag a build gets, for a service that is built).
    pub image: String,
    /// How the image is built, for a service that is built.
    pub build: Option<EffectiveBuild>,
    /// Entrypoint, when the file replaces the image's.
    pub entrypoint: Option<Vec<String>>,
    /// Command, when the file replaces the image's.
    pub command: Option<Vec<String>>,
    /// Published ports, `container port → host port`.
    pub ports: Vec<ServicePort>,
    /// Environment, interpolated.
    pub environment: BTreeMap<String, String>,
    /// Mounts: `volume hub-demo_data → /data`, `bind /srv/demo/conf → /etc/app (ro)`.
    pub volumes: Vec<String>,
    /// Dependencies: `db (service_healthy)`.
    pub depends_on: Vec<String>,
    /// Health check: its test and timings, or `none`.
    pub healthcheck: Option<String>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// User.
    pub user: Option<String>,
    /// Restart policy (`no`, `always`, `on-failure:3`, `unless-stopped`).
    pub restart: Option<String>,
    /// Labels from the file.
    pub labels: BTreeMap<String, String>,
    /// Names peers reach it by on the project's network.
    pub aliases: Vec<String>,
    /// Runs to completion (a dependant waits for `service_completed_successfully`).
    pub run_once: bool,
}

/// How a service's image is built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EffectiveBuild {
    /// The context folder.
    pub context: String,
    /// The Dockerfile, relative to the context.
    pub dockerfile: String,
    /// The stage built, when not the last.
    pub target: Option<String>,
    /// Build arguments.
    pub args: BTreeMap<String, String>,
}

impl EffectiveStack {
    /// The view of `stack`, read for `project`.
    pub fn of(project: &Project, stack: &StackSpec) -> Self {
        let volumes = stack
            .services
            .iter()
            .flat_map(|s| &s.volumes)
            .filter_map(|mount| match mount {
                Mount::Volume { name, .. } => Some(name),
                Mount::Bind { .. } => None,
            })
            .map(|name| {
                let declared = stack.volumes.get(name);
                let engine = declared
                    .and_then(|v| v.name.clone())
                    .unwrap_or_else(|| volume_name(project, name));
                let external = declared.is_some_and(|v| v.external);
                (
                    name.clone(),
                    EffectiveVolume {
                        name: engine,
                        external,
                    },
                )
            })
            .collect::<BTreeMap<_, _>>();
        EffectiveStack {
            project_id: project.id,
            project: project.name.clone(),
            source: stack.source.clone(),
            format: stack.format,
            network: stack_name(project),
            health_timeout: humantime::format_duration(stack.health_timeout).to_string(),
            stop_grace: humantime::format_duration(stack.stop_grace).to_string(),
            services: stack
                .services
                .iter()
                .map(|s| EffectiveService::of(project, s, &volumes))
                .collect(),
            volumes,
            warnings: stack.warnings.clone(),
        }
    }
}

impl EffectiveService {
    fn of(
        project: &Project,
        service: &ServiceSpec,
        volumes: &BTreeMap<String, EffectiveVolume>,
    ) -> Self {
        let mounts = service
            .volumes
            .iter()
            .map(|mount| {
                let (kind, source, target, read_only) = match mount {
                    Mount::Volume {
                        name,
                        target,
                        read_only,
                    } => (
                        "volume",
                        volumes
                            .get(name)
                            .map_or_else(|| volume_name(project, name), |v| v.name.clone()),
                        target,
                        read_only,
                    ),
                    Mount::Bind {
                        source,
                        target,
                        host,
                        read_only,
                    } => (
                        "bind",
                        host.as_ref()
                            .map_or_else(|| source.clone(), |h| h.display().to_string()),
                        target,
                        read_only,
                    ),
                };
                let mode = if *read_only { " (ro)" } else { "" };
                format!("{kind} {source} → {target}{mode}")
            })
            .collect();
        EffectiveService {
            name: service.name.clone(),
            container: container_name(project, &service.name),
            image: service.image.clone(),
            build: service.build.as_ref().map(|b| EffectiveBuild {
                context: b
                    .context_dir
                    .as_ref()
                    .map_or_else(|| b.context.clone(), |d| d.display().to_string()),
                dockerfile: b.dockerfile.clone(),
                target: b.target.clone(),
                args: b.args.clone(),
            }),
            entrypoint: service.entrypoint.clone(),
            command: service.command.clone(),
            ports: service.ports.iter().map(ServicePort::of).collect(),
            environment: service.environment.clone(),
            volumes: mounts,
            depends_on: service
                .depends_on
                .iter()
                .map(|d| format!("{} ({})", d.service, d.condition.as_str()))
                .collect(),
            healthcheck: service.healthcheck.as_ref().map(health_text),
            working_dir: service.working_dir.clone(),
            user: service.user.clone(),
            restart: service.restart.map(|r| match r {
                RestartPolicy::No => "no".to_owned(),
                RestartPolicy::Always => "always".to_owned(),
                RestartPolicy::UnlessStopped => "unless-stopped".to_owned(),
                RestartPolicy::OnFailure { max_retries: None } => "on-failure".to_owned(),
                RestartPolicy::OnFailure {
                    max_retries: Some(n),
                } => format!("on-failure:{n}"),
            }),
            labels: service.labels.clone(),
            aliases: service.aliases.clone(),
            run_once: service.run_once,
        }
    }
}

fn health_text(check: &HealthSpec) -> String {
    match check.test.first().map(String::as_str) {
        Some("NONE") => "none (the image's check is turned off)".to_owned(),
        None => "the image's own check".to_owned(),
        _ => format!(
            "{} every {}, timeout {}, {} retries, start period {}",
            check.test.join(" "),
            humantime::format_duration(check.interval),
            humantime::format_duration(check.timeout),
            check.retries,
            humantime::format_duration(check.start_period)
        ),
    }
}
