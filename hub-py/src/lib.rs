//! Python bindings of CommandCenter Hub: the compiled half of the `commandcenter_hub` package.
//!
//! This crate only translates. Python calls one dispatcher, `NativeHub.call(method, args)` (or
//! `call_async` for asyncio), with JSON in and out; the pure-Python package around it gives the
//! calls their typed signatures. Blocking calls release the interpreter while Rust works, on one
//! shared tokio runtime; errors become exceptions chosen by [`ErrorCode`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hub_core::browse::FolderBrowser;
use hub_core::orchestration::DEFAULT_LOG_LINES;
use hub_core::tasks::{
    BackendKind, DEFAULT_LIST_LIMIT, TaskConfig, TaskId, TaskQuery, TaskRecord, TaskSort,
    TaskState, TaskStatus, TaskWatch,
};
use hub_core::{
    ErrorCode, Hub, HubConfig, HubError, HubMode, NewProject, PortConfig, PortRequest, PortSet,
    ProjectUpdate,
};
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use serde_json::Value;
use tokio::sync::Mutex;

pyo3::create_exception!(
    _native,
    HubBaseError,
    PyException,
    "Base of every hub error; `.code` says which."
);
pyo3::create_exception!(
    _native,
    NotFoundError,
    HubBaseError,
    "A project, task, service or path does not exist."
);
pyo3::create_exception!(
    _native,
    AlreadyExistsError,
    HubBaseError,
    "A project with this name, slug or path exists."
);
pyo3::create_exception!(
    _native,
    InvalidInputError,
    HubBaseError,
    "Input was rejected; `.field` names it."
);
pyo3::create_exception!(
    _native,
    PortConflictError,
    HubBaseError,
    "A port is held by another project, or busy on the host."
);
pyo3::create_exception!(
    _native,
    ConflictError,
    HubBaseError,
    "Another operation on the project is running."
);
pyo3::create_exception!(
    _native,
    ForbiddenError,
    HubBaseError,
    "Not allowed (e.g. a folder outside the browse roots)."
);
pyo3::create_exception!(
    _native,
    RuntimeUnavailableError,
    HubBaseError,
    "The Docker engine cannot be reached."
);
pyo3::create_exception!(
    _native,
    BackendUnavailableError,
    HubBaseError,
    "The task backend cannot be reached."
);
pyo3::create_exception!(
    _native,
    TaskFailedError,
    HubBaseError,
    "A task ended in FAILURE."
);

/// The runtime every call runs on (shared with the asyncio surface).
fn runtime() -> &'static tokio::runtime::Runtime {
    pyo3_async_runtimes::tokio::get_runtime()
}

/// A [`HubError`] as the matching Python exception, with `.code` and `.field` set.
fn to_py_err(err: HubError) -> PyErr {
    let message = err.to_string();
    let code = err.code();
    let py_err = match code {
        ErrorCode::NotFound => NotFoundError::new_err(message),
        ErrorCode::AlreadyExists => AlreadyExistsError::new_err(message),
        ErrorCode::InvalidInput => InvalidInputError::new_err(message),
        ErrorCode::PortConflict | ErrorCode::PortUnavailable => PortConflictError::new_err(message),
        ErrorCode::Conflict => ConflictError::new_err(message),
        ErrorCode::Forbidden => ForbiddenError::new_err(message),
        ErrorCode::RuntimeUnavailable => RuntimeUnavailableError::new_err(message),
        ErrorCode::BackendUnavailable => BackendUnavailableError::new_err(message),
        _ => HubBaseError::new_err(message),
    };
    Python::attach(|py| {
        let value = py_err.value(py);
        let _ = value.setattr("code", code.as_str());
        let _ = value.setattr("field", err.field());
    });
    py_err
}

/// Reads typed arguments out of the JSON object Python sent, naming the field on failure.
struct Args(Value);

impl Args {
    fn opt<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, HubError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => serde_json::from_value(value.clone())
                .map(Some)
                .map_err(|err| HubError::invalid(key, err.to_string())),
        }
    }

    fn req<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<T, HubError> {
        self.opt(key)?
            .ok_or_else(|| HubError::invalid(key, "is required"))
    }

    /// A project given as id (int) or slug (str).
    fn project(&self) -> Result<hub_core::ProjectKey, HubError> {
        match self.0.get("key") {
            Some(Value::Number(n)) => n
                .as_i64()
                .map(hub_core::ProjectKey::Id)
                .ok_or_else(|| HubError::invalid("id", "not an integer")),
            Some(Value::String(s)) => Ok(hub_core::ProjectKey::from(s.as_str())),
            _ => Err(HubError::invalid(
                "id",
                "give a project id (int) or slug (str)",
            )),
        }
    }

    /// Task states given as a list of names (any case).
    fn states(&self) -> Result<Vec<TaskState>, HubError> {
        self.opt::<Vec<String>>("states")?
            .unwrap_or_default()
            .iter()
            .map(|s| s.parse::<TaskState>())
            .collect()
    }

    fn task(&self) -> Result<TaskId, HubError> {
        let raw: String = self.req("task_id")?;
        raw.parse()
            .map_err(|_| HubError::not_found(hub_core::Entity::Task, raw))
    }
}

