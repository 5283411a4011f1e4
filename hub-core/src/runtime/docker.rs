//! [`Runtime`] on the Docker Engine API, through bollard.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, NetworkCreateRequest,
    NetworkingConfig, PortBinding, RestartPolicy as EngineRestart, RestartPolicyNameEnum,
    VolumeCreateOptions,
};
use bollard::query_parameters::{
    BuildImageOptions, CreateContainerOptions, CreateImageOptions, ListContainersOptions,
    ListVolumesOptions, LogsOptions, RemoveContainerOptions, RemoveVolumeOptions,
    StopContainerOptions,
};
use bollard::{API_DEFAULT_VERSION, BollardRequest, Docker};
use futures_util::stream::{BoxStream, StreamExt};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::TokioExecutor;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use super::{
    Binding, BuildRequest, ContainerInfo, ContainerSpec, Ensured, LogLine, LogStream, PullProgress,
    Runtime,
};
use crate::error::{Entity, HubError, Result};
use crate::stack::RestartPolicy;
use crate::sync::lock;

/// The socket Docker listens on when nothing else is said.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// How long connecting (and negotiating the API version) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Per-request timeout of the HTTP client, in seconds; long enough for a slow pull's stream.
const REQUEST_TIMEOUT_SECS: u64 = 600;
/// Connections to the engine kept open while idle: about what the workers and a few clients
/// use at once (Docker's own command line keeps two).
const IDLE_CONNECTIONS: usize = 8;

/// The Docker engine at one address. Connects on first use and again after a connection
/// failure, so a hub can start while the engine is down and use it once it is up.
pub struct DockerRuntime {
    address: String,
    client: Mutex<Option<Docker>>,
}

impl std::fmt::Debug for DockerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerRuntime")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl DockerRuntime {
    /// A runtime for `address` (`unix:///path`, `/path`, `tcp://host:port`, `http://…`), or, when
    /// `None`, for `HUB_DOCKER_HOST`, else `DOCKER_HOST`, else the default socket.
    pub fn new(address: Option<&str>) -> Self {
        DockerRuntime {
            address: resolve_address(address),
            client: Mutex::new(None),
        }
    }

    /// Like [`DockerRuntime::new`], refusing an address no engine can be reached at (a scheme
    /// other than `unix://`, `tcp://`, `http://` or a socket path) at once instead of at first
    /// use.
    pub fn try_new(address: Option<&str>) -> Result<Self> {
        let runtime = DockerRuntime::new(address);
        let address = runtime.address.as_str();
        let known = ["unix://", "tcp://", "http://", "/"]
            .iter()
            .any(|prefix| address.starts_with(prefix));
        if !known {
            return Err(HubError::invalid(
                "docker_host",
                format!(
                    "'{address}' is not a Docker engine address (unix:///path/docker.sock, /path/docker.sock, tcp://host:port or http://host:port)"
                ),
            ));
        }
        Ok(runtime)
    }

    async fn client(&self) -> Result<Docker> {
        if let Some(client) = lock(&self.client).as_ref() {
            return Ok(client.clone());
        }
        // Connecting may take up to CONNECT_TIMEOUT: the lock is not held meanwhile, so other
        // calls fail or succeed on their own clock instead of queueing behind this one.
        let client = self.connect().await?;
        Ok(lock(&self.client).get_or_insert(client).clone())
    }

    async fn connect(&self) -> Result<Docker> {
        let address = self.address.as_str();
        let socket = address
            .strip_prefix("unix://")
            .or_else(|| address.starts_with('/').then_some(address));
        let client = if let Some(path) = socket {
            if !std::path::Path::new(path).exists() {
                return Err(HubError::RuntimeUnavailable {
                    address: self.address.clone(),
                    message: format!("no socket at {path}"),
                });
            }
            pooled(hyperlocal::UnixConnector, format!("unix://{}", hex(path)))
        } else if let Some(host) = address
            .strip_prefix("tcp://")
            .or_else(|| address.strip_prefix("http://"))
        {
            pooled(HttpConnector::new(), format!("http://{host}"))
        } else {
            return Err(HubError::invalid(
                "docker_host",
                format!("'{address}' is not a unix://, tcp:// or http:// address"),
            ));
        }
        .map_err(|err| self.unavailable(&err))?;
        // Engines older than bollard's default API version (1.41 here) must still work.
        let client = tokio::time::timeout(CONNECT_TIMEOUT, client.negotiate_version())
            .await
            .map_err(|_| HubError::RuntimeUnavailable {
                address: self.address.clone(),
                message: format!("no answer within {CONNECT_TIMEOUT:?}"),
            })?
            .map_err(|err| self.unavailable(&err))?;
        tracing::debug!(address = %self.address, version = ?client.client_version(), "connected to docker");
        Ok(client)
    }

    fn unavailable(&self, err: &DockerError) -> HubError {
        HubError::RuntimeUnavailable {
            address: self.address.clone(),
            message: err.to_string(),
        }
    }

    /// Maps an engine error about `object`: 404 is `not_found` and 409 `conflict`, both naming
    /// the object; connection failures are `runtime_unavailable` and drop the cached client.
    async fn fail(&self, action: &str, object: Object<'_>, err: DockerError) -> HubError {
        match &err {
            DockerError::DockerResponseServerError {
                status_code: 404, ..
            } if let Some((entity, name)) = object.named() => HubError::not_found(entity, name),
            DockerError::DockerResponseServerError {
                status_code: 409,
                message,
            } => HubError::Conflict {
                message: format!("docker: cannot {action} {object}: {message}"),
            },
            DockerError::DockerResponseServerError {
                status_code,
                message,
            } => HubError::Internal(format!(
                "docker: {action} {object}: {message} (HTTP {status_code})"
            )),
            DockerError::DockerStreamError { error } => {
                HubError::Internal(format!("docker: {action} {object}: {error}"))
            }
            _ => {
                *lock(&self.client) = None;
                self.unavailable(&err)
            }
        }
    }
}

