//! `hub` — run and drive CommandCenter Hub from the command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use hub_core::{Hub, HubConfig};
use tracing_subscriber::EnvFilter;

/// CommandCenter Hub: many local multi-container project stacks side by side, without port clashes.
#[derive(Debug, Parser)]
#[command(name = "hub", version, about)]
struct Cli {
    /// Folder for the embedded database and other state.
    #[arg(long, env = "HUB_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,

    /// Registry database URL (default: sqlite file in the data folder).
    #[arg(long, env = "HUB_DATABASE_URL", global = true)]
    database_url: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "HUB_BIND", default_value = "127.0.0.1:9002")]
        bind: SocketAddr,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("HUB_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = match cli.data_dir {
        Some(dir) => HubConfig::with_data_dir(dir),
        None => HubConfig::default(),
    };
    config.database_url = cli.database_url;
    match cli.command {
        Command::Serve { bind } => {
            let hub = Hub::open(config).await?;
            let listener = tokio::net::TcpListener::bind(bind)
                .await
                .map_err(|err| format!("cannot listen on {bind}: {err}"))?;
            tracing::info!(address = %listener.local_addr()?, "hub serving");
            axum::serve(listener, hub_http::router(hub.clone()))
                .with_graceful_shutdown(shutdown_signal())
                .await?;
            hub.close().await;
            Ok(())
        }
    }
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
