//! `hub` — run CommandCenter Hub. Every flag can also be given as an environment variable
//! (`HUB_*`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use hub_core::monitor::{AlertThresholds, MonitorConfig};
use hub_core::tasks::{BackendKind, TaskConfig};
use hub_core::{Hub, HubConfig, HubMode};
use hub_http::ServeOptions;
use tracing_subscriber::EnvFilter;
use utoipa::OpenApi;

mod cli;

/// mimalloc rather than glibc malloc: under load its locking took a fifth of a worker's time.
/// It serves C code too (feature `override`), so SQLite's threads do not keep arenas of their own.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// CommandCenter Hub: many local multi-container project stacks side by side, without port clashes.
#[derive(Debug, Parser)]
#[command(
    name = "hub",
    version,
    about = "Run many local multi-container project stacks side by side, without port clashes.",
    long_about = "Run many local multi-container project stacks side by side, without port \
        clashes.\n\nThe hub keeps a registry of projects (a folder plus a stack of services), \
        gives each its own set of host ports, and starts, stops and restarts its containers on \
        the Docker engine as background tasks you can follow.\n\nStart with `hub serve` and \
        open http://127.0.0.1:9002/; `hub <command> --help` tells more. Every flag can also be \
        set with its HUB_* environment variable.",
    after_long_help = "Exit codes of the client commands (ls, add, start, …): 0 done; 1 the \
        operation failed (a task ended in FAILURE, the hub refused the request); 2 usage; 3 no \
        hub answers at --url; 4 no such project, service or task; 130 interrupted."
)]
struct Cli {
    #[command(flatten)]
    address: cli::HubAddress,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API and run tasks (embedded SQLite registry, in-process task workers).
    Serve(Box<ServeArgs>),
    /// Run tasks from the shared store, serving nothing (beside `hub serve --no-worker`, or
    /// more workers beside `hub serve`).
    Worker(Box<WorkerArgs>),
    /// Print the OpenAPI description of the HTTP API.
    Openapi,
    /// Print an example stack file (`hub.toml`): the default CommandCenter stack.
    StackTemplate,
    /// Print shell completions: `hub completions bash > /etc/bash_completion.d/hub`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    #[command(flatten)]
    Client(cli::ClientCommand),
}

/// Where the hub keeps its state, and how it runs tasks: shared by `serve` and `worker`.
#[derive(Debug, Args)]
struct StoreArgs {
    /// Folder for the embedded database and other state [default: the platform data folder].
    #[arg(long, env = "HUB_DATA_DIR")]
    data_dir: Option<PathBuf>,

    /// Registry database URL: `sqlite://PATH`, or `postgres://USER:PASSWORD@HOST:PORT/DB` for
    /// one registry shared by several hosts [default: a SQLite file in the data folder].
    #[arg(long, env = "HUB_DATABASE_URL")]
    database_url: Option<String>,

    /// Docker engine address [default: DOCKER_HOST, else unix:///var/run/docker.sock].
    #[arg(long, env = "HUB_DOCKER_HOST")]
    docker_host: Option<String>,

    /// Background tasks this process runs at once.
    #[arg(long, env = "HUB_CONCURRENCY", default_value_t = 2)]
    concurrency: u32,

    /// Seconds finished task records are kept (0 = forever).
    #[arg(long, env = "HUB_RESULT_EXPIRES", default_value_t = 3600)]
    result_expires: u64,

    /// Seconds running tasks get to finish when this process shuts down.
    #[arg(long, env = "HUB_SHUTDOWN_GRACE", default_value_t = 30)]
    shutdown_grace: u64,

    /// Seconds a worker holds a task without renewing it: a process that stops (killed,
    /// paused) loses its tasks this long after its last heartbeat.
    #[arg(long, env = "HUB_TASK_LEASE", default_value_t = 30.0)]
    task_lease: f64,

    /// Seconds between two heartbeats (lease renewals); must be shorter than the lease.
    #[arg(long, env = "HUB_TASK_HEARTBEAT", default_value_t = 10.0)]
    task_heartbeat: f64,

    /// The name this process registers under as a worker [default: serve, or worker].
    #[arg(long = "worker-name", env = "HUB_WORKER_NAME")]
    worker_name: Option<String>,

