//! The writer: every task write of this process, in batches, one transaction per batch (group
//! commit), with the events of what the store took and the history counts.
//!
//! Being the one writer of the process keeps its connections from queueing on SQLite's write
//! lock, and makes the order of changes the order of their events.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::state::{Shared, lock};
use crate::db::{Conn, PooledConn, now_millis};
use crate::error::{HubError, Result};
use crate::registry::{StatusChange, write_statuses};
use crate::tasks::backend::key_held;
use crate::tasks::history::Finished;
use crate::tasks::model::{
    CancelReason, TaskEvent, TaskId, TaskMap, TaskRecord, TaskSet, TaskState,
};
use crate::tasks::store::{self, Reclaimed, StoredTask};

/// Ops queued to the writer at most per transaction.
const MAX_BATCH: usize = 2048;
/// Longest wait between two tries when the store fails.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a small batch that nobody waits on may wait for more ops before it is stored.
/// A task's start and its end, or its start and the next task's admission, then share one
/// commit: a commit writes every index leaf it touched again, whatever the batch's size.
const LINGER: Duration = Duration::from_millis(2);
/// Batches at least this large are stored at once: the writer is busy, and waiting would only
/// idle it. A task's whole run, from its start to its end, is a handful of ops.
const LINGER_BELOW: usize = 16;

type Ack<T> = oneshot::Sender<Result<T>>;

pub(super) enum WriteOp {
    /// Store a new task; with an exclusive key, answer once the store decided (`conflict` when
    /// the key is held) — and queue it here if this process holds it.
    Insert {
        task: StoredTask,
        ack: Option<Ack<()>>,
    },
    /// Store a change of a task this process holds (fenced on owner and attempt).
    Put { task: StoredTask, version: u64 },
    /// Take up to `max` unowned queued tasks for this worker and queue them here.
    Claim { max: usize, ack: Ack<usize> },
    /// Register this process as a worker.
    Register(Ack<()>),
    /// Renew this worker's leases and heartbeat.
    Heartbeat { processed: u64, ack: Ack<()> },
    /// End or re-queue tasks whose worker's lease expired.
    Reclaim(Ack<Reclaimed>),
    /// Revoke a task this process does not hold: a queued one at once, a running one by asking
    /// its worker (`terminate`).
    Revoke {
        id: TaskId,
        terminate: bool,
        ack: Ack<()>,
    },
    /// Hand this worker's reserved, unstarted tasks back to the queue and sign it off.
    Release(Ack<u64>),
    /// Report when everything sent before is stored.
    Flush(oneshot::Sender<()>),
    /// Store a change of a project's status (a task handler's), in order with the task's
    /// changes; answered once stored, retried until then if nobody waits.
    ProjectStatus { change: StatusChange, ack: Ack<()> },
}

/// Stores batches of ops until every sender is gone.
///
/// The writer keeps one connection of its own: a pool round trip per batch would cost more than
/// the batch's statements.
pub(super) async fn writer_loop(shared: Arc<Shared>, mut ops: mpsc::UnboundedReceiver<WriteOp>) {
    let mut batch = Vec::new();
    let mut conn: Option<PooledConn> = None;
    while ops.recv_many(&mut batch, MAX_BATCH).await > 0 {
        linger(&mut ops, &mut batch).await;
        write_batch(&shared, &mut conn, std::mem::take(&mut batch)).await;
    }
}

/// Lets a small batch that nobody waits on gather the ops that follow, for up to [`LINGER`];
/// the first op with a waiter (an admission, a claim, a flush…) ends the wait at once, so that
/// what callers wait on is never held back. What lingers is write-behind already: a task's
/// changes are seen in this process from memory, and by others once stored.
async fn linger(ops: &mut mpsc::UnboundedReceiver<WriteOp>, batch: &mut Vec<WriteOp>) {
    if batch.len() >= LINGER_BELOW || batch.iter().any(WriteOp::awaited) {
        return;
    }
    let deadline = tokio::time::sleep(LINGER);
    tokio::pin!(deadline);
    while batch.len() < LINGER_BELOW {
        tokio::select! {
            biased;
            op = ops.recv() => match op {
                Some(op) => {
                    let awaited = op.awaited();
                    batch.push(op);
                    if awaited {
                        return;
                    }
                }
                // Every sender is gone: store what came.
                None => return,
            },
            () = &mut deadline => return,
        }
    }
}

