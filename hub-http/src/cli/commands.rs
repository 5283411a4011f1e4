//! One function per client command.

use std::io::{IsTerminal, Write};

use futures_util::StreamExt;
use serde_json::{Value, json};

use super::client::{Client, encode, lines};
use super::{CliError, ClientCommand, Exit, Operation, follow};

pub(super) async fn run(client: &Client, command: ClientCommand) -> Result<Exit, CliError> {
    match command {
        ClientCommand::Ls { json } => ls(client, json).await,
        ClientCommand::Add {
            path,
            name,
            ports,
            host,
            json,
        } => add(client, path, name, &ports, host, json).await,
        ClientCommand::Start(op) => operate(client, "start", op).await,
        ClientCommand::Stop(op) => operate(client, "stop", op).await,
        ClientCommand::Restart(op) => operate(client, "restart", op).await,
        ClientCommand::Status { name, json } => status(client, &name, json).await,
        ClientCommand::Stack { name, json } => stack(client, &name, json).await,
        ClientCommand::Logs {
            name,
            service,
            lines,
            follow,
        } => logs(client, &name, &service, lines, follow).await,
        ClientCommand::Rm { name, data, yes } => rm(client, &name, data, yes).await,
        ClientCommand::Tasks {
            project,
            state,
            limit,
            json,
        } => tasks(client, project.as_deref(), state.as_deref(), limit, json).await,
        ClientCommand::Cancel { task } => cancel(client, &task).await,
        ClientCommand::Open { name } => open(client, &name).await,
        ClientCommand::Health { worker } => health(client, worker.as_deref()).await,
    }
}

/// Writes to stdout, ignoring a closed pipe (`hub ls | head`).
macro_rules! out {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// A status word, coloured on a terminal.
fn coloured(status: &str) -> String {
    let style = console::style(status.to_owned());
    match status {
        "running" | "SUCCESS" | "healthy" => style.green(),
        "error" | "FAILURE" | "unhealthy" | "exited" | "dead" => style.red(),
        "starting" | "stopping" | "PENDING" | "STARTED" | "BUILDING" | "RUNNING" | "STOPPING"
        | "RESTARTING" => style.yellow(),
        _ => style.dim(),
    }
    .to_string()
}

/// Prints rows as aligned columns (widths measured without colour codes).
fn table(header: &[&str], rows: &[Vec<String>]) {
    let width = |cell: &str| console::measure_text_width(cell);
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(width(cell));
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(width(cell));
            out.push_str(cell);
            if i + 1 < cells.len() {
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out
    };
    out!(
        "{}",
        line(
            header
                .iter()
                .map(|h| console::style(*h).bold().to_string())
                .collect()
        )
    );
    for row in rows {
        out!("{}", line(row.clone()));
    }
}

fn url(port: &Value) -> String {
    port.as_u64()
        .map_or_else(|| "-".to_owned(), |p| format!("http://127.0.0.1:{p}"))
}

async fn ls(client: &Client, as_json: bool) -> Result<Exit, CliError> {
    let projects = client.get("/api/projects").await?;
    if as_json {
        out!("{projects:#}");
        return Ok(Exit::Ok);
    }
    let list = projects.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        out!("no projects yet: register one with `hub add PATH`");
        return Ok(Exit::Ok);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|p| {
            vec![
                text(&p["name"]),
                coloured(&text(&p["status"])),
                text(&p["path"]),
                url(&p["frontend_port"]),
                url(&p["backend_port"]),
            ]
        })
        .collect();
    table(&["NAME", "STATUS", "FOLDER", "FRONTEND", "BACKEND"], &rows);
    Ok(Exit::Ok)
}