/// What an engine call was about, so that its errors name it.
#[derive(Debug, Clone, Copy)]
enum Object<'a> {
    Engine,
    Image(&'a str),
    Network(&'a str),
    Volume(&'a str),
    Container(&'a str),
}

impl<'a> Object<'a> {
    /// The kind and name of a named object.
    fn named(self) -> Option<(Entity, &'a str)> {
        match self {
            Object::Engine => None,
            Object::Image(name) => Some((Entity::Image, name)),
            Object::Network(name) => Some((Entity::Network, name)),
            Object::Volume(name) => Some((Entity::Volume, name)),
            Object::Container(name) => Some((Entity::Container, name)),
        }
    }
}

impl std::fmt::Display for Object<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.named() {
            Some((entity, name)) => write!(f, "{entity} '{name}'"),
            None => f.write_str("the engine"),
        }
    }
}

/// The address a runtime given `explicit` talks to.
pub fn resolve_address(explicit: Option<&str>) -> String {
    explicit
        .map(str::to_owned)
        .or_else(|| std::env::var("HUB_DOCKER_HOST").ok())
        .or_else(|| std::env::var("DOCKER_HOST").ok())
        .filter(|address| !address.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_owned())
}

fn is_not_found(err: &DockerError) -> bool {
    matches!(
        err,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn label_filter(key: &str, value: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_owned(), vec![format!("{key}={value}")])])
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

#[async_trait]
impl Runtime for DockerRuntime {
    fn address(&self) -> String {
        self.address.clone()
    }

    async fn ping(&self) -> Result<String> {
        let client = self.client().await?;
        match client.version().await {
            Ok(version) => Ok(version.api_version.unwrap_or_default()),
            Err(err) => Err(self.fail("ping", Object::Engine, err).await),
        }
    }

    async fn image_exists(&self, image: &str) -> Result<bool> {
        let client = self.client().await?;
        match client.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(err) if is_not_found(&err) => Ok(false),
            Err(err) => Err(self.fail("inspect", Object::Image(image), err).await),
        }
    }

    async fn pull_image(
        &self,
        image: &str,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<()> {
        let client = self.client().await?;
        let image = with_default_tag(image);
        let image = image.as_str();
        let options = CreateImageOptions {
            from_image: Some(image.to_owned()),
            ..Default::default()
        };
        let mut stream = client.create_image(Some(options), None, None);
        // Per-layer byte counts, summed into one figure for the whole image.
        let mut layers: HashMap<String, (u64, u64)> = HashMap::new();
        while let Some(item) = stream.next().await {
            let info = match item {
                Ok(info) => info,
                Err(err) => return Err(self.fail("pull", Object::Image(image), err).await),
            };
            if let (Some(id), Some(detail)) = (info.id, info.progress_detail) {
                let entry = layers.entry(id).or_default();
                if let Some(total) = detail.total.and_then(|t| u64::try_from(t).ok()) {
                    entry.1 = total;
                }
                if let Some(current) = detail.current.and_then(|c| u64::try_from(c).ok()) {
                    entry.0 = current;
                }
                let (current, total) = layers
                    .values()
                    .fold((0, 0), |(c, t), (lc, lt)| (c + lc, t + lt));
                progress(PullProgress { current, total });
            }
        }
        Ok(())
    }

    async fn build_image(
        &self,
        request: BuildRequest,
        output: &(dyn Fn(String) + Send + Sync),
    ) -> Result<()> {
        let client = self.client().await?;
        let options = BuildImageOptions {
            dockerfile: request.dockerfile.clone(),
            t: Some(request.tag.clone()),
            buildargs: Some(request.args.clone()),
            target: request.target.clone().unwrap_or_default(),
            rm: true,
            forcerm: true,
            labels: Some(HashMap::from([(
                super::labels::MANAGED.to_owned(),
                "true".to_owned(),
            )])),
            ..Default::default()
        };
        let body = bollard::body_full(request.context.into());
        let mut stream = client.build_image(options, None, Some(body));
        while let Some(item) = stream.next().await {
            let info = match item {
                Ok(info) => info,
                Err(err) => return Err(self.fail("build", Object::Image(&request.tag), err).await),
            };
            if let Some(detail) = info.error_detail.and_then(|d| d.message).or(info.error) {
                return Err(HubError::Internal(format!(
                    "docker: building {} failed: {detail}",
                    request.tag
                )));
            }
            for line in info.stream.iter().flat_map(|s| s.lines()) {
                let line = line.trim_end();
                if !line.is_empty() {
                    output(line.to_owned());
                }
            }
        }
        Ok(())
    }

    async fn ensure_network(&self, name: &str, labels: HashMap<String, String>) -> Result<Ensured> {
        if let Some(existing) = self.network_labels(name).await? {
            return Ok(Ensured::Existing(existing));
        }
        let client = self.client().await?;
        let request = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".into()),
            labels: Some(labels),
            ..Default::default()
        };
        match client.create_network(request).await {
            Ok(_) => Ok(Ensured::Created),
            Err(err) => Err(self.fail("create", Object::Network(name), err).await),
        }
    }

    async fn network_labels(&self, name: &str) -> Result<Option<HashMap<String, String>>> {
        let client = self.client().await?;
        match client
            .inspect_network(
                name,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
        {
            Ok(network) => Ok(Some(network.labels.unwrap_or_default())),
            Err(err) if is_not_found(&err) => Ok(None),
            Err(err) => Err(self.fail("inspect", Object::Network(name), err).await),
        }
    }

    async fn remove_network(&self, name: &str) -> Result<()> {
        let client = self.client().await?;
        match client.remove_network(name).await {
            Ok(()) => Ok(()),
            Err(err) if is_not_found(&err) => Ok(()),
            Err(err) => Err(self.fail("remove", Object::Network(name), err).await),
        }
    }

    async fn ensure_volume(&self, name: &str, labels: HashMap<String, String>) -> Result<Ensured> {
        let client = self.client().await?;
        match client.inspect_volume(name).await {
            Ok(volume) => return Ok(Ensured::Existing(volume.labels)),
            Err(err) if is_not_found(&err) => {}
            Err(err) => return Err(self.fail("inspect", Object::Volume(name), err).await),
        }
        let options = VolumeCreateOptions {
            name: Some(name.to_owned()),
            labels: Some(labels),
            ..Default::default()
        };
        match client.create_volume(options).await {
            Ok(_) => Ok(Ensured::Created),
            Err(err) => Err(self.fail("create", Object::Volume(name), err).await),
        }
    }

    async fn volume_labels(&self, name: &str) -> Result<Option<HashMap<String, String>>> {
        let client = self.client().await?;
        match client.inspect_volume(name).await {
            Ok(volume) => Ok(Some(volume.labels)),
            Err(err) if is_not_found(&err) => Ok(None),
            Err(err) => Err(self.fail("inspect", Object::Volume(name), err).await),
        }
    }

    async fn remove_volume(&self, name: &str) -> Result<()> {
        let client = self.client().await?;
        let options = RemoveVolumeOptions { force: true };
        match client.remove_volume(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(err) if is_not_found(&err) => Ok(()),
            Err(err) => Err(self.fail("remove", Object::Volume(name), err).await),
        }
    }

    async fn volumes_with_label(&self, key: &str, value: &str) -> Result<Vec<String>> {
        let client = self.client().await?;
        let options = ListVolumesOptions {
            filters: Some(label_filter(key, value)),
        };
        match client.list_volumes(Some(options)).await {
            Ok(list) => Ok(list
                .volumes
                .unwrap_or_default()
                .into_iter()
                .map(|v| v.name)
                .collect()),
            Err(err) => Err(self.fail("list volumes of", Object::Engine, err).await),
        }
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String> {
        let client = self.client().await?;
        let bind = |b: &Binding| {
            let mode = if b.read_only { ":ro" } else { "" };
            format!("{}:{}{mode}", b.source, b.target)
        };
        let binds: Vec<String> = spec.volumes.iter().chain(&spec.binds).map(bind).collect();
        let mut exposed_ports = HashMap::new();
        let mut port_bindings = HashMap::new();
        for port in &spec.ports {
            let key = format!("{}/{}", port.target, port.protocol);
            exposed_ports.insert(key.clone(), HashMap::new());
            port_bindings.insert(
                key,
                Some(vec![PortBinding {
                    host_ip: Some(port.host_ip.clone()),
                    host_port: Some(port.host_port.to_string()),
                }]),
            );
        }
        let restart_policy = spec.restart.map(|policy| {
            let (name, retries) = match policy {
                RestartPolicy::No => (RestartPolicyNameEnum::NO, None),
                RestartPolicy::Always => (RestartPolicyNameEnum::ALWAYS, None),
                RestartPolicy::UnlessStopped => (RestartPolicyNameEnum::UNLESS_STOPPED, None),
                RestartPolicy::OnFailure { max_retries } => (
                    RestartPolicyNameEnum::ON_FAILURE,
                    max_retries.map(i64::from),
                ),
            };
            EngineRestart {
                name: Some(name),
                maximum_retry_count: retries,
            }
        });
        let networking_config = spec.network.as_ref().map(|network| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network.clone(),
                EndpointSettings {
                    aliases: Some(spec.aliases.clone()),
                    ..Default::default()
                },
            )])),
        });
        let healthcheck = spec.healthcheck.as_ref().map(|check| HealthConfig {
            test: Some(check.test.clone()),
            interval: Some(nanos(check.interval)),
            timeout: Some(nanos(check.timeout)),
            retries: Some(i64::from(check.retries)),
            start_period: Some(nanos(check.start_period)),
            start_interval: None,
        });
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint: spec.entrypoint.clone(),
            cmd: spec.command.clone(),
            user: spec.user.clone(),
            env: Some(spec.env.clone()),
            working_dir: spec.working_dir.clone(),
            labels: Some(spec.labels.clone()),
            exposed_ports: (!exposed_ports.is_empty()).then_some(exposed_ports),
            healthcheck,
            host_config: Some(HostConfig {
                binds: (!binds.is_empty()).then_some(binds),
                port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
                restart_policy,
                network_mode: spec.network.clone(),
                ..Default::default()
            }),
            networking_config,
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..Default::default()
        };
        match client.create_container(Some(options), body).await {
            Ok(created) => Ok(created.id),
            // 404 on create: the image is missing.
            Err(err) if is_not_found(&err) => Err(self
                .fail("create a container from", Object::Image(&spec.image), err)
                .await),
            Err(err) => Err(self
                .fail("create", Object::Container(&spec.name), err)
                .await),
        }
    }

    async fn start_container(&self, name: &str) -> Result<()> {
        let client = self.client().await?;
        match client
            .start_container(
                name,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(err) => Err(self.fail("start", Object::Container(name), err).await),
        }
    }

    async fn stop_container(&self, name: &str, grace: Duration) -> Result<()> {
        let client = self.client().await?;
        let options = StopContainerOptions {
            t: Some(i32::try_from(grace.as_secs()).unwrap_or(i32::MAX)),
            signal: None,
        };
        match client.stop_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            // 304: already stopped.
            Err(DockerError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(err) if is_not_found(&err) => Ok(()),
            Err(err) => Err(self.fail("stop", Object::Container(name), err).await),
        }
    }

    async fn remove_container(&self, name: &str) -> Result<()> {
        let client = self.client().await?;
        let options = RemoveContainerOptions {
            force: true,
            v: false,
            link: false,
        };
        match client.remove_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(err) if is_not_found(&err) => Ok(()),
            // 409: removal already in progress.
            Err(DockerError::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(err) => Err(self.fail("remove", Object::Container(name), err).await),
        }
    }

    async fn inspect_container(&self, name: &str) -> Result<Option<ContainerInfo>> {
        let client = self.client().await?;
        let inspected = match client
            .inspect_container(
                name,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
        {
            Ok(inspected) => inspected,
            Err(err) if is_not_found(&err) => return Ok(None),
            Err(err) => return Err(self.fail("inspect", Object::Container(name), err).await),
        };
        let state = inspected.state.unwrap_or_default();
        let config = inspected.config.unwrap_or_default();
        let addresses = inspected
            .network_settings
            .and_then(|settings| settings.networks)
            .into_iter()
            .flat_map(|networks| networks.into_values())
            .filter_map(|endpoint| endpoint.ip_address?.parse().ok())
            .collect();
        Ok(Some(ContainerInfo {
            id: inspected.id.unwrap_or_default(),
            name: inspected
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned(),
            image: config.image.unwrap_or_default(),
            state: state
                .status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "unknown".into()),
            health: state
                .health
                .and_then(|h| h.status)
                .map(|s| s.to_string())
                .filter(|s| !s.is_empty() && s != "none"),
            exit_code: state.exit_code,
            labels: config.labels.unwrap_or_default(),
            addresses,
        }))
    }

    async fn containers_with_label(&self, key: &str, value: &str) -> Result<Vec<ContainerInfo>> {
        let client = self.client().await?;
        let options = ListContainersOptions {
            all: true,
            filters: Some(label_filter(key, value)),
            ..Default::default()
        };
        let summaries = match client.list_containers(Some(options)).await {
            Ok(list) => list,
            Err(err) => return Err(self.fail("list containers of", Object::Engine, err).await),
        };
        // The list gives no health or exit code: inspect each (stacks are small).
        let mut containers = Vec::with_capacity(summaries.len());
        for summary in summaries {
            if let Some(id) = summary.id
                && let Some(info) = self.inspect_container(&id).await?
            {
                containers.push(info);
            }
        }
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(containers)
    }

    async fn exec(&self, name: &str, command: &[String]) -> Result<i64> {
        use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
        let client = self.client().await?;
        let options = CreateExecOptions {
            cmd: Some(command.to_vec()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let created = match client.create_exec(name, options).await {
            Ok(created) => created,
            Err(err) => {
                return Err(self
                    .fail("run a command in", Object::Container(name), err)
                    .await);
            }
        };
        let started = client
            .start_exec(
                &created.id,
                Some(StartExecOptions {
                    detach: false,
                    ..Default::default()
                }),
            )
            .await;
        match started {
            Ok(StartExecResults::Attached { mut output, .. }) => {
                // Drain the output: the exit code is known once the stream ends.
                while output.next().await.is_some() {}
            }
            Ok(StartExecResults::Detached) => {}
            Err(err) => {
                return Err(self
                    .fail("run a command in", Object::Container(name), err)
                    .await);
            }
        }
        match client.inspect_exec(&created.id).await {
            Ok(inspected) => Ok(inspected.exit_code.unwrap_or(-1)),
            Err(err) => Err(self
                .fail("run a command in", Object::Container(name), err)
                .await),
        }
    }

    async fn logs(&self, name: &str, tail: usize) -> Result<Vec<String>> {
        let client = self.client().await?;
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            tail: tail.to_string(),
            ..Default::default()
        };
        let mut stream = client.logs(name, Some(options));
        let mut text = String::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(output) => text.push_str(&output.to_string()),
                Err(err) if is_not_found(&err) => {
                    return Err(HubError::not_found(crate::Entity::Service, name));
                }
                Err(err) => {
                    return Err(self
                        .fail("read the logs of", Object::Container(name), err)
                        .await);
                }
            }
        }
        Ok(text.lines().map(str::to_owned).collect())
    }

    async fn follow_logs(
        &self,
        name: &str,
        tail: usize,
    ) -> Result<BoxStream<'static, Result<LogLine>>> {
        let client = self.client().await?;
        if self.inspect_container(name).await?.is_none() {
            return Err(HubError::not_found(crate::Entity::Service, name));
        }
        let name = name.to_owned();
        let options = LogsOptions {
            follow: true,
            stdout: true,
            stderr: true,
            tail: tail.to_string(),
            ..Default::default()
        };
        // Docker sends chunks, not lines: split them, keeping each stream's partial line for
        // its next chunk.
        let chunks = client.logs(&name, Some(options));
        Ok(futures_util::stream::unfold(
            (chunks, LineSplitter::default()),
            move |(mut chunks, mut lines)| {
                let name = name.clone();
                async move {
                    loop {
                        if let Some(line) = lines.ready.pop_front() {
                            return Some((Ok(line), (chunks, lines)));
                        }
                        match chunks.next().await {
                            Some(Ok(output)) => {
                                let stream = match output {
                                    LogOutput::StdErr { .. } => LogStream::Stderr,
                                    _ => LogStream::Stdout,
                                };
                                lines.push(stream, &output.to_string());
                            }
                            Some(Err(err)) => {
                                let err =
                                    HubError::Internal(format!("docker: logs of {name}: {err}"));
                                return Some((Err(err), (chunks, lines)));
                            }
                            None => {
                                lines.finish();
                                if lines.ready.is_empty() {
                                    return None;
                                }
                            }
                        }
                    }
                }
            },
        )
        .boxed())
    }
}

