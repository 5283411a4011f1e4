//! `hub` — run CommandCenter Hub. Every flag can also be given as an environment variable
//! (`HUB_*`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use hub_core::tasks::TaskConfig;
use hub_core::{Hub, HubConfig};
use hub_http::ServeOptions;
use tracing_subscriber::EnvFilter;
use utoipa::OpenApi;

/// CommandCenter Hub: many local multi-container project stacks side by side, without port clashes.
#[derive(Debug, Parser)]
#[command(name = "hub", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (embedded SQLite registry, in-process task workers).
    Serve(Box<ServeArgs>),
    /// Print the OpenAPI description of the HTTP API.
    Openapi,
    /// Print an example stack file (`hub.toml`): the default CommandCenter stack.
    StackTemplate,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "HUB_BIND", default_value = "127.0.0.1:9002")]
    bind: SocketAddr,

    /// Folder for the embedded database and other state [default: the platform data folder].
    #[arg(long, env = "HUB_DATA_DIR")]
    data_dir: Option<PathBuf>,

    /// Registry database URL [default: a SQLite file in the data folder].
    #[arg(long, env = "HUB_DATABASE_URL")]
    database_url: Option<String>,

    /// Docker engine address [default: DOCKER_HOST, else unix:///var/run/docker.sock].
    #[arg(long, env = "HUB_DOCKER_HOST")]
    docker_host: Option<String>,

    /// Require this bearer token on every route but /health.
    #[arg(long, env = "HUB_API_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// Allow cross-origin requests from these origins (repeat, or comma-separate). Off by default.
    #[arg(long = "cors-origin", env = "HUB_CORS_ORIGINS", value_delimiter = ',')]
    cors_origins: Vec<String>,

    /// Folders the folder browser may list (repeat, or comma-separate) [default: your home].
    #[arg(long = "browse-root", env = "HUB_BROWSE_ROOT", value_delimiter = ',')]
    browse_roots: Vec<PathBuf>,

    /// Background tasks run at once.
    #[arg(long, env = "HUB_CONCURRENCY", default_value_t = 2)]
    concurrency: u32,

    /// Seconds finished task records are kept (0 = forever).
    #[arg(long, env = "HUB_RESULT_EXPIRES", default_value_t = 3600)]
    result_expires: u64,

    /// Seconds running tasks get to finish when the hub shuts down.
    #[arg(long, env = "HUB_SHUTDOWN_GRACE", default_value_t = 30)]
    shutdown_grace: u64,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "HUB_BODY_LIMIT", default_value_t = 1024 * 1024)]
    body_limit: usize,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("HUB_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::StackTemplate => {
            use std::io::Write;
            let _ = write!(std::io::stdout(), "{}", hub_core::stack::DEFAULT_STACK_TOML);
            Ok(())
        }
        Command::Serve(args) => serve(*args).await,
        Command::Openapi => hub_http::openapi::ApiDoc::openapi()
            .to_pretty_json()
            .map(|json| {
                use std::io::Write;
                let _ = writeln!(std::io::stdout(), "{json}");
            })
            .map_err(Into::into),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let config = HubConfig {
        data_dir: args
            .data_dir
            .unwrap_or_else(hub_core::config::default_data_dir),
        database_url: args.database_url,
        docker_host: args.docker_host,
        tasks: TaskConfig {
            concurrency: args.concurrency,
            result_expires: Duration::from_secs(args.result_expires),
            shutdown_grace: Duration::from_secs(args.shutdown_grace),
            ..TaskConfig::default()
        },
        ..HubConfig::default()
    };
    let hub = Hub::open(config).await?;
    let options = ServeOptions {
        token: args.token,
        cors_origins: args.cors_origins,
        browse_roots: args.browse_roots,
        body_limit: Some(args.body_limit),
    };
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|err| format!("cannot listen on {}: {err}", args.bind))?;
    tracing::info!(address = %listener.local_addr()?, "hub serving");
    axum::serve(listener, hub_http::router_with(hub.clone(), &options))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    // Running tasks get the configured grace period; the rest are marked interrupted.
    hub.close().await;
    tracing::info!("hub stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