/// A task as Python sees it: the HTTP status shape.
/// A task in the core's status view, the shape HTTP serves too.
fn task_json(task: &TaskRecord) -> Value {
    serde_json::to_value(TaskStatus::from(task)).unwrap_or(Value::Null)
}

fn to_value<T: serde::Serialize>(value: T) -> Result<Value, HubError> {
    serde_json::to_value(value).map_err(|err| HubError::Internal(err.to_string()))
}

/// Every operation Python can ask for, by name.
async fn dispatch(hub: &Hub, method: &str, args: Args) -> Result<Value, HubError> {
    match method {
        "create_project" => {
            let new = NewProject {
                name: args.req("name")?,
                path: PathBuf::from(args.req::<String>("path")?),
                ports: args.opt::<PortRequest>("ports")?.unwrap_or_default(),
                host: args.opt("host")?,
            };
            to_value(hub.create_project(new).await?)
        }
        "get_project" => to_value(hub.project(args.project()?).await?),
        "list_projects" => to_value(hub.projects().await?),
        "update_project" => {
            let update = ProjectUpdate {
                name: args.opt("name")?,
                path: args.opt::<String>("path")?.map(PathBuf::from),
                ports: args.opt::<PortRequest>("ports")?.unwrap_or_default(),
                host: args.opt("host")?,
            };
            to_value(hub.update_project(args.project()?, update).await?)
        }
        "delete_project" => {
            let delete_data = args.opt("delete_data")?.unwrap_or(false);
            to_value(hub.delete_project(args.project()?, delete_data).await?)
        }
        "stats" => to_value(hub.stats().await?),
        "start_project" => to_value(hub.start_project(args.project()?).await?),
        "stop_project" => to_value(hub.stop_project(args.project()?).await?),
        "restart_project" => to_value(hub.restart_project(args.project()?).await?),
        "restart_service" => {
            let service: String = args.req("service")?;
            to_value(hub.restart_service(args.project()?, &service).await?)
        }
        "task" => Ok(task_json(&hub.task(args.task()?).await?)),
        "tasks" => {
            let states = args.states()?;
            let query = TaskQuery {
                states,
                kind: args.opt("kind")?,
                project_id: args.opt("project_id")?,
                limit: args.opt("limit")?.unwrap_or(DEFAULT_LIST_LIMIT),
                offset: args.opt("offset")?.unwrap_or(0),
                ..TaskQuery::default()
            };
            let tasks = hub.tasks(&query).await?;
            Ok(Value::Array(tasks.iter().map(task_json).collect()))
        }
        "revoke" => {
            let terminate = args.opt("terminate")?.unwrap_or(false);
            Ok(task_json(&hub.revoke(args.task()?, terminate).await?))
        }
        "project_status" => to_value(hub.project_status(args.project()?).await?),
        "effective_stack" => to_value(hub.effective_stack(args.project()?).await?),
        "logs" => {
            let service: String = args.req("service")?;
            let lines = args.opt("lines")?.unwrap_or(DEFAULT_LOG_LINES);
            to_value(hub.logs(args.project()?, &service, lines).await?)
        }
        "check_ports" => to_value(hub.check_ports(args.project()?).await?),
        "reconcile" => to_value(hub.reconcile().await?),
        "monitoring" => to_value(hub.task_stats().await?),
        "monitor_workers" => to_value(hub.monitor_workers().await?),
        "monitor_queues" => to_value(hub.monitor_queues().await?),
        "monitor_tasks" => {
            let states = args.states()?;
            let project_id = match args.0.get("key") {
                None | Some(Value::Null) => None,
                Some(_) => Some(hub.project(args.project()?).await?.id),
            };
            let query = TaskQuery {
                states,
                kind: args.opt("kind")?,
                project_id,
                worker: args.opt("worker")?,
                search: args.opt("search")?,
                sort: match args.opt::<String>("sort")? {
                    Some(sort) => sort.parse()?,
                    None => TaskSort::Received,
                },
                ascending: args.opt("ascending")?.unwrap_or(false),
                limit: args.opt("limit")?.unwrap_or(DEFAULT_LIST_LIMIT),
                offset: args.opt("offset")?.unwrap_or(0),
                ..TaskQuery::default()
            };
            to_value(hub.monitor_tasks(&query).await?)
        }
        "monitor_task" => to_value(hub.monitor_task(args.task()?).await?),
        "monitor_stats" => {
            let window = hub_core::monitor::window(args.opt::<String>("window")?.as_deref())?;
            to_value(hub.monitor_stats(window).await?)
        }
        "monitor_alerts" => to_value(hub.monitor_alerts().await?),
        "browse" => {
            let roots: Vec<PathBuf> = args.opt("roots")?.unwrap_or_default();
            let path: Option<String> = args.opt("path")?;
            to_value(FolderBrowser::new(&roots).list_async(path).await?)
        }
        other => Err(HubError::invalid(
            "method",
            format!("unknown hub method '{other}'"),
        )),
    }
}

