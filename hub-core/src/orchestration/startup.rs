//! The order in which a starting stack's services come up.
//!
//! As in Compose, a service starts once each service it depends on has reached what that
//! dependency's condition asks: started (`service_started`), ready (`service_healthy`), or
//! exited 0 (`service_completed_successfully`, for a service that runs once). Each service
//! waits for its own dependencies only, not for a whole level of the dependency graph: a slow
//! service holds up its dependants and nothing else, and a service that waits on nothing starts
//! as soon as its container exists.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, PoisonError};

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::health::NOT_READY;
use crate::stack::{Condition, ServiceSpec};
use crate::sync::lock;
use crate::tasks::TaskError;

/// How far one service of a starting stack has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Stage {
    /// Its container is being created, or waits for its dependencies.
    Waiting,
    /// Its container was started.
    Started,
    /// It is ready: healthy, answering, or (run once) exited 0.
    Ready,
}

impl Stage {
    /// The stage a dependency has to reach before its dependant starts.
    fn needed_for(condition: Condition) -> Stage {
        match condition {
            Condition::ServiceStarted => Stage::Started,
            // A service that runs once is ready when it has exited 0 (`wait_ready`).
            Condition::ServiceHealthy | Condition::ServiceCompletedSuccessfully => Stage::Ready,
        }
    }
}

/// What the services of one starting stack share: where each stands, for its dependants to
/// wait on, and the first failure.
///
/// Once a service fails, the others stop at their next wait (for a dependency, or for
/// readiness), but an engine call under way is let finish rather than dropped: a create the
/// engine completes after its caller gave up would leave a container that the start's undo,
/// listing the project's containers, had already missed.
pub(super) struct Startup {
    stages: HashMap<String, watch::Sender<Stage>>,
    failed: CancellationToken,
    first_failure: Mutex<Option<TaskError>>,
}