async fn add(
    client: &Client,
    path: std::path::PathBuf,
    name: Option<String>,
    ports: &[String],
    host: Option<String>,
    as_json: bool,
) -> Result<Exit, CliError> {
    // A relative folder is the caller's, not the hub's: make it absolute here.
    let path = std::path::absolute(&path)
        .map_err(|err| CliError::usage(format!("{}: {err}", path.display())))?;
    let name = match name {
        Some(name) => name,
        None => path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| CliError::usage("the folder has no name: pass --name"))?,
    };
    let mut requested = serde_json::Map::new();
    for port in ports {
        let (role, number) = port
            .split_once('=')
            .ok_or_else(|| CliError::usage(format!("--port {port}: expected ROLE=PORT")))?;
        let number: u16 = number
            .trim()
            .parse()
            .map_err(|_| CliError::usage(format!("--port {port}: '{number}' is not a port")))?;
        requested.insert(role.trim().to_owned(), json!(number));
    }
    let mut body = json!({"name": name, "path": path});
    if !requested.is_empty() {
        body["ports"] = Value::Object(requested);
    }
    if let Some(host) = host {
        body["host"] = json!(host);
    }
    let project = client.post("/api/projects", &body).await?;
    if as_json {
        out!("{project:#}");
        return Ok(Exit::Ok);
    }
    out!(
        "added {} ({}) in {} on host {}",
        text(&project["name"]),
        text(&project["slug"]),
        text(&project["path"]),
        text(&project["host"])
    );
    for role in ["frontend", "backend", "postgres", "redis"] {
        out!("  {role:<9} {}", text(&project[format!("{role}_port")]));
    }
    out!("start it with `hub start {}`", text(&project["slug"]));
    Ok(Exit::Ok)
}

async fn operate(client: &Client, action: &str, op: Operation) -> Result<Exit, CliError> {
    // Every name is resolved before anything is submitted: a typo starts nothing.
    let mut projects = Vec::with_capacity(op.names.len());
    for name in &op.names {
        projects.push(client.project(name).await?);
    }
    let mut started = Vec::new();
    for project in projects {
        let id = project["id"].as_i64().unwrap_or_default();
        let accepted = client
            .post(&format!("/api/orchestration/{id}/{action}"), &json!({}))
            .await?;
        let task = text(&accepted["task_id"]);
        started.push((text(&project["slug"]), task));
    }
    if op.detach {
        for (slug, task) in &started {
            if op.json {
                out!("{}", json!({"project": slug, "task_id": task}));
            } else {
                out!("{slug}: {action} queued as task {task}");
            }
        }
        return Ok(Exit::Ok);
    }
    follow::follow(client, &started, op.json).await
}

async fn status(client: &Client, name: &str, as_json: bool) -> Result<Exit, CliError> {
    let project = client.project(name).await?;
    let id = project["id"].as_i64().unwrap_or_default();
    let stack = client
        .get(&format!("/api/orchestration/{id}/status"))
        .await?;
    if as_json {
        out!("{}", json!({"project": project, "stack": stack}));
        return Ok(Exit::Ok);
    }
    out!(
        "{} ({})  {}  health {}",
        text(&project["name"]),
        text(&project["slug"]),
        coloured(&text(&project["status"])),
        coloured(&text(&project["health"]))
    );
    out!("folder    {}", text(&project["path"]));
    out!("stack     {}", text(&stack["stack_source"]));
    out!("frontend  {}", url(&project["frontend_port"]));
    out!("backend   {}", url(&project["backend_port"]));
    if let Some(error) = project["last_error"].as_str() {
        out!("last error: {error}");
    }
    let rows: Vec<Vec<String>> = stack["services"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let mappings: Vec<String> = s["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| text(&p["mapping"]))
                .collect();
            // A container the current file no longer names has only its published host port.
            let ports = if mappings.is_empty() {
                s["host_port"]
                    .as_u64()
                    .map_or_else(|| "-".to_owned(), |host| format!("127.0.0.1:{host}"))
            } else {
                mappings.join(", ")
            };
            vec![
                text(&s["name"]),
                coloured(&text(&s["state"])),
                s["health"]
                    .as_str()
                    .map_or_else(|| "-".to_owned(), coloured),
                text(&s["image"]),
                ports,
            ]
        })
        .collect();
    if !rows.is_empty() {
        out!("");
        table(&["SERVICE", "STATE", "HEALTH", "IMAGE", "PORTS"], &rows);
    }
    Ok(Exit::Ok)
}

