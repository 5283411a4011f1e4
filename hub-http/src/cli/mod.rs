//! The `hub` client commands — `ls`, `add`, `start`, `status`, `logs`, … — which talk to a
//! running hub over HTTP, as the Docker CLI talks to its daemon. They hold no rule of their
//! own: names, ports and errors are the hub's, printed for a terminal.

mod client;
mod commands;
mod follow;

use clap::{Args, Subcommand};

pub(crate) use client::Client;

/// Exit codes of the client commands (documented in `hub --help` and the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Done.
    Ok = 0,
    /// The operation failed (a task ended in FAILURE, the hub refused the request).
    Failed = 1,
    /// The command line was wrong.
    Usage = 2,
    /// No hub answers at the URL.
    NoHub = 3,
    /// The project, service or task does not exist.
    NotFound = 4,
    /// Ctrl-C while following an operation.
    Interrupted = 130,
}

/// What a client command prints when it fails, and how it exits.
#[derive(Debug)]
pub(crate) struct CliError {
    /// The exit code.
    pub(crate) code: Exit,
    /// One line.
    pub(crate) message: String,
    /// What to do about it, on a second line.
    pub(crate) hint: Option<String>,
}

impl CliError {
    fn failed(message: impl Into<String>) -> Self {
        CliError {
            code: Exit::Failed,
            message: message.into(),
            hint: None,
        }
    }

    fn usage(message: impl Into<String>) -> Self {
        CliError {
            code: Exit::Usage,
            message: message.into(),
            hint: None,
        }
    }

    fn not_found(message: impl Into<String>) -> Self {
        CliError {
            code: Exit::NotFound,
            message: message.into(),
            hint: None,
        }
    }
}

/// Where the hub is, and its token: the client commands use both; `hub serve` requires the
/// token of its callers.
#[derive(Debug, Args)]
pub(crate) struct HubAddress {
    /// The hub the client commands talk to.
    #[arg(
        long,
        env = "HUB_URL",
        default_value = "http://127.0.0.1:9002",
        global = true
    )]
    pub(crate) url: String,

    /// The bearer token: `hub serve` requires it on every route but /health; the client
    /// commands send it.
    #[arg(long, env = "HUB_API_TOKEN", hide_env_values = true, global = true)]
    pub(crate) token: Option<String>,
}

/// The client commands.
#[derive(Debug, Subcommand)]
pub(crate) enum ClientCommand {
    /// List projects: name, status, folder, URLs.
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Register the project in PATH; prints the ports it was given.
    Add {
        /// The project folder.
        path: std::path::PathBuf,
        /// Its name [default: the folder's name].
        #[arg(long)]
        name: Option<String>,
        /// A port to hold instead of an allocated one: role=PORT (backend, frontend, postgres,
        /// redis); repeat for several.
        #[arg(long = "port", value_name = "ROLE=PORT")]
        ports: Vec<String>,
        /// The Docker host it runs on: its operations go to the queue of that name, which
        /// that host's `hub worker --queues <host>` takes [default: local].
        #[arg(long)]
        host: Option<String>,
        /// Print the project as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start projects' stacks and follow them to the end.
    Start(Operation),
    /// Stop projects' stacks (volumes are kept) and follow them to the end.
    Stop(Operation),
    /// Restart projects' stacks and follow them to the end.
    Restart(Operation),
    /// Show a project's services: state, health, image, ports, URLs, last error.
    Status {
        /// Project id, slug or name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the stack a start would run: every service after `${…}` interpolation, with each
    /// published port's host port (`container port → host port`).
    Stack {
        /// Project id, slug or name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a service's last lines of output; with -f, follow it until Ctrl-C.
    Logs {
        /// Project id, slug or name.
        name: String,
        /// The service.
        service: String,
        /// How many lines.
        #[arg(short = 'n', long = "lines", default_value_t = 100)]
        lines: usize,
        /// Keep printing new lines.
        #[arg(short, long)]
        follow: bool,
    },
    /// Remove a project: its containers and network, its volumes too with --data.
    Rm {
        /// Project id, slug or name.
        name: String,
        /// Remove its volumes (its data) as well.
        #[arg(long)]
        data: bool,
        /// Do not ask.
        #[arg(long, short)]
        yes: bool,
    },
    /// List background tasks, newest first.
    Tasks {
        /// Only this project's (id, slug or name).
        #[arg(long)]
        project: Option<String>,
        /// Only in these states (comma-separated: PENDING, RUNNING, SUCCESS, FAILURE, …).
        #[arg(long)]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a task: a pending one never runs, a running one is stopped.
    Cancel {
        /// The task id.
        task: String,
    },
    /// Print a project's frontend URL, and open it when a browser is available.
    Open {
        /// Project id, slug or name.
        name: String,
    },
    /// Check the hub at --url: exit 0 when it answers with its database up (`healthy` or
    /// `degraded`), 1 otherwise; for container health checks and scripts.
    Health {
        /// Check instead that a worker registered under this name (`--worker-name`) is online:
        /// it heartbeats into the store the hub reads.
        #[arg(long, value_name = "NAME")]
        worker: Option<String>,
    },
}

/// `start`, `stop`, `restart`: which projects, and how to follow them.
#[derive(Debug, Args)]
pub(crate) struct Operation {
    /// Project ids, slugs or names.
    #[arg(required = true)]
    pub(crate) names: Vec<String>,
    /// Print the task ids and return at once.
    #[arg(long, short)]
    pub(crate) detach: bool,
    /// Print every event as a JSON line.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Runs a client command; returns the exit code.
pub(crate) async fn run(address: &HubAddress, command: ClientCommand) -> Exit {
    let result = match Client::new(&address.url, address.token.clone()) {
        Ok(client) => commands::run(&client, command).await,
        Err(err) => Err(err),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            report(&err);
            err.code
        }
    }
}

/// Prints an error as `hub: message`, with its hint on a second line.
fn report(err: &CliError) {
    use std::io::Write;
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "hub: {}", err.message);
    if let Some(hint) = &err.hint {
        let _ = writeln!(stderr, "hint: {hint}");
    }
}
