//! The order in which a starting stack's services come up.
//!
//! As in Compose, a service starts once each service it depends on has reached what that
//! dependency's condition asks: started (`service_started`), ready (`service_healthy`), or
//! exited 0 (`service_completed_successfully`, for a service that runs once). Each service
//! waits for its own dependencies only, not for a whole level of the dependency graph: a slow
//! service holds up its dependants and nothing else, and a service that waits on nothing starts
//! as soon as its container exists.

use std::collections::HashMap;

use tokio::sync::watch;
use tokio::time::Instant;

use super::health::NOT_READY;
use crate::stack::{Condition, ServiceSpec};
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

/// Where each service of a starting stack stands, for its dependants to wait on.
pub(super) struct Stages(HashMap<String, watch::Sender<Stage>>);

impl Stages {
    /// Every service of `services`, waiting.
    pub(super) fn new<'a>(services: impl IntoIterator<Item = &'a ServiceSpec>) -> Self {
        Stages(
            services
                .into_iter()
                .map(|service| (service.name.clone(), watch::Sender::new(Stage::Waiting)))
                .collect(),
        )
    }

    /// Records that `service` has reached `stage`, waking its dependants.
    pub(super) fn reached(&self, service: &str, stage: Stage) {
        if let Some(sender) = self.0.get(service) {
            sender.send_replace(stage);
        }
    }

    /// Waits until every dependency of `service` has reached the stage its condition asks.
    /// A dependency that fails ends the whole start with its own error, so this wait only has
    /// to end by `deadline` (the start's health timeout), for a stack whose dependency is
    /// outside it.
    pub(super) async fn dependencies_of(
        &self,
        service: &ServiceSpec,
        deadline: Instant,
    ) -> Result<(), TaskError> {
        for dependency in &service.depends_on {
            let needed = Stage::needed_for(dependency.condition);
            let reached = match self.0.get(&dependency.service) {
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
                        "service '{}' waited for '{}' ({:?}) until the health timeout",
                        service.name, dependency.service, dependency.condition
                    ),
                ));
            }
        }
        Ok(())
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
        let stages = Stages::new(&stack.services);
        let web = stack.service("web").expect("web");
        stages.reached("db", stage);
        let deadline = Instant::now() + Duration::from_secs(60);
        tokio::time::timeout(
            Duration::from_millis(50),
            stages.dependencies_of(web, deadline),
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
        let stages = Stages::new(&stack.services);
        let web = stack.service("web").expect("web");
        let deadline = Instant::now() + Duration::from_secs(60);
        let wait = stages.dependencies_of(web, deadline);
        let progress = async {
            tokio::task::yield_now().await;
            stages.reached("db", Stage::Started);
            tokio::task::yield_now().await;
            stages.reached("db", Stage::Ready);
        };
        let (waited, ()) = tokio::join!(wait, progress);
        assert!(waited.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_dependency_that_never_gets_there_fails_at_the_deadline() {
        let stack = stack(Condition::ServiceHealthy);
        let stages = Stages::new(&stack.services);
        let web = stack.service("web").expect("web");
        stages.reached("db", Stage::Started);
        let deadline = Instant::now() + Duration::from_secs(60);
        let err = stages
            .dependencies_of(web, deadline)
            .await
            .expect_err("db never got ready");
        assert_eq!(err.code, NOT_READY);
        assert!(
            err.message.contains("'web' waited for 'db'"),
            "{}",
            err.message
        );
    }
}