/// `image` with `:latest` when it names no tag or digest, as `docker pull` does: a bare name
/// would make the engine pull every tag of the repository.
pub(crate) fn with_default_tag(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') || image.contains('@') {
        image.to_owned()
    } else {
        format!("{image}:latest")
    }
}

#[cfg(test)]
mod default_tag_tests {
    use super::*;

    #[test]
    fn an_image_without_a_tag_means_latest() {
        assert_eq!(with_default_tag("busybox"), "busybox:latest");
        assert_eq!(with_default_tag("busybox:1.36"), "busybox:1.36");
        assert_eq!(
            with_default_tag("localhost:5000/team/app"),
            "localhost:5000/team/app:latest"
        );
        assert_eq!(
            with_default_tag("localhost:5000/app:v2"),
            "localhost:5000/app:v2"
        );
        assert_eq!(with_default_tag("app@sha256:abc"), "app@sha256:abc");
    }

    #[test]
    fn an_address_without_a_known_scheme_is_refused_at_once() {
        let err = DockerRuntime::try_new(Some("bogus://x")).unwrap_err();
        assert_eq!(err.field(), Some("docker_host"));
        assert!(DockerRuntime::try_new(Some("unix:///var/run/docker.sock")).is_ok());
        assert!(DockerRuntime::try_new(Some("tcp://127.0.0.1:2375")).is_ok());
    }
}

