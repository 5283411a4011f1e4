//! Time from `start_project` enqueue to every service healthy, for the 4-service test stack
//! (`tests/fixtures/four-services.toml`), next to `scripts/bench-docker-run.sh` starting the same
//! four containers with `docker run`, and to the engine's own floor for the stack
//! (`scripts/bench-engine-floor.py`: its critical path driven straight over the Docker API at
//! full parallelism, no hub code). Needs a Docker engine with the test images
//! (`bash scripts/docker-up.sh`) and `python3`. Prints the median of several rounds of each.
//!
//! Then the hub's own path of an operation: [`EMPTY_PROJECTS`] projects with empty stacks
//! started at once, then stopped at once, by the default two workers; each operation still
//! reads its project and stack file and asks the engine for the project's containers. Prints
//! the rate from the first enqueue to the last end, the median of several rounds.
//!
//! Run with `cargo bench --bench stack`.

#![allow(clippy::expect_used, clippy::print_stdout)] // a benchmark aborts on setup failure and reports figures

use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use hub_core::tasks::{TaskId, TaskState};
use hub_core::{Hub, HubConfig, NewProject, PortConfig, PortSet};

const ROUNDS: usize = 7;
const STACK: &str = include_str!("../tests/fixtures/four-services.toml");
/// Projects of the empty-stack rounds.
const EMPTY_PROJECTS: usize = 1000;
/// Rounds of empty-stack starts and stops.
const EMPTY_ROUNDS: usize = 5;

/// Waits for task `id` to finish successfully; returns its status lines with the time each was
/// seen, from `since`.
async fn wait_done(hub: &Hub, id: TaskId, since: Instant) -> Vec<(Duration, String)> {
    let mut events = hub.subscribe(None).await.expect("subscribe");
    let mut steps = Vec::new();
    if hub.task(id).await.expect("task").ready() {
        return steps;
    }
    while let Some(event) = events.recv().await {
        if event.task.id != id {
            continue;
        }
        if let Some(status) = &event.task.status
            && steps.last().is_none_or(|(_, last)| last != status)
        {
            steps.push((since.elapsed(), status.clone()));
        }
        if event.task.ready() {
            assert_eq!(
                event.task.state,
                TaskState::Success,
                "{:?}",
                event.task.error
            );
            return steps;
        }
    }
    steps
}

fn median<T: Ord + Copy>(mut samples: Vec<T>) -> T {
    samples.sort();
    samples[samples.len() / 2]
}

