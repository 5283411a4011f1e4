//! Waiting for a started service to be ready.

use std::net::IpAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::runtime::Runtime;
use crate::stack::{Protocol, ServiceSpec};
use crate::tasks::TaskError;

/// Task error code of a service that did not become ready.
pub const NOT_READY: &str = "unhealthy";

/// Polling starts fast (most services are ready within a second) and backs off to this.
const POLL_MAX: Duration = Duration::from_millis(250);
const POLL_MIN: Duration = Duration::from_millis(25);

/// Waits until container `name` of `service` is ready: healthy when it has a health check, else
/// answering on its first published TCP port, else simply running; a service that runs once is
/// ready when it exited with code 0. Fails when the container stops (or, run once, exits with
/// another code), turns unhealthy, or `deadline` passes; the error carries its last log lines.
///
/// Docker runs a health check first only after one interval; while it reports `starting`, the
/// hub runs the same check command itself (`health_test`), so a service that is ready at once
/// is seen ready at once.
pub(super) async fn wait_ready(
    runtime: &dyn Runtime,
    spec: &ServiceSpec,
    name: &str,
    deadline: Instant,
) -> Result<(), TaskError> {
    let service = spec.name.as_str();
    let tcp = spec.ports.iter().find(|p| p.protocol == Protocol::Tcp);
    let host_port = tcp.and_then(|p| p.host_port);
    let health_test = spec.healthcheck.as_ref().map(|h| h.test.as_slice());
    // A container's address means the same thing here only when the engine runs on this
    // machine (a local socket); a remote engine's bridge addresses may be another's here.
    let address = runtime.address();
    let local_engine = address.starts_with("unix://") || address.starts_with('/');
    let mut direct = tcp
        .filter(|_| local_engine)
        .map(|p| DirectProbe::new(p.target));
    let mut poll = POLL_MIN;
    loop {
        let Some(info) = runtime.inspect_container(name).await? else {
            return Err(not_ready(runtime, service, name, "its container disappeared").await);
        };
        if spec.run_once && !info.is_running() {
            if info.state == "exited" && info.exit_code == Some(0) {
                return Ok(());
            }
            if info.state == "exited" || info.state == "dead" {
                let why = format!(
                    "it runs once and exited with code {}",
                    info.exit_code.unwrap_or(-1)
                );
                return Err(not_ready(runtime, service, name, &why).await);
            }
        }
        if !spec.run_once && !info.is_running() {
            let why = match info.exit_code {
                Some(code) => format!("it {} with exit code {code}", info.state),
                None => format!("it is {}", info.state),
            };
            return Err(not_ready(runtime, service, name, &why).await);
        }
        let ready = match info.health.as_deref() {
            // A task that runs once is ready when it has finished, whatever its health says.
            _ if spec.run_once => false,
            Some("healthy") => true,
            Some("unhealthy") => {
                return Err(not_ready(runtime, service, name, "its health check fails").await);
            }
            Some(_) => match health_test.and_then(exec_form) {
                Some(command) => runtime
                    .exec(name, &command)
                    .await
                    .is_ok_and(|code| code == 0),
                None => false,
            },
            None => match host_port {
                Some(port) => {
                    let listening = match direct.as_mut() {
                        Some(direct) => direct.listening(&info.addresses).await,
                        None => false,
                    };
                    listening || accepts_connections(port).await
                }
                None => true,
            },
        };
        if ready {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(not_ready(runtime, service, name, "it was not ready in time").await);
        }
        tokio::time::sleep(poll).await;
        poll = (poll * 2).min(POLL_MAX);
    }
}

/// A Docker health test as a command to exec: `["CMD", args…]` → args,
/// `["CMD-SHELL", cmd]` → `/bin/sh -c cmd`.
fn exec_form(test: &[String]) -> Option<Vec<String>> {
    match test.split_first() {
        Some((kind, args)) if kind == "CMD" && !args.is_empty() => Some(args.to_vec()),
        Some((kind, [command])) if kind == "CMD-SHELL" => {
            Some(vec!["/bin/sh".into(), "-c".into(), command.clone()])
        }
        _ => None,
    }
}

/// A connection straight to the container's port, past the engine's port proxy: only a
/// listening server accepts it, so readiness shows at once instead of after the proxy check's
/// silent wait. An engine on another machine (or a hub inside a container) may leave the
/// container's address unreachable; then the probe gives up for good and the published port
/// is checked alone.
struct DirectProbe {
    target: u16,
    reachable: bool,
}

impl DirectProbe {
    /// An unreachable address drops the connection attempt instead of refusing it; this long
    /// tells the two apart on a local bridge, where a refusal takes microseconds.
    const TIMEOUT: Duration = Duration::from_millis(100);

    fn new(target: u16) -> Self {
        DirectProbe {
            target,
            reachable: true,
        }
    }

    /// Whether a server accepts connections on the container's port at one of `addresses`.
    async fn listening(&mut self, addresses: &[IpAddr]) -> bool {
        if !self.reachable {
            return false;
        }
        for address in addresses {
            let connect = TcpStream::connect((*address, self.target));
            match tokio::time::timeout(Self::TIMEOUT, connect).await {
                Ok(Ok(_)) => return true,
                Ok(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionRefused => {}
                // Unreachable, filtered or timed out: not a path the hub can use.
                Ok(Err(_)) | Err(_) => self.reachable = false,
            }
        }
        false
    }
}

/// Whether something serves on `127.0.0.1:port`. Docker's port proxy accepts connections even
/// when nothing listens in the container, then closes them at once; a real server keeps the
/// connection open (waiting for a request) or greets.
pub(crate) async fn accepts_connections(port: u16) -> bool {
    let connect = TcpStream::connect(("127.0.0.1", port));
    let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_secs(1), connect).await else {
        return false;
    };
    let mut buf = [0u8; 1];
    // The proxy's close comes within a millisecond on loopback; 50 ms tells the two apart.
    match tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await {
        Err(_) => true,      // open and silent: a server waiting for the client
        Ok(Ok(n)) => n > 0,  // a greeting, or EOF from a proxy with no backend
        Ok(Err(_)) => false, // reset
    }
}

async fn not_ready(runtime: &dyn Runtime, service: &str, name: &str, why: &str) -> TaskError {
    let tail = runtime.logs(name, 20).await.unwrap_or_default();
    let mut message = format!("service '{service}' is not ready: {why}");
    if !tail.is_empty() {
        message.push_str("; last log lines:\n");
        message.push_str(&tail.join("\n"));
    }
    TaskError::new(NOT_READY, message)
}