    /// Where tasks are queued: `in_process` (the hub's database, workers in the processes that
    /// open it) or `redis://host:port/db` (workers in any process on any host) [default:
    /// in_process].
    #[arg(
        long,
        env = "HUB_TASK_BACKEND",
        value_name = "in_process|redis://HOST:PORT/DB"
    )]
    task_backend: Option<String>,

    /// What every Redis key starts with, so several hubs can share one Redis [default: hub:].
    #[arg(long, env = "HUB_TASK_PREFIX")]
    task_prefix: Option<String>,

    /// Queues this process takes tasks from, comma-separated [default: every queue].
    #[arg(long, env = "HUB_QUEUES", value_delimiter = ',')]
    queues: Vec<String>,

    /// Runs a task gets when its worker is lost mid-run, for kinds safe to repeat; past that it
    /// ends FAILURE / worker_lost.
    #[arg(long, env = "HUB_MAX_ATTEMPTS", default_value_t = 3)]
    max_attempts: u32,

    #[command(flatten)]
    monitor: MonitorArgs,
}

/// Monitoring: how long offline workers stay listed, and the alert thresholds. Durations are
/// seconds or a number with s, m, h or d (`90`, `15m`).
#[derive(Debug, Args)]
struct MonitorArgs {
    /// How long an offline worker stays in the workers view after its last heartbeat.
    #[arg(long, env = "HUB_WORKER_EXPIRY", default_value = "1h", value_parser = duration)]
    worker_expiry: Duration,

    /// Share of finished tasks failing (0–1) above which the failure-rate alert fires.
    #[arg(long, env = "HUB_ALERT_FAILURE_RATE", default_value_t = 0.10)]
    alert_failure_rate: f64,

    /// The window of the failure-rate alert.
    #[arg(long, env = "HUB_ALERT_FAILURE_WINDOW", default_value = "15m", value_parser = duration)]
    alert_failure_window: Duration,

    /// Tasks waiting in one queue above which the queue-depth alert fires.
    #[arg(long, env = "HUB_ALERT_QUEUE_DEPTH", default_value_t = 10)]
    alert_queue_depth: u64,

    /// A running task with no change for this long is possibly stuck.
    #[arg(long, env = "HUB_ALERT_STALLED_AFTER", default_value = "5m", value_parser = duration)]
    alert_stalled_after: Duration,

    /// A running task is possibly stuck past this (unless its kind has its own).
    #[arg(long, env = "HUB_ALERT_EXPECTED_RUNTIME", default_value = "10m", value_parser = duration)]
    alert_expected_runtime: Duration,

    /// A job kind's own expected runtime, `KIND=DURATION` (repeat, or comma-separate).
    #[arg(
        long = "alert-expected-runtime-for",
        env = "HUB_ALERT_EXPECTED_RUNTIME_FOR",
        value_name = "KIND=DURATION",
        value_delimiter = ','
    )]
    alert_expected_runtime_for: Vec<String>,
}

impl MonitorArgs {
    fn config(self) -> Result<MonitorConfig, Box<dyn std::error::Error>> {
        let config = MonitorConfig {
            worker_expiry: self.worker_expiry,
            alerts: AlertThresholds {
                failure_rate: self.alert_failure_rate,
                failure_window: self.alert_failure_window,
                queue_depth: self.alert_queue_depth,
                stalled_after: self.alert_stalled_after,
                expected_runtime: self.alert_expected_runtime,
                expected_runtime_by_kind: hub_core::monitor::parse_kind_durations(
                    "alert-expected-runtime-for",
                    &self.alert_expected_runtime_for,
                )?,
            },
        };
        config.validate()?;
        Ok(config)
    }
}

/// A duration flag: seconds, or a number with s, m, h or d.
fn duration(text: &str) -> Result<Duration, String> {
    hub_core::monitor::parse_duration("duration", text).map_err(|err| err.to_string())
}