impl Startup {
    /// Every service of `services`, waiting; their waits also stop once `cancelled` fires
    /// (the task's token: a revoke, a time limit, a shutdown).
    pub(super) fn new<'a>(
        services: impl IntoIterator<Item = &'a ServiceSpec>,
        cancelled: &CancellationToken,
    ) -> Self {
        Startup {
            stages: services
                .into_iter()
                .map(|service| (service.name.clone(), watch::Sender::new(Stage::Waiting)))
                .collect(),
            failed: cancelled.child_token(),
            first_failure: Mutex::new(None),
        }
    }

    /// Records that `service` has reached `stage`, waking its dependants.
    pub(super) fn reached(&self, service: &str, stage: Stage) {
        if let Some(sender) = self.stages.get(service) {
            sender.send_replace(stage);
        }
    }

    /// Waits until every dependency of `service` has reached the stage its condition asks;
    /// fails at once when another service has failed. A dependency that never gets there
    /// fails the wait at `deadline` (the start's health timeout).
    pub(super) async fn dependencies_of(
        &self,
        service: &ServiceSpec,
        deadline: Instant,
    ) -> Result<(), TaskError> {
        self.unless_failed(async {
            for dependency in &service.depends_on {
                let needed = Stage::needed_for(dependency.condition);
                let reached = match self.stages.get(&dependency.service) {
                    Some(sender) => {
                        let mut stage = sender.subscribe();
                        let wait = stage.wait_for(|stage| *stage >= needed);
                        matches!(tokio::time::timeout_at(deadline, wait).await, Ok(Ok(_)))
                    }
                    None => false,
                };
                if !reached {
                    return Err(TaskError::new(
                        NOT_READY,
                        format!(
                            "service '{}' waited for '{}' ({}) until the health timeout",
                            service.name,
                            dependency.service,
                            dependency.condition.as_str()
                        ),
                    ));
                }
            }
            Ok(())
        })
        .await
    }

    /// Runs `wait` to its end, or until another service has failed or the start is cancelled.
    pub(super) async fn unless_failed<T>(
        &self,
        wait: impl Future<Output = Result<T, TaskError>>,
    ) -> Result<T, TaskError> {
        match self.failed.run_until_cancelled(wait).await {
            Some(outcome) => outcome,
            None => Err(TaskError::new(
                super::CANCELLED,
                "stopped: the start was cancelled, or another service of the stack failed",
            )),
        }
    }

    /// Records how one service's bring-up ended; the first failure stops the others.
    pub(super) fn ended(&self, outcome: Result<(), TaskError>) {
        if let Err(err) = outcome {
            lock(&self.first_failure).get_or_insert(err);
            self.failed.cancel();
        }
    }

    /// The start's outcome, once every service's bring-up has ended: the first failure.
    pub(super) fn outcome(self) -> Result<(), TaskError> {
        let first = self
            .first_failure
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        first.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::stack::StackSpec;

    const STACK: &str = r#"
[services.db]
image = "x"

[services.web]
image = "x"
depends_on = ["db"]
"#;

    fn stack(condition: Condition) -> StackSpec {
        let mut stack = StackSpec::parse(STACK, "test").expect("valid stack");
        for service in &mut stack.services {
            for dependency in &mut service.depends_on {
                dependency.condition = condition;
            }
        }
        stack
    }

    /// Whether `web`'s wait for its dependencies has ended after `db` reached `stage`.
    async fn released_at(condition: Condition, stage: Stage) -> bool {
        let stack = stack(condition);
        let startup = Startup::new(&stack.services, &CancellationToken::new());
        let web = stack.service("web").expect("web");
        startup.reached("db", stage);
        let deadline = Instant::now() + Duration::from_secs(60);
        tokio::time::timeout(
            Duration::from_millis(50),
            startup.dependencies_of(web, deadline),
        )
        .await
        .is_ok_and(|waited| waited.is_ok())
    }

    #[tokio::test]
    async fn a_dependant_waits_for_the_stage_its_condition_names() {
        use Condition::*;
        assert!(!released_at(ServiceStarted, Stage::Waiting).await);
        assert!(released_at(ServiceStarted, Stage::Started).await);
        assert!(released_at(ServiceStarted, Stage::Ready).await);
        for condition in [ServiceHealthy, ServiceCompletedSuccessfully] {
            assert!(
                !released_at(condition, Stage::Started).await,
                "{condition:?}"
            );
            assert!(released_at(condition, Stage::Ready).await, "{condition:?}");
        }
    }

    #[tokio::test]
    async fn a_dependant_is_woken_when_its_dependency_gets_there() {
        let stack = stack(Condition::ServiceHealthy);
        let startup = Startup::new(&stack.services, &CancellationToken::new());
        let web = stack.service("web").expect("web");
        let deadline = Instant::now() + Duration::from_secs(60);
        let wait = startup.dependencies_of(web, deadline);
        let progress = async {
            tokio::task::yield_now().await;
            startup.reached("db", Stage::Started);
            tokio::task::yield_now().await;
            startup.reached("db", Stage::Ready);
        };
        let (waited, ()) = tokio::join!(wait, progress);
        assert!(waited.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_dependency_that_never_gets_there_fails_at_the_deadline() {
        let stack = stack(Condition::ServiceHealthy);
        let startup = Startup::new(&stack.services, &CancellationToken::new());
        let web = stack.service("web").expect("web");
        startup.reached("db", Stage::Started);
        let deadline = Instant::now() + Duration::from_secs(60);
        let err = startup
            .dependencies_of(web, deadline)
            .await
            .expect_err("db never got ready");
        assert_eq!(err.code, NOT_READY);
        assert!(
            err.message
                .contains("'web' waited for 'db' (service_healthy)"),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn the_first_failure_stops_the_waits_of_the_others_and_is_the_outcome() {
        let stack = stack(Condition::ServiceHealthy);
        let startup = Startup::new(&stack.services, &CancellationToken::new());
        let web = stack.service("web").expect("web");
        let deadline = Instant::now() + Duration::from_secs(60);
        let waiting = async {
            let dependency = startup.dependencies_of(web, deadline).await;
            let readiness = startup.unless_failed(std::future::pending::<Result<(), _>>());
            (dependency, readiness.await)
        };
        let failing = async {
            tokio::task::yield_now().await;
            startup.ended(Err(TaskError::new(NOT_READY, "db exited with code 1")));
            // A later failure (one of the stopped waits) does not replace the first.
            startup.ended(Err(TaskError::new("cancelled", "stopped")));
        };
        let ((dependency, readiness), ()) = tokio::join!(waiting, failing);
        assert_eq!(dependency.expect_err("stopped").code, "cancelled");
        assert_eq!(readiness.expect_err("stopped").code, "cancelled");
        // A service that depends on nothing does not start after the failure either.
        let db = stack.service("db").expect("db");
        let late = startup.dependencies_of(db, deadline).await;
        assert_eq!(late.expect_err("stopped").code, "cancelled");
        let outcome = startup.outcome().expect_err("db failed");
        assert_eq!(outcome.message, "db exited with code 1");
    }

    #[tokio::test]
    async fn a_cancelled_start_stops_every_wait() {
        let stack = stack(Condition::ServiceHealthy);
        let cancelled = CancellationToken::new();
        let startup = Startup::new(&stack.services, &cancelled);
        let (db, web) = (
            stack.service("db").expect("db"),
            stack.service("web").expect("web"),
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        let waiting = async {
            let dependency = startup.dependencies_of(web, deadline).await;
            let readiness = startup.unless_failed(std::future::pending::<Result<(), _>>());
            (dependency, readiness.await)
        };
        let cancelling = async {
            tokio::task::yield_now().await;
            cancelled.cancel();
        };
        let ((dependency, readiness), ()) = tokio::join!(waiting, cancelling);
        assert_eq!(dependency.expect_err("cancelled").code, "cancelled");
        assert_eq!(readiness.expect_err("cancelled").code, "cancelled");
        let late = startup.dependencies_of(db, deadline).await;
        assert_eq!(late.expect_err("cancelled").code, "cancelled");
    }
}