fn parse_args(args_json: &str) -> PyResult<Args> {
    serde_json::from_str(args_json)
        .map(Args)
        .map_err(|err| to_py_err(HubError::invalid("args", err.to_string())))
}

/// The hub configuration Python passes as JSON.
fn config_from(args: &Args) -> Result<HubConfig, HubError> {
    let mut config = match args.opt::<String>("data_dir")? {
        Some(dir) => HubConfig::with_data_dir(dir),
        None => HubConfig::default(),
    };
    config.database_url = args.opt("database_url")?;
    config.docker_host = args.opt("docker_host")?;
    config.tasks = TaskConfig {
        backend: BackendKind::from_spec(
            args.opt::<String>("task_backend")?.as_deref(),
            args.opt::<String>("task_prefix")?.as_deref(),
        )?,
        concurrency: args.opt("concurrency")?.unwrap_or(2),
        worker_name: Some(args.opt("worker_name")?.unwrap_or_else(|| "python".into())),
        queues: args.opt("queues")?.unwrap_or_default(),
        ..TaskConfig::default()
    };
    config.tasks.validate()?;
    // Beside a server on the same store, a client submits and reads; the server runs.
    if !args.opt::<bool>("run_tasks")?.unwrap_or(true) {
        config.mode = HubMode::Client;
    }
    if let Some(roots) = args.opt::<Vec<PathBuf>>("project_roots")? {
        config.project_roots = roots;
    }
    if let Some(secs) = args.opt::<f64>("result_expires")? {
        config.tasks.result_expires = Duration::try_from_secs_f64(secs)
            .map_err(|err| HubError::invalid("result_expires", err.to_string()))?;
    }
    if let Some(bases) = args.opt::<PortSet>("port_bases")? {
        config.ports = PortConfig {
            bases,
            ..config.ports
        };
    }
    if let Some(stride) = args.opt::<u16>("port_stride")? {
        config.ports.stride = stride;
    }
    Ok(config)
}

/// The hub, as the Python package holds it.
#[pyclass(frozen, module = "commandcenter_hub._native")]
struct NativeHub {
    hub: Hub,
}

#[pymethods]
impl NativeHub {
    /// Opens a hub from a JSON configuration.
    #[new]
    fn new(py: Python<'_>, config_json: &str) -> PyResult<Self> {
        let args = parse_args(config_json)?;
        let config = config_from(&args).map_err(to_py_err)?;
        let hub = py
            .detach(|| runtime().block_on(Hub::open(config)))
            .map_err(to_py_err)?;
        Ok(NativeHub { hub })
    }

    /// Runs `method` with JSON `args`, blocking (without the interpreter lock); returns JSON.
    fn call(&self, py: Python<'_>, method: &str, args_json: &str) -> PyResult<String> {
        let args = parse_args(args_json)?;
        let hub = self.hub.clone();
        let method = method.to_owned();
        let value = py
            .detach(|| runtime().block_on(async move { dispatch(&hub, &method, args).await }))
            .map_err(to_py_err)?;
        Ok(value.to_string())
    }