/// Submits one operation per project, all at once (`submit` gives its task), and waits for
/// all of them to succeed; returns the operations per second, from the first enqueue to the
/// last end.
async fn drain<F, Fut>(hub: &Hub, projects: &[i64], submit: F) -> u64
where
    F: Fn(i64) -> Fut,
    Fut: std::future::Future<Output = hub_core::Result<TaskId>>,
{
    let mut events = hub.subscribe(None).await.expect("subscribe");
    let began = Instant::now();
    // All submitted together, as many clients would; the ends are read meanwhile, so the
    // subscriber keeps up with the stream.
    let submitted = async {
        try_join_all(projects.iter().map(|&project| submit(project)))
            .await
            .expect("submit")
    };
    let ended = async {
        let mut ended = std::collections::HashSet::new();
        while ended.len() < projects.len() && events.missed() == 0 {
            let event = events.recv().await.expect("event stream ended");
            if event.task.ready() {
                ended.insert(event.task.id);
            }
        }
        // When the last end was seen; none if the subscriber lost events on the way.
        (ended.len() == projects.len()).then(|| began.elapsed())
    };
    let (ids, last_end) = tokio::join!(submitted, ended);
    // Every task is read back: its state is checked, and a subscriber that fell behind anyway
    // (events dropped) waits here for the rest.
    for id in ids {
        loop {
            let task = hub.task(id).await.expect("task");
            if task.ready() {
                assert_eq!(task.state, TaskState::Success, "{:?}", task.error);
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let took = last_end.unwrap_or_else(|| began.elapsed());
    (projects.len() as f64 / took.as_secs_f64()) as u64
}

/// Rounds of empty-stack starts and stops of [`EMPTY_PROJECTS`] projects: the rates of each.
async fn empty_stacks(hub: &Hub, root: &std::path::Path) -> (Vec<u64>, Vec<u64>) {
    let mut projects = Vec::with_capacity(EMPTY_PROJECTS);
    for i in 0..EMPTY_PROJECTS {
        let folder = root.join(format!("empty-{i}"));
        std::fs::create_dir_all(&folder).expect("folder");
        std::fs::write(folder.join("hub.toml"), "# no services\n").expect("hub.toml");
        let project = hub
            .create_project(NewProject::new(format!("empty-{i}"), &folder))
            .await
            .expect("register");
        projects.push(project.id);
    }
    let (mut starts, mut stops) = (Vec::new(), Vec::new());
    for _ in 0..EMPTY_ROUNDS {
        starts.push(drain(hub, &projects, |id| hub.start_project(id)).await);
        stops.push(drain(hub, &projects, |id| hub.stop_project(id)).await);
    }
    (starts, stops)
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let scratch = tempfile::TempDir::new().expect("temp dir");
    let folder = scratch.path().join("bench-stack");
    std::fs::create_dir_all(&folder).expect("folder");
    std::fs::write(folder.join("hub.toml"), STACK).expect("hub.toml");

    let (hub_times, script_times, floor_times) = runtime.block_on(async {
        let config = HubConfig::with_data_dir(scratch.path().join("state"))
            .project_roots([scratch.path()])
            .ports(PortConfig {
                bases: PortSet {
                    backend: 34000,
                    frontend: 34001,
                    postgres: 34002,
                    redis: 34003,
                },
                ..PortConfig::default()
            });
        let hub = Hub::open(config).await.expect("open hub");
        let project = hub
            .create_project(NewProject::new("bench-stack", &folder))
            .await
            .expect("register");
        let mut times = Vec::new();
        let mut timelines = Vec::new();
        // The hub and the two baselines take turns, round by round, so that all three meet the
        // same moments of a shared machine's noise.
        let (mut script_times, mut floor_times) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let start = Instant::now();
            let id = hub.start_project(project.id).await.expect("start");
            let steps = wait_done(&hub, id, start).await;
            times.push(start.elapsed());
            timelines.push(steps);
            let id = hub.stop_project(project.id).await.expect("stop");
            wait_done(&hub, id, Instant::now()).await;
            script_times.push(seconds_printed_by("bash", "scripts/bench-docker-run.sh"));
            floor_times.push(seconds_printed_by("python3", "scripts/bench-engine-floor.py"));
        }
        // Where a start's time goes: each step's median time since the enqueue (matched by
        // its text: a round whose subscription came late may lack the first steps).
        for (_, step) in &timelines[0] {
            let at = median(
                timelines
                    .iter()
                    .filter_map(|steps| steps.iter().find(|(_, s)| s == step).map(|(at, _)| *at))
                    .collect(),
            );
            println!("stack/start_4_services: step at {at:>12?}: {step}");
        }
        hub.delete_project(project.id, true).await.expect("delete");
        let (starts, stops) = empty_stacks(&hub, scratch.path()).await;
        for (what, rates) in [("starts", starts), ("stops", stops)] {
            println!(
                "stack/empty_stacks: {EMPTY_PROJECTS} {what} at once, 2 workers: median {} per second over {EMPTY_ROUNDS} rounds (all: {rates:?})",
                median(rates.clone())
            );
        }
        hub.close().await;
        (times, script_times, floor_times)
    });

    println!(
        "stack/start_4_services: hub start_project enqueue -> all healthy: median {:?} over {ROUNDS} rounds (all: {hub_times:?})",
        median(hub_times.clone())
    );
    println!(
        "stack/start_4_services: docker run script: median {:?} over {ROUNDS} rounds (all: {script_times:?})",
        median(script_times.clone())
    );
    println!(
        "stack/start_4_services: engine floor, no hub: median {:?} over {ROUNDS} rounds (all: {floor_times:?})",
        median(floor_times.clone())
    );
}

/// Runs a baseline of the repository (`program script 35000`, ports from 35000) and reads the
/// seconds it prints.
fn seconds_printed_by(program: &str, script: &str) -> Duration {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    let output = std::process::Command::new(program)
        .arg(&path)
        .arg("35000")
        .output()
        .unwrap_or_else(|err| panic!("run {}: {err}", path.display()));
    assert!(
        output.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let secs: f64 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("seconds");
    Duration::from_secs_f64(secs)
}