/// Splits a container's output chunks into lines, per stream.
#[derive(Default)]
struct LineSplitter {
    stdout: String,
    stderr: String,
    ready: std::collections::VecDeque<LogLine>,
}

impl LineSplitter {
    fn push(&mut self, stream: LogStream, chunk: &str) {
        let partial = match stream {
            LogStream::Stdout => &mut self.stdout,
            LogStream::Stderr => &mut self.stderr,
        };
        partial.push_str(chunk);
        while let Some(end) = partial.find('\n') {
            let text = partial[..end].to_owned();
            partial.drain(..=end);
            self.ready.push_back(LogLine { stream, text });
        }
    }

    /// The output ended: what is left of each stream is a last line.
    fn finish(&mut self) {
        for (stream, partial) in [
            (LogStream::Stdout, &mut self.stdout),
            (LogStream::Stderr, &mut self.stderr),
        ] {
            if !partial.is_empty() {
                let text = std::mem::take(partial);
                self.ready.push_back(LogLine { stream, text });
            }
        }
    }
}

/// A client that keeps its connections to the engine open between requests. bollard's own
/// constructors turn its pool off, so every engine call paid a connect and a close, in the hub
/// and in the engine: an empty stack's start is one call, and a queue drain of them spent a
/// visible share of both processes' CPU on it. An idle connection the engine closed (a restart)
/// is noticed and dropped by the pool before reuse; a call that fails on one drops the whole
/// client anyway (see `fail`). At most [`IDLE_CONNECTIONS`] wait idle, so a burst of calls
/// (many clients asking for stack statuses at once) does not leave as many open sockets, and
/// engine goroutines, behind.
fn pooled<C>(connector: C, address: String) -> std::result::Result<Docker, DockerError>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(IDLE_CONNECTIONS)
        .build(connector);
    Docker::connect_with_custom_transport(
        move |request: BollardRequest| {
            let client = client.clone();
            Box::pin(async move { client.request(request).await.map_err(DockerError::from) })
                as Pin<Box<dyn Future<Output = _> + Send>>
        },
        Some(address),
        REQUEST_TIMEOUT_SECS,
        API_DEFAULT_VERSION,
    )
}

/// A socket path as the host of a `unix://` URI, the way the Unix connector reads it back.
fn hex(path: &str) -> String {
    path.bytes().map(|byte| format!("{byte:02x}")).collect()
}