async fn stack(client: &Client, name: &str, as_json: bool) -> Result<Exit, CliError> {
    let project = client.project(name).await?;
    let id = project["id"].as_i64().unwrap_or_default();
    let stack = client.get(&format!("/api/projects/{id}/stack")).await?;
    if as_json {
        out!("{stack:#}");
        return Ok(Exit::Ok);
    }
    out!(
        "{} — {} ({}), network {}",
        text(&stack["project"]),
        text(&stack["source"]),
        text(&stack["format"]),
        text(&stack["network"])
    );
    out!(
        "health timeout {}, stop grace {}",
        text(&stack["health_timeout"]),
        text(&stack["stop_grace"])
    );
    let list = |value: &Value| -> Vec<String> {
        value
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect()
    };
    for service in stack["services"].as_array().into_iter().flatten() {
        out!("");
        out!(
            "{}  {}",
            console::style(text(&service["name"])).bold(),
            text(&service["image"])
        );
        let field = |label: &str, value: String| {
            if !value.is_empty() && value != "-" {
                out!("  {label:<12} {value}");
            }
        };
        field("container", text(&service["container"]));
        if let Some(build) = service["build"].as_object() {
            let mut line = format!(
                "{} ({})",
                text(&build["context"]),
                text(&build["dockerfile"])
            );
            if let Some(target) = build["target"].as_str() {
                line.push_str(&format!(", stage {target}"));
            }
            field("build", line);
            for (key, value) in build["args"].as_object().into_iter().flatten() {
                field("build arg", format!("{key}={}", text(value)));
            }
        }
        field("entrypoint", shell_words(&list(&service["entrypoint"])));
        field("command", shell_words(&list(&service["command"])));
        for port in service["ports"].as_array().into_iter().flatten() {
            let role = port["role"]
                .as_str()
                .map_or_else(|| "extra port".to_owned(), |r| format!("{r} port"));
            field("port", format!("{} ({role})", text(&port["mapping"])));
        }
        for (key, value) in service["environment"].as_object().into_iter().flatten() {
            field("environment", format!("{key}={}", text(value)));
        }
        for volume in list(&service["volumes"]) {
            field("volume", volume);
        }
        for dependency in list(&service["depends_on"]) {
            field("depends on", dependency);
        }
        field("healthcheck", text(&service["healthcheck"]));
        field("working dir", text(&service["working_dir"]));
        field("user", text(&service["user"]));
        field("restart", text(&service["restart"]));
        for (key, value) in service["labels"].as_object().into_iter().flatten() {
            field("label", format!("{key}={}", text(value)));
        }
        field("aliases", list(&service["aliases"]).join(", "));
        if service["run_once"].as_bool() == Some(true) {
            field(
                "runs once",
                "dependants wait for it to exit with code 0".into(),
            );
        }
    }
    let warnings = list(&stack["warnings"]);
    if !warnings.is_empty() {
        out!("");
        out!("{}", console::style("warnings").yellow());
        for warning in warnings {
            out!("  - {warning}");
        }
    }
    Ok(Exit::Ok)
}

/// A command line as a shell would read it back (`-` for none).
fn shell_words(words: &[String]) -> String {
    if words.is_empty() {
        return "-".to_owned();
    }
    shlex::try_join(words.iter().map(String::as_str)).unwrap_or_else(|_| words.join(" "))
}

async fn logs(
    client: &Client,
    name: &str,
    service: &str,
    count: usize,
    follow: bool,
) -> Result<Exit, CliError> {
    let project = client.project(name).await?;
    let id = project["id"].as_i64().unwrap_or_default();
    let path = format!(
        "/api/orchestration/{id}/logs/{}?lines={count}",
        encode(service)
    );
    if !follow {
        let logs = client.get(&path).await?;
        for line in logs["logs"].as_array().into_iter().flatten() {
            out!("{}", line.as_str().unwrap_or_default());
        }
        return Ok(Exit::Ok);
    }
    let stream = client
        .stream(&format!("{path}&follow=true"), "text/plain")
        .await?;
    let mut lines = Box::pin(lines(stream));
    loop {
        tokio::select! {
            line = lines.next() => match line {
                Some(Ok(line)) => out!("{line}"),
                Some(Err(err)) => return Err(err),
                None => return Ok(Exit::Ok),
            },
            // Ctrl-C ends a followed log cleanly.
            _ = tokio::signal::ctrl_c() => return Ok(Exit::Ok),
        }
    }
}