impl WriteOp {
    /// Whether a caller waits until this op is stored.
    fn awaited(&self) -> bool {
        match self {
            WriteOp::Insert { ack, .. } => ack.as_ref().is_some_and(|ack| !ack.is_closed()),
            WriteOp::Put { .. } => false,
            WriteOp::ProjectStatus { ack, .. } => !ack.is_closed(),
            WriteOp::Claim { .. }
            | WriteOp::Register(_)
            | WriteOp::Heartbeat { .. }
            | WriteOp::Reclaim(_)
            | WriteOp::Revoke { .. }
            | WriteOp::Release(_)
            | WriteOp::Flush(_) => true,
        }
    }
}

/// A new task or a change, as one entry of a merged write.
struct Entry {
    task: StoredTask,
    /// 0 for an insert.
    version: u64,
}

/// A batch turned into steps, run in order in one transaction. Plain writes are merged: the
/// latest version of each task is written once (a task queued, started and finished within
/// one batch costs one row), and every version still gets its event.
enum Step {
    Write {
        entries: Vec<Entry>,
        /// Every version, in arrival order: the events, for the tasks the store took.
        versions: Vec<Arc<TaskRecord>>,
    },
    /// Every exclusive insert of the batch, decided by one statement.
    InsertExclusive(Vec<(StoredTask, Ack<()>)>),
    Claim(usize, Ack<usize>),
    Register(Ack<()>),
    Heartbeat(u64, Ack<()>),
    Reclaim(Ack<Reclaimed>),
    Revoke(TaskId, bool, Ack<()>),
    Release(Ack<u64>),
    /// Every project status change of the batch, in arrival order, stored by one statement.
    ProjectStatus(Vec<(StatusChange, Ack<()>)>),
}

impl Step {
    /// Whether a caller waits on this step: if the batch fails, it is answered with the error
    /// instead of the step being tried again.
    fn has_ack(&self) -> bool {
        match self {
            Step::Write { .. } => false,
            Step::ProjectStatus(changes) => changes.iter().any(|(_, ack)| !ack.is_closed()),
            _ => true,
        }
    }

    /// Fails the caller waiting on this step.
    fn fail(self, err: &HubError) {
        let unavailable = || HubError::BackendUnavailable {
            message: format!("cannot store tasks: {err}"),
        };
        match self {
            Step::Write { .. } => {}
            Step::Register(ack) | Step::Heartbeat(_, ack) => {
                let _ = ack.send(Err(unavailable()));
            }
            Step::InsertExclusive(inserts) => {
                for (_, ack) in inserts {
                    let _ = ack.send(Err(unavailable()));
                }
            }
            Step::ProjectStatus(changes) => {
                for (_, ack) in changes {
                    let _ = ack.send(Err(unavailable()));
                }
            }
            Step::Revoke(_, _, ack) => {
                let _ = ack.send(Err(unavailable()));
            }
            Step::Claim(_, ack) => {
                let _ = ack.send(Err(unavailable()));
            }
            Step::Reclaim(ack) => {
                let _ = ack.send(Err(unavailable()));
            }
            Step::Release(ack) => {
                let _ = ack.send(Err(unavailable()));
            }
        }
    }
}

/// What a step did, to act on once the transaction committed.
enum Done {
    /// Ids of the write's tasks whose change was stored.
    Written(TaskSet),
    /// One result per insert, in order.
    Inserted(Vec<Result<()>>),
    Claimed(Vec<StoredTask>),
    Unit,
    Reclaimed(Reclaimed),
    Released(u64),
}

/// The step an exclusive insert may join: the batch's latest exclusive inserts, unless a step
/// after them may free a key (a task's end, a reclaim, a revoke) — an insert must still see
/// the keys freed before it arrived. Joining keeps the statement count of a busy batch flat.
fn insert_target(steps: &[Step]) -> Option<usize> {
    for (i, step) in steps.iter().enumerate().rev() {
        match step {
            Step::InsertExclusive(_) => return Some(i),
            Step::Write { entries, .. }
                if entries.iter().all(|e| !e.task.record.state.is_terminal()) => {}
            Step::Claim(..) | Step::Register(_) | Step::Heartbeat(..) | Step::ProjectStatus(_) => {}
            _ => return None,
        }
    }
    None
}