    /// Like `call`, as an awaitable for asyncio.
    fn call_async<'py>(
        &self,
        py: Python<'py>,
        method: &str,
        args_json: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let args = parse_args(args_json)?;
        let hub = self.hub.clone();
        let method = method.to_owned();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let value = dispatch(&hub, &method, args).await.map_err(to_py_err)?;
            Ok(value.to_string())
        })
    }

    /// Follows one task's changes.
    fn watch(&self, py: Python<'_>, task_id: &str) -> PyResult<NativeWatch> {
        let id: TaskId = task_id
            .parse()
            .map_err(|_| to_py_err(HubError::not_found(hub_core::Entity::Task, task_id)))?;
        let hub = self.hub.clone();
        let watch = py
            .detach(|| runtime().block_on(async move { hub.watch(id, None).await }))
            .map_err(to_py_err)?;
        Ok(NativeWatch {
            watch: Arc::new(Mutex::new(watch)),
        })
    }

    /// Stops the task workers (running tasks get their grace period) and closes the database.
    fn close(&self, py: Python<'_>) {
        let hub = self.hub.clone();
        py.detach(|| runtime().block_on(async move { hub.close().await }));
    }

    /// Like `close`, as an awaitable.
    fn close_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let hub = self.hub.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            hub.close().await;
            Ok(())
        })
    }
}

/// One task's changes (the core's [`TaskWatch`]): its current state first, then each change.
#[pyclass(frozen, module = "commandcenter_hub._native")]
struct NativeWatch {
    watch: Arc<Mutex<TaskWatch>>,
}

/// What one wait on a watch gave.
enum Step {
    /// The next change, as JSON.
    Change(String),
    /// The wait passed first.
    Waiting,
    /// The terminal state was given already: there is nothing more.
    Ended,
}

async fn next_change(watch: Arc<Mutex<TaskWatch>>, wait: Duration) -> Step {
    let mut watch = watch.lock().await;
    match tokio::time::timeout(wait, watch.next()).await {
        Ok(Some(item)) => Step::Change(task_json(&item.task).to_string()),
        Ok(None) => Step::Ended,
        Err(_) => Step::Waiting,
    }
}

#[pymethods]
impl NativeWatch {
    /// The next change within `timeout` seconds (forever when `None`), else `None` (also once
    /// the terminal state was given). Ctrl-C is honoured while waiting.
    #[pyo3(signature = (timeout=None))]
    fn next(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<String>> {
        // NaN, infinity and spans past what the clock can add mean: no limit.
        let deadline = timeout
            .and_then(|t| Duration::try_from_secs_f64(t.max(0.0)).ok())
            .and_then(|t| std::time::Instant::now().checked_add(t));
        loop {
            // Short slices, so signals are checked between them.
            let slice = match deadline {
                Some(d) => d
                    .saturating_duration_since(std::time::Instant::now())
                    .min(Duration::from_millis(100)),
                None => Duration::from_millis(100),
            };
            let watch = self.watch.clone();
            match py.detach(|| runtime().block_on(next_change(watch, slice))) {
                Step::Change(change) => return Ok(Some(change)),
                Step::Ended => return Ok(None),
                Step::Waiting => {}
            }
            py.check_signals()?;
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Ok(None);
            }
        }
    }

    /// Like `next`, as an awaitable.
    #[pyo3(signature = (timeout=None))]
    fn next_async<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        // Waits longer than a year are no limit (tokio's timer cannot count further).
        let wait = timeout
            .and_then(|t| Duration::try_from_secs_f64(t.max(0.0)).ok())
            .unwrap_or(Duration::MAX)
            .min(Duration::from_secs(365 * 24 * 3600));
        let watch = self.watch.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            Ok(match next_change(watch, wait).await {
                Step::Change(change) => Some(change),
                Step::Waiting | Step::Ended => None,
            })
        })
    }
}

/// The slug the hub derives from a project name (`"My App"` → `"my-app"`).
#[pyfunction]
fn slugify(name: &str) -> String {
    hub_core::slugify(name)
}

/// The compiled module `commandcenter_hub._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(slugify, m)?)?;
    m.add_class::<NativeHub>()?;
    m.add_class::<NativeWatch>()?;
    m.add("HubError", py.get_type::<HubBaseError>())?;
    m.add("NotFoundError", py.get_type::<NotFoundError>())?;
    m.add("AlreadyExistsError", py.get_type::<AlreadyExistsError>())?;
    m.add("InvalidInputError", py.get_type::<InvalidInputError>())?;
    m.add("PortConflictError", py.get_type::<PortConflictError>())?;
    m.add("ConflictError", py.get_type::<ConflictError>())?;
    m.add("ForbiddenError", py.get_type::<ForbiddenError>())?;
    m.add(
        "RuntimeUnavailableError",
        py.get_type::<RuntimeUnavailableError>(),
    )?;
    m.add(
        "BackendUnavailableError",
        py.get_type::<BackendUnavailableError>(),
    )?;
    m.add("TaskFailedError", py.get_type::<TaskFailedError>())?;
    Ok(())
}