async fn rm(client: &Client, name: &str, data: bool, yes: bool) -> Result<Exit, CliError> {
    let project = client.project(name).await?;
    let slug = text(&project["slug"]);
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::usage(format!(
                "removing '{slug}' needs confirmation: pass --yes"
            )));
        }
        let what = if data {
            "its containers and its data (volumes)"
        } else {
            "its containers (volumes are kept)"
        };
        if !confirm(&format!("Remove project '{slug}' with {what}? [y/N] ")) {
            out!("left as it is");
            return Ok(Exit::Ok);
        }
    }
    let id = project["id"].as_i64().unwrap_or_default();
    client
        .delete(&format!("/api/projects/{id}?delete_data={data}"))
        .await?;
    out!("removed {slug}");
    Ok(Exit::Ok)
}

/// Asks a yes/no question on the terminal; no is the default.
pub(super) fn confirm(question: &str) -> bool {
    let mut stderr = std::io::stderr().lock();
    let _ = write!(stderr, "{question}");
    let _ = stderr.flush();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).is_ok()
        && matches!(answer.trim().to_lowercase().as_str(), "y" | "yes")
}

async fn tasks(
    client: &Client,
    project: Option<&str>,
    state: Option<&str>,
    limit: u32,
    as_json: bool,
) -> Result<Exit, CliError> {
    let mut query = format!("/api/tasks?limit={limit}");
    if let Some(name) = project {
        let project = client.project(name).await?;
        query.push_str(&format!("&project_id={}", text(&project["id"])));
    }
    if let Some(state) = state {
        query.push_str(&format!("&state={}", encode(state)));
    }
    let list = client.get(&query).await?;
    if as_json {
        out!("{list:#}");
        return Ok(Exit::Ok);
    }
    let rows: Vec<Vec<String>> = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            vec![
                text(&t["task_id"]),
                text(&t["kind"]),
                text(&t["project_id"]),
                coloured(&text(&t["state"])),
                format!("{}%", text(&t["progress"])),
                text(&t["status"]),
            ]
        })
        .collect();
    table(
        &["TASK", "KIND", "PROJECT", "STATE", "PROGRESS", "STATUS"],
        &rows,
    );
    Ok(Exit::Ok)
}

async fn cancel(client: &Client, task: &str) -> Result<Exit, CliError> {
    let record = client
        .post(
            &format!("/api/tasks/{}/revoke?terminate=true", encode(task)),
            &json!({}),
        )
        .await?;
    out!(
        "task {} is {}",
        text(&record["task_id"]),
        coloured(&text(&record["state"]))
    );
    Ok(Exit::Ok)
}

async fn open(client: &Client, name: &str) -> Result<Exit, CliError> {
    let project = client.project(name).await?;
    let target = url(&project["frontend_port"]);
    out!("{target}");
    // Only where a browser can show it: a desktop session, or $BROWSER.
    let browser = std::env::var("BROWSER").ok().filter(|b| !b.is_empty());
    let desktop =
        std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    let opener = browser.or_else(|| desktop.then(|| "xdg-open".to_owned()));
    if let Some(opener) = opener {
        let _ = std::process::Command::new(opener)
            .arg(&target)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
    Ok(Exit::Ok)
}

async fn health(client: &Client, worker: Option<&str>) -> Result<Exit, CliError> {
    // An unhealthy hub answers 503, which arrives here as an error (exit 1).
    let report = client.get("/health").await?;
    let Some(name) = worker else {
        out!("{}", text(&report["status"]));
        return Ok(Exit::Ok);
    };
    let view = client.get("/api/monitor/workers").await?;
    let online = view["workers"].as_array().is_some_and(|workers| {
        workers
            .iter()
            .any(|w| w["name"] == name && w["online"] == true)
    });
    if online {
        out!("worker {name} online");
        Ok(Exit::Ok)
    } else {
        Err(CliError::failed(format!(
            "no worker named '{name}' is online (no heartbeat within its lease)"
        )))
    }
}