fn plan(ops: Vec<WriteOp>) -> (Vec<Step>, Vec<oneshot::Sender<()>>) {
    let mut steps: Vec<Step> = Vec::new();
    let mut flushes = Vec::new();
    let mut merged: TaskMap<usize> = TaskMap::default();
    let mut write = |steps: &mut Vec<Step>, task: StoredTask, version: u64| {
        // A write goes before the exclusive inserts and status changes that arrived after the
        // batch's last other step. It changes a task this process holds, which no insert of
        // the batch can be (an exclusive insert is queued here only once committed); and an
        // insert then judged after a key the write frees is judged as of its own commit, which
        // follows that end anyway. So a busy batch stays one write and one insert statement
        // however its ops interleave.
        let last_other = steps
            .iter()
            .rposition(|step| !matches!(step, Step::InsertExclusive(_) | Step::ProjectStatus(_)));
        let at = match last_other {
            Some(i) if matches!(steps[i], Step::Write { .. }) => i,
            _ => {
                let i = last_other.map_or(0, |i| i + 1);
                steps.insert(
                    i,
                    Step::Write {
                        entries: Vec::new(),
                        versions: Vec::new(),
                    },
                );
                merged.clear();
                i
            }
        };
        if let Some(Step::Write { entries, versions }) = steps.get_mut(at) {
            versions.push(Arc::clone(&task.record));
            match merged.get(&task.record.id) {
                Some(&i) => entries[i] = Entry { task, version },
                None => {
                    merged.insert(task.record.id, entries.len());
                    entries.push(Entry { task, version });
                }
            }
        }
    };
    for op in ops {
        match op {
            WriteOp::Insert {
                task,
                ack: Some(ack),
            } => match insert_target(&steps).and_then(|i| steps.get_mut(i)) {
                Some(Step::InsertExclusive(inserts)) => inserts.push((task, ack)),
                _ => steps.push(Step::InsertExclusive(vec![(task, ack)])),
            },
            WriteOp::Insert { task, ack: None } => write(&mut steps, task, 0),
            WriteOp::Put { task, version } => write(&mut steps, task, version),
            WriteOp::Claim { max, ack } => steps.push(Step::Claim(max, ack)),
            WriteOp::Register(ack) => steps.push(Step::Register(ack)),
            WriteOp::Heartbeat { processed, ack } => steps.push(Step::Heartbeat(processed, ack)),
            WriteOp::Reclaim(ack) => steps.push(Step::Reclaim(ack)),
            WriteOp::Revoke { id, terminate, ack } => {
                steps.push(Step::Revoke(id, terminate, ack));
            }
            WriteOp::Release(ack) => steps.push(Step::Release(ack)),
            WriteOp::Flush(done) => flushes.push(done),
            // They touch projects only: one step per batch, wherever it stands.
            WriteOp::ProjectStatus { change, ack } => match steps
                .iter_mut()
                .find(|s| matches!(s, Step::ProjectStatus(_)))
            {
                Some(Step::ProjectStatus(changes)) => changes.push((change, ack)),
                _ => steps.push(Step::ProjectStatus(vec![(change, ack)])),
            },
        }
    }
    (steps, flushes)
}