impl StoreArgs {
    fn config(self, mode: HubMode) -> Result<HubConfig, Box<dyn std::error::Error>> {
        let seconds = |flag: &str, value: f64| {
            Duration::try_from_secs_f64(value).map_err(|err| format!("--{flag} {value}: {err}"))
        };
        let default_name = match mode {
            HubMode::Worker => "worker",
            _ => "serve",
        };
        let config = HubConfig {
            data_dir: self
                .data_dir
                .unwrap_or_else(hub_core::config::default_data_dir),
            database_url: self.database_url,
            docker_host: self.docker_host,
            mode,
            tasks: TaskConfig {
                concurrency: self.concurrency,
                result_expires: Duration::from_secs(self.result_expires),
                shutdown_grace: Duration::from_secs(self.shutdown_grace),
                lease: seconds("task-lease", self.task_lease)?,
                heartbeat: seconds("task-heartbeat", self.task_heartbeat)?,
                worker_name: Some(self.worker_name.unwrap_or_else(|| default_name.into())),
                backend: BackendKind::from_spec(
                    self.task_backend.as_deref(),
                    self.task_prefix.as_deref(),
                )?,
                queues: self.queues,
                max_attempts: self.max_attempts,
                ..TaskConfig::default()
            },
            monitor: self.monitor.config()?,
            ..HubConfig::default()
        };
        config.tasks.validate()?;
        Ok(config)
    }
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "HUB_BIND", default_value = "127.0.0.1:9002")]
    bind: SocketAddr,

    #[command(flatten)]
    store: StoreArgs,

    /// Run no tasks here: only submit and serve them (`hub worker` processes on the same
    /// store run them).
    #[arg(long, env = "HUB_NO_WORKER", conflicts_with = "with_worker")]
    no_worker: bool,

    /// Run tasks in this process too, with a Redis task backend (where `hub serve` only
    /// submits by default, leaving tasks to `hub worker`s).
    #[arg(long, env = "HUB_WITH_WORKER")]
    with_worker: bool,

    /// Allow cross-origin requests from these origins (repeat, or comma-separate). Off by default.
    #[arg(long = "cors-origin", env = "HUB_CORS_ORIGINS", value_delimiter = ',')]
    cors_origins: Vec<String>,

    /// Folders the folder browser may list (repeat, or comma-separate) [default: your home].
    #[arg(long = "browse-root", env = "HUB_BROWSE_ROOT", value_delimiter = ',')]
    browse_roots: Vec<PathBuf>,

    /// Folders project folders must lie inside (repeat, or comma-separate) [default: the browse
    /// roots]. Containers may bind-mount what is inside a project folder; `/` allows any.
    #[arg(long = "project-root", env = "HUB_PROJECT_ROOT", value_delimiter = ',')]
    project_roots: Vec<PathBuf>,

    /// Seconds a client has to send a request's headers (also how long an idle keep-alive
    /// connection waits for its next request).
    #[arg(long, env = "HUB_HEADER_TIMEOUT", default_value_t = 10.0)]
    header_timeout: f64,

    /// Seconds a connection may move no byte, mid-request too, before it is closed.
    #[arg(long, env = "HUB_IDLE_TIMEOUT", default_value_t = 60.0)]
    idle_timeout: f64,

    /// Open connections at most; above it, new ones get an immediate 503.
    #[arg(long, env = "HUB_MAX_CONNECTIONS", default_value_t = 1024)]
    max_connections: usize,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "HUB_BODY_LIMIT", default_value_t = 1024 * 1024)]
    body_limit: usize,

    /// Serve `/metrics` without the token (for a Prometheus scraper on a trusted network).
    #[arg(long, env = "HUB_METRICS_PUBLIC")]
    metrics_public: bool,
}

#[derive(Debug, Args)]
struct WorkerArgs {
    #[command(flatten)]
    store: StoreArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    use std::io::Write;
    let Cli { address, command } = Cli::parse();
    let logs = matches!(command, Command::Serve(_) | Command::Worker(_));
    if logs {
        init_logging();
    }
    let result = match command {
        // The client commands print for people, not logs: one line per error, and an exit
        // code that says what went wrong.
        Command::Client(command) => {
            return std::process::ExitCode::from(cli::run(&address, command).await as u8);
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "hub", &mut std::io::stdout());
            Ok(())
        }
        Command::StackTemplate => {
            let _ = write!(std::io::stdout(), "{}", hub_core::stack::DEFAULT_STACK_TOML);
            Ok(())
        }
        Command::Openapi => hub_http::openapi::ApiDoc::openapi()
            .to_pretty_json()
            .map(|json| {
                let _ = writeln!(std::io::stdout(), "{json}");
            })
            .map_err(Into::into),
        Command::Serve(args) => serve(*args, address.token).await,
        Command::Worker(args) => worker(*args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            if logs {
                tracing::error!("{err}");
            } else {
                let _ = writeln!(std::io::stderr(), "hub: {err}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, coloured only on a terminal. Every field value is written with its control
/// characters escaped (`\n` as `\\n`, ESC as `\\u{1b}`), so input that reaches a log line
/// (a path, a name) cannot forge another line or drive the terminal.
fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::field::MakeExt;
    let fields = tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let raw = format!("{value:?}");
        let text = escape_controls(&raw);
        if field.name() == "message" {
            write!(writer, "{text}")
        } else {
            write!(writer, "{field}={text}")
        }
    })
    .delimited(" ");
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("HUB_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .fmt_fields(fields)
        .with_writer(std::io::stderr)
        .init();
}

/// `text` with every control character written as an escape.
fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for ch in text.chars() {
        match ch {
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            ch if ch.is_control() => escaped.extend(ch.escape_unicode()),
            ch => escaped.push(ch),
        }
    }
    escaped.into()
}

async fn serve(args: ServeArgs, token: Option<String>) -> Result<(), Box<dyn std::error::Error>> {
    let shutdown = ShutdownSignal::listen()?;
    let seconds = |flag: &str, value: f64| {
        Duration::try_from_secs_f64(value)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("--{flag} {value}: must be a positive number of seconds"))
    };
    if args.max_connections == 0 {
        return Err("--max-connections 0: at least one connection must be allowed".into());
    }
    let limits = hub_http::server::Limits {
        header_timeout: seconds("header-timeout", args.header_timeout)?,
        idle_timeout: seconds("idle-timeout", args.idle_timeout)?,
        max_connections: args.max_connections,
    };
    // A mistyped browse root is an error naming it, not a silent fall-back to home.
    hub_core::browse::FolderBrowser::try_new(&args.browse_roots)?;
    let mut config = args.store.config(HubMode::Embedded)?;
    // In-process tasks run here unless told otherwise; Redis tasks run in `hub worker`s unless
    // told otherwise.
    let runs_here = match config.tasks.backend {
        BackendKind::InProcess => !args.no_worker,
        _ => args.with_worker,
    };
    if !runs_here {
        config.mode = HubMode::Client;
    }
    // Served to others: confined to the project roots, else the browse roots, else home.
    config.project_roots = if !args.project_roots.is_empty() {
        args.project_roots
    } else if !args.browse_roots.is_empty() {
        args.browse_roots.clone()
    } else {
        hub_core::browse::default_roots()
    };
    let hub = Hub::open(config).await?;
    let options = ServeOptions {
        token,
        cors_origins: args.cors_origins,
        browse_roots: args.browse_roots,
        body_limit: Some(args.body_limit),
        metrics_public: args.metrics_public,
    };
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|err| format!("cannot listen on {}: {err}", args.bind))?;
    tracing::info!(address = %listener.local_addr()?, "hub serving");
    hub_http::server::serve(
        listener,
        hub_http::router_with(hub.clone(), &options),
        limits,
        shutdown.received(),
    )
    .await?;
    // Running tasks get the configured grace period; the rest are marked interrupted.
    hub.close().await;
    tracing::info!("hub stopped");
    Ok(())
}

async fn worker(args: WorkerArgs) -> Result<(), Box<dyn std::error::Error>> {
    let shutdown = ShutdownSignal::listen()?;
    let hub = Hub::open(args.store.config(HubMode::Worker)?).await?;
    let tasks = &hub.config().tasks;
    tracing::info!(
        concurrency = tasks.concurrency,
        backend = hub.task_backend().name(),
        queues = %if tasks.queues.is_empty() { "every queue".to_owned() } else { tasks.queues.join(",") },
        "worker running tasks"
    );
    shutdown.received().await;
    // Running tasks get the grace period; reserved, unstarted ones go back to the queue.
    hub.close().await;
    tracing::info!("worker stopped");
    Ok(())
}

/// SIGTERM and SIGINT, listened for from a command's first step. A hub's workers run tasks
/// before it has finished opening (its first health round can take seconds): a signal that
/// comes meanwhile is kept, and the command stops cleanly once open, where listening only
/// afterwards left the signal's default action to kill the process mid-task.
struct ShutdownSignal {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    /// Starts listening (inside the runtime).
    fn listen() -> Result<Self, String> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listen = |kind: SignalKind, name: &str| {
                signal(kind).map_err(|err| format!("cannot listen for {name}: {err}"))
            };
            Ok(ShutdownSignal {
                terminate: listen(SignalKind::terminate(), "SIGTERM")?,
                interrupt: listen(SignalKind::interrupt(), "SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        Ok(ShutdownSignal {})
    }

    /// Waits for the first signal (at once if one came already).
    async fn received(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.terminate.recv() => {},
            _ = self.interrupt.recv() => {},
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutting down");
    }
}