async fn write_batch(shared: &Shared, conn: &mut Option<PooledConn>, ops: Vec<WriteOp>) {
    let (mut steps, flushes) = plan(ops);
    let mut backoff = Duration::from_millis(50);
    loop {
        match execute(shared, conn, &steps).await {
            Ok(done) => {
                finish(shared, steps, done);
                break;
            }
            Err(err) => {
                tracing::error!(error = %err, "storing task changes failed; retrying");
                // The connection may be what broke: take a fresh one next time.
                *conn = None;
                // Callers waiting on an answer get the error now; changes already made are
                // never dropped: they are tried again until the store takes them.
                let (waiting, kept): (Vec<Step>, Vec<Step>) =
                    steps.into_iter().partition(Step::has_ack);
                waiting.into_iter().for_each(|step| step.fail(&err));
                steps = kept;
                if steps.is_empty() {
                    break;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    for done in flushes {
        let _ = done.send(());
    }
}

/// Runs the steps in one write transaction, with the events and history counts of what the
/// store took; then wakes the event pump.
async fn execute(
    shared: &Shared,
    conn: &mut Option<PooledConn>,
    steps: &[Step],
) -> Result<Vec<Done>> {
    if steps.is_empty() {
        return Ok(Vec::new());
    }
    let conn = match conn {
        Some(conn) => conn,
        None => conn.insert(shared.db.acquire_writer().await?),
    };
    // Gate before BEGIN: other writers of this process wait here, not in SQLite's busy handler.
    let gate = shared.db.write_gate().await;
    let mut tx = conn.begin_write().await?;
    let mut done = Vec::with_capacity(steps.len());
    let mut events: Vec<Arc<TaskRecord>> = Vec::new();
    for step in steps {
        done.push(run_step(shared, tx.conn(), step, &mut events).await?);
    }
    let finished: Vec<Finished> = events.iter().filter_map(|r| Finished::of(r)).collect();
    store::record_finished(tx.conn(), &finished).await?;
    let seqs = store::insert_events(tx.conn(), shared.id(), &events).await?;
    // Under the gate: the event pump either sees these events with the commit or not at all.
    let mut committed = shared.log.committed.lock().await;
    tx.commit().await?;
    drop(gate);
    committed.extend(
        seqs.into_iter()
            .zip(events)
            .map(|(seq, task)| TaskEvent { seq, task }),
    );
    drop(committed);
    shared.log.wake.notify_one();
    Ok(done)
}

async fn run_step(
    shared: &Shared,
    mut tx: Conn<'_>,
    step: &Step,
    events: &mut Vec<Arc<TaskRecord>>,
) -> Result<Done> {
    let me = shared.id();
    Ok(match step {
        Step::Write { entries, versions } => {
            let tasks: Vec<&StoredTask> = entries.iter().map(|e| &e.task).collect();
            let stored = store::update_fenced(tx.reborrow(), &tasks).await?;
            events.extend(
                versions
                    .iter()
                    .filter(|record| stored.contains(&record.id))
                    .cloned(),
            );
            Done::Written(stored)
        }
        Step::InsertExclusive(inserts) => {
            let tasks: Vec<&StoredTask> = inserts.iter().map(|(task, _)| task).collect();
            let stored = store::insert_if_keys_free(tx.reborrow(), &tasks).await?;
            let mut results = Vec::with_capacity(inserts.len());
            for (task, _) in inserts {
                if stored.contains(&task.record.id) {
                    events.push(Arc::clone(&task.record));
                    results.push(Ok(()));
                    continue;
                }
                let key = task.exclusive_key.as_deref().unwrap_or_default();
                let holder = store::exclusive_holder(tx.reborrow(), key)
                    .await?
                    .map_or_else(|| "unknown".into(), |t| format!("{} {}", t.kind, t.id));
                results.push(Err(key_held(key, &holder)));
            }
            Done::Inserted(results)
        }
        Step::Claim(max, _) => Done::Claimed(
            store::claim(
                tx.reborrow(),
                me,
                shared.lease_until(),
                &shared.config.queues,
                *max,
            )
            .await?,
        ),
        Step::Register(_) => {
            store::register_worker(tx.reborrow(), &shared.me, shared.lease_until()).await?;
            Done::Unit
        }
        Step::Heartbeat(processed, _) => {
            let until = shared.lease_until();
            store::renew_leases(tx.reborrow(), me, until).await?;
            store::worker_heartbeat(tx.reborrow(), me, now_millis(), until, *processed).await?;
            Done::Unit
        }
        Step::Reclaim(_) => {
            let retryable: HashSet<String> =
                shared.handlers.retryable_kinds().into_iter().collect();
            let reclaimed = store::reclaim_expired(
                tx.reborrow(),
                now_millis(),
                &retryable,
                shared.config.max_attempts,
            )
            .await?;
            events.extend(reclaimed.retried.iter().cloned());
            events.extend(reclaimed.failed.iter().cloned());
            Done::Reclaimed(reclaimed)
        }
        Step::Revoke(id, terminate, _) => {
            let now = now_millis();
            match store::revoke_queued(tx.reborrow(), *id, now).await? {
                Some(record) => events.push(Arc::new(record)),
                None => {
                    store::request_revoke(tx.reborrow(), *id, *terminate, now).await?;
                }
            }
            Done::Unit
        }
        Step::Release(_) => {
            let released = store::release_reserved(tx.reborrow(), me).await?;
            store::stop_worker(tx.reborrow(), me, now_millis()).await?;
            Done::Released(released)
        }
        Step::ProjectStatus(changes) => {
            let changes: Vec<&StatusChange> = changes.iter().map(|(change, _)| change).collect();
            // A project deleted meanwhile has nothing left to record its status on.
            write_statuses(tx.reborrow(), &changes).await?;
            Done::Unit
        }
    })
}

/// Acts on a committed batch: answers callers, queues what this process now holds, drops from
/// memory what is stored and no longer needed, and stops runs the store refused.
fn finish(shared: &Shared, steps: Vec<Step>, done: Vec<Done>) {
    let me = shared.id();
    for (step, done) in steps.into_iter().zip(done) {
        match (step, done) {
            (Step::Write { entries, .. }, Done::Written(stored)) => {
                let mut live = lock(&shared.live);
                for Entry { task, version } in entries {
                    let id = task.record.id;
                    if !stored.contains(&id) {
                        tracing::warn!(task = %id, "change refused by the store: the task is no longer this worker's");
                        shared.lose(&mut live, id, CancelReason::LeaseLost);
                        continue;
                    }
                    let done_here =
                        task.record.state.is_terminal() || task.owner.as_deref() != Some(me);
                    let latest = live
                        .tasks
                        .get(&id)
                        .is_some_and(|l| l.version <= version && l.run.is_none());
                    if done_here && latest {
                        live.forget(&id);
                    }
                }
            }
            (Step::InsertExclusive(inserts), Done::Inserted(results)) => {
                for ((task, ack), result) in inserts.into_iter().zip(results) {
                    if result.is_ok() && task.owner.as_deref() == Some(me) {
                        // Queued by the writer, not the caller: a caller that gives up after
                        // the commit cannot leave a stored task unqueued.
                        shared.admit_locked(&mut lock(&shared.live), task);
                    }
                    let _ = ack.send(result);
                }
            }
            (Step::Claim(_, ack), Done::Claimed(tasks)) => {
                let count = tasks.len();
                let mut live = lock(&shared.live);
                for task in tasks {
                    shared.admit_locked(&mut live, task);
                }
                drop(live);
                let _ = ack.send(Ok(count));
            }
            (Step::Register(ack) | Step::Heartbeat(_, ack) | Step::Revoke(_, _, ack), _) => {
                let _ = ack.send(Ok(()));
            }
            (Step::ProjectStatus(changes), _) => {
                for (_, ack) in changes {
                    let _ = ack.send(Ok(()));
                }
            }
            (Step::Reclaim(ack), Done::Reclaimed(reclaimed)) => {
                let _ = ack.send(Ok(reclaimed));
            }
            (Step::Release(ack), Done::Released(count)) => {
                let mut live = lock(&shared.live);
                live.tasks.retain(|_, task| {
                    task.run.is_some() || task.stored.record.state != TaskState::Pending
                });
                drop(live);
                let _ = ack.send(Ok(count));
            }
            (step, _) => step.fail(&HubError::Internal("a write step lost its result".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::config::HubMode;
    use crate::tasks::backend::new_task;
    use crate::tasks::{Handlers, JobRequest, TaskConfig};

    fn task(key: Option<&str>) -> StoredTask {
        let job = JobRequest::new("noop", serde_json::Value::Null);
        let config = TaskConfig::default();
        let (record, _) = new_task(
            job,
            &AtomicBool::new(true),
            &config,
            HubMode::Client,
            &Handlers::new(),
        )
        .unwrap_or_else(|err| panic!("{err}"));
        StoredTask {
            record: Arc::new(record),
            exclusive_key: key.map(Into::into),
            owner: Some("me".into()),
            lease_until: None,
            queue_order: 0,
        }
    }

    fn insert(key: &str) -> WriteOp {
        WriteOp::Insert {
            task: task(Some(key)),
            ack: Some(oneshot::channel().0),
        }
    }

    fn finish(mut stored: StoredTask) -> WriteOp {
        Arc::make_mut(&mut stored.record).state = TaskState::Success;
        stored.exclusive_key = None;
        WriteOp::Put {
            task: stored,
            version: 2,
        }
    }

    fn shape(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|step| match step {
                Step::Write { entries, versions } => {
                    format!("write {}/{}", entries.len(), versions.len())
                }
                Step::InsertExclusive(inserts) => format!("insert {}", inserts.len()),
                Step::Claim(..) => "claim".into(),
                Step::ProjectStatus(changes) => format!("status {}", changes.len()),
                _ => "other".into(),
            })
            .collect()
    }

    #[test]
    fn ends_interleaved_with_exclusive_inserts_make_one_write_and_one_insert_step() {
        let running = task(Some("project:1"));
        let started = WriteOp::Put {
            task: running.clone(),
            version: 1,
        };
        let ops = vec![
            insert("project:2"),
            started,
            insert("project:3"),
            finish(running),
            insert("project:4"),
            finish(task(None)),
        ];
        let (steps, _) = plan(ops);
        assert_eq!(shape(&steps), ["write 2/3", "insert 3"]);
    }

    #[test]
    fn a_write_never_goes_before_a_step_that_is_not_an_insert() {
        let (claim, _) = oneshot::channel();
        let ops = vec![
            finish(task(None)),
            insert("project:1"),
            WriteOp::Claim { max: 1, ack: claim },
            insert("project:2"),
            finish(task(None)),
        ];
        let (steps, _) = plan(ops);
        // (The second insert joins the first: a claim frees no key.)
        assert_eq!(
            shape(&steps),
            ["write 1/1", "insert 2", "claim", "write 1/1"]
        );
    }

    /// A change of a task this process holds: nobody waits on it.
    fn put() -> WriteOp {
        WriteOp::Put {
            task: task(None),
            version: 1,
        }
    }

    /// Runs [`linger`] on `first` while `later` arrive at their times (from the start, in
    /// milliseconds: the timer's resolution); what it gathered, and when it let the batch go.
    async fn lingered(first: Vec<WriteOp>, later: Vec<(u64, WriteOp)>) -> (usize, Duration) {
        let start = tokio::time::Instant::now();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let sender = tokio::spawn(async move {
            for (at, op) in later {
                tokio::time::sleep_until(start + Duration::from_millis(at)).await;
                let _ = tx.send(op);
            }
            // Held open past the linger, as the process's senders are.
            tokio::time::sleep(Duration::from_secs(1)).await;
        });
        let mut batch = first;
        linger(&mut rx, &mut batch).await;
        let waited = start.elapsed();
        sender.abort();
        (batch.len(), waited)
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_change_waits_for_what_follows_until_the_linger_ends() {
        // A task's start, then its end 1 ms later: one commit; what comes after the linger
        // goes to the next batch.
        let after = u64::try_from(LINGER.as_millis()).unwrap_or(u64::MAX) + 1;
        let (gathered, waited) = lingered(vec![put()], vec![(1, put()), (after, put())]).await;
        assert_eq!(gathered, 2);
        assert_eq!(waited, LINGER);
    }

    #[tokio::test(start_paused = true)]
    async fn an_op_a_caller_waits_on_ends_the_linger_at_once() {
        let (ack, _answer) = oneshot::channel();
        let admission = WriteOp::Insert {
            task: task(Some("project:1")),
            ack: Some(ack),
        };
        let (gathered, waited) = lingered(vec![put()], vec![(1, admission)]).await;
        assert_eq!(gathered, 2);
        assert_eq!(waited, Duration::from_millis(1));
        assert!(waited < LINGER);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_with_a_waiter_or_a_full_one_is_not_held() {
        let (flushed, _done) = oneshot::channel();
        let batch = vec![put(), WriteOp::Flush(flushed)];
        let (gathered, waited) = lingered(batch, vec![(1, put())]).await;
        assert_eq!((gathered, waited), (2, Duration::ZERO));

        let full: Vec<WriteOp> = (0..LINGER_BELOW).map(|_| put()).collect();
        let (gathered, waited) = lingered(full, vec![(1, put())]).await;
        assert_eq!((gathered, waited), (LINGER_BELOW, Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn a_linger_stops_growing_the_batch_at_its_size() {
        let burst: Vec<(u64, WriteOp)> = (0..2 * LINGER_BELOW).map(|_| (1, put())).collect();
        let (gathered, waited) = lingered(vec![put()], burst).await;
        assert_eq!(gathered, LINGER_BELOW);
        assert_eq!(waited, Duration::from_millis(1));
    }

    #[test]
    fn an_answer_nobody_waits_for_any_more_does_not_count_as_awaited() {
        // `insert` drops the receiver: the caller gave up (e.g. a client that hung up).
        assert!(!insert("project:1").awaited());
        let (ack, _answer) = oneshot::channel();
        assert!(WriteOp::Claim { max: 1, ack }.awaited());
        assert!(!put().awaited());
    }
}
