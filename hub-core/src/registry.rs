//! The project registry: projects and their port leases, stored in the [`Database`].
//!
//! Writes that touch ports hold the [`PortAllocator`] lock for the whole transaction, so that one
//! process never races itself; other processes are kept out by the write transaction and the
//! primary key of `port_leases`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use sqlx::Row;
use tokio::sync::Mutex;

use crate::db::{
    Conn, Database, RowStatements, StoredRow, WriteTransaction, dispatch, from_millis, now_millis,
    statement_chunks,
};
use crate::error::{Entity, HubError, Result};
use crate::paths::Roots;
use crate::ports::{
    BusyPort, PortAllocator, PortConfig, PortRequest, PortRole, PortSet, busy_host_ports,
    is_port_free_on_host, port_from_db, probe_busy,
};
use crate::project::{
    Health, LOCAL_HOST, NewProject, Project, ProjectKey, ProjectPage, ProjectStats, ProjectStatus,
    ProjectUpdate, operation_key, validate_host, validate_name, validate_page_limit, validate_path,
};
use crate::sync::lock;

/// The `role` of an extra port's lease: this prefix, then the mapping's lease key.
const EXTRA_ROLE: &str = "extra:";

/// Stores one lease; binds port, project id, role and host.
const INSERT_LEASE: &str =
    "INSERT INTO port_leases (port, project_id, role, host) VALUES ($1, $2, $3, $4)";

const PROJECT_COLUMNS: &str = "id, name, slug, path, host, backend_port, frontend_port, postgres_port, \
     redis_port, status, health, last_error, created_at, updated_at, last_started, last_stopped";

/// Rows per statement when the whole registry is read.
pub const LIST_CHUNK: usize = 256;

/// Where the chunk after `chunk` of the whole list starts (the id to read after), or `None`
/// when `chunk` ends the list: a chunk short of [`LIST_CHUNK`] is the last.
pub fn next_chunk_after(chunk: &[Project]) -> Option<i64> {
    match chunk.last() {
        Some(last) if chunk.len() == LIST_CHUNK => Some(last.id),
        _ => None,
    }
}

/// The registry of projects.
#[derive(Debug)]
pub struct Registry {
    db: Database,
    allocator: Mutex<PortAllocator>,
    /// Ports proposed to a registration that has not committed yet: probing happens outside
    /// the allocator lock, so concurrent proposals must not pick the same ports meanwhile.
    reserved: Arc<std::sync::Mutex<HashSet<u16>>>,
    roots: Roots,
}

/// Ports reserved by a proposal, released when it is dropped (committed or abandoned).
struct Reservation {
    reserved: Arc<std::sync::Mutex<HashSet<u16>>>,
    ports: Vec<u16>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut reserved = lock(&self.reserved);
        for port in &self.ports {
            reserved.remove(port);
        }
    }
}

impl Registry {
    /// Opens the registry on `db`, laying ports out as `ports` says; project folders must lie
    /// inside `roots`.
    pub async fn open(db: Database, ports: PortConfig, roots: Roots) -> Result<Self> {
        let mut allocator = PortAllocator::new(ports)?;
        let mut conn = db.acquire().await?;
        allocator.reload(conn.conn()).await?;
        drop(conn);
        Ok(Registry {
            db,
            allocator: Mutex::new(allocator),
            reserved: Arc::default(),
            roots,
        })
    }

    /// The database behind the registry.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Checks a project folder off the async threads (it reads the file system).
    async fn checked_path(&self, path: PathBuf) -> Result<String> {
        let roots = self.roots.clone();
        let canonical = tokio::task::spawn_blocking(move || validate_path(&path, &roots))
            .await
            .map_err(|err| HubError::Internal(format!("path check failed: {err}")))??;
        path_text(&canonical)
    }

    /// The port layout in use.
    pub async fn port_config(&self) -> PortConfig {
        self.allocator.lock().await.config().clone()
    }

    /// Registers a project: validates name and path, allocates ports, stores everything in one
    /// transaction.
    pub async fn create(&self, new: NewProject) -> Result<Project> {
        let (name, slug) = validate_name(&new.name)?;
        let path = self.checked_path(new.path).await?;
        let host = validate_host(new.host.as_deref().unwrap_or(LOCAL_HOST))?;
        // Ports are probed where this process runs: only meaningful for the local engine.
        let probe = host == LOCAL_HOST;

        let (proposed, _reservation) = self.propose(&host, new.ports, None, probe).await?;
        let mut allocator = self.allocator.lock().await;
        let mut tx = self.db.begin_write().await?;
        ensure_unique(tx.conn(), &name, &slug, &path, None).await?;
        let ports = self
            .confirm_holding_lock(&mut allocator, &mut tx, &host, new.ports, proposed, probe)
            .await?;
        let now = now_millis();
        let id: i64 = dispatch!(tx.conn(), tx => sqlx::query_scalar(
            "INSERT INTO projects (name, slug, path, backend_port, frontend_port, postgres_port, \
             redis_port, status, health, created_at, updated_at, host, containers_created) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, FALSE) RETURNING id",
        )
        .bind(&name)
        .bind(&slug)
        .bind(&path)
        .bind(i64::from(ports.backend))
        .bind(i64::from(ports.frontend))
        .bind(i64::from(ports.postgres))
        .bind(i64::from(ports.redis))
        .bind(ProjectStatus::Stopped.as_str())
        .bind(Health::Unknown.as_str())
        .bind(now)
        .bind(&host)
        .fetch_one(&mut *tx)
        .await
        .map_err(|err| unique_violation(err, &name, &slug, &path))?);
        insert_leases(tx.conn(), id, &host, &ports).await?;
        let project = fetch(tx.conn(), &ProjectKey::Id(id)).await?;
        tx.commit().await?;
        allocator.commit(None, Some((&host, &ports)));
        tracing::info!(id, %slug, %host, ?ports, "project registered");
        Ok(project)
    }

    /// Confirms `proposed` inside `tx`. When another process leased some of it meanwhile, the
    /// allocator's view was stale; it is reloaded, and a new proposal made from it cannot go
    /// stale again while `tx` holds the write lock. Proposing again from scratch instead would
    /// race the other process to the same lowest free slot, round after round.
    async fn confirm_holding_lock(
        &self,
        allocator: &mut PortAllocator,
        tx: &mut WriteTransaction,
        host: &str,
        request: PortRequest,
        mut proposed: PortSet,
        probe: bool,
    ) -> Result<PortSet> {
        let probes = probe && allocator.probes_host();
        let mut busy: HashSet<u16> = HashSet::new();
        // Each round either confirms or finds a busy port to skip from then on.
        for _ in 0..64 {
            if let Some(ports) = allocator
                .confirm(tx.conn(), host, request, proposed, None)
                .await?
            {
                return Ok(ports);
            }
            loop {
                let exclude: HashSet<u16> = busy.union(&lock(&self.reserved)).copied().collect();
                proposed = allocator.propose(host, request, &exclude)?;
                if !probes {
                    break;
                }
                let found = probe_busy(ports_to_probe(allocator, host, &proposed, None)).await?;
                if found.is_empty() {
                    break;
                }
                requested_port_free(request, &found)?;
                busy.extend(found);
            }
        }
        Err(HubError::PortUnavailable {
            message: "port leases keep changing under the allocator; try again".into(),
        })
    }

    /// The ports a project registered now would get (with `request` honoured), without
    /// registering it.
    pub async fn preview_ports(&self, request: PortRequest) -> Result<PortSet> {
        let mut attempt = 0;
        loop {
            let (proposed, _reservation) = self.propose(LOCAL_HOST, request, None, true).await?;
            let mut allocator = self.allocator.lock().await;
            let mut conn = self.db.acquire().await?;
            if let Some(ports) = allocator
                .confirm(conn.conn(), LOCAL_HOST, request, proposed, None)
                .await?
            {
                return Ok(ports);
            }
            attempt = retry_after_stale(attempt)?;
        }
    }

    /// Proposes ports for `request` and probes them on the host, outside the allocator lock
    /// and any transaction, until a proposal passes. `own` are ports the project holds already:
    /// busy because its own stack runs is fine. `host` is the Docker host the ports are for.
    async fn propose(
        &self,
        host: &str,
        request: PortRequest,
        own: Option<&PortSet>,
        probe: bool,
    ) -> Result<(PortSet, Reservation)> {
        let mut busy = HashSet::new();
        loop {
            let (proposed, probes, reservation, unowned) = {
                let allocator = self.allocator.lock().await;
                let mut reserved = lock(&self.reserved);
                let exclude: HashSet<u16> = busy.union(&reserved).copied().collect();
                let proposed = allocator.propose(host, request, &exclude)?;
                let ports: Vec<u16> = proposed.iter().map(|(_, port)| port).collect();
                reserved.extend(ports.iter().copied());
                let unowned = ports_to_probe(&allocator, host, &proposed, own);
                let reservation = Reservation {
                    reserved: self.reserved.clone(),
                    ports,
                };
                (proposed, allocator.probes_host(), reservation, unowned)
            };
            if !probes || !probe {
                return Ok((proposed, reservation));
            }
            let found = probe_busy(unowned).await?;
            if found.is_empty() {
                return Ok((proposed, reservation));
            }
            requested_port_free(request, &found)?;
            // Skipped from now on; the search moves to the next slot.
            busy.extend(found);
        }
    }

    /// The project named by `key` (id or slug).
    pub async fn get(&self, key: impl Into<ProjectKey>) -> Result<Project> {
        let mut conn = self.db.acquire().await?;
        fetch(conn.conn(), &key.into()).await
    }

    /// Project `id` for an operation on its stack, and whether the hub may have created a
    /// container or the stack's network for it (see [`Registry::note_containers_created`]). An
    /// operation on a project it never created one for need not ask the engine: their label
    /// holds the project's id, which is never reused.
    pub(crate) async fn get_for_operation(&self, id: i64) -> Result<(Project, bool)> {
        let mut conn = self.db.acquire().await?;
        dispatch!(conn.conn(), conn => {
            let row = sqlx::query(&format!(
                "SELECT {PROJECT_COLUMNS}, containers_created FROM projects WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
            match row {
                Some(row) => Ok((
                    project_from_row(&row)?,
                    StoredRow::get(&row, "containers_created")?,
                )),
                None => Err(HubError::not_found(Entity::Project, ProjectKey::Id(id))),
            }
        })
    }

    /// Records, in a transaction of its own, that the hub is about to create containers (or
    /// the stack's network) for project `id`. Committed before the first one exists, so that an
    /// operation which skips asking the engine (see [`Registry::get_for_operation`]) never
    /// misses one, even after a crash. Never cleared.
    pub(crate) async fn note_containers_created(&self, id: i64) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        dispatch!(tx.conn(), tx => {
            sqlx::query("UPDATE projects SET containers_created = TRUE WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        });
        tx.commit().await?;
        Ok(())
    }

    /// Every project, ordered by id. Read [`LIST_CHUNK`] rows at a time: the driver copies
    /// every value of a row, and thousands of rows at once cost megabytes the allocator then
    /// keeps. Each chunk is its own statement: a project created or deleted meanwhile may be
    /// listed or not, and none is listed twice (the chunks follow the id).
    pub async fn list(&self) -> Result<Vec<Project>> {
        let mut projects: Vec<Project> = Vec::new();
        let mut after = Some(0);
        while let Some(id) = after {
            let chunk = self.list_after(id).await?;
            after = next_chunk_after(&chunk);
            projects.extend(chunk);
        }
        Ok(projects)
    }

    /// One chunk of [`Registry::list`]: at most [`LIST_CHUNK`] projects with an id above
    /// `after`, ordered by id. [`next_chunk_after`] says where the next one starts.
    pub async fn list_after(&self, after: i64) -> Result<Vec<Project>> {
        let sql = format!(
            "SELECT {PROJECT_COLUMNS} FROM projects WHERE id > $1 ORDER BY id LIMIT {LIST_CHUNK}"
        );
        dispatch!(self.db.pool(), pool => sqlx::query(&sql)
            .bind(after)
            .fetch_all(pool)
            .await?
            .iter()
            .map(project_from_row)
            .collect())
    }

    /// How many projects are registered.
    pub async fn count(&self) -> Result<u64> {
        dispatch!(self.db.pool(), pool => {
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM projects")
                .fetch_one(pool)
                .await?;
            Ok(u64::try_from(count).unwrap_or(0))
        })
    }

    /// The projects whose status is `status`, ordered by id.
    pub async fn with_status(&self, status: ProjectStatus) -> Result<Vec<Project>> {
        let sql = format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE status = $1 ORDER BY id");
        dispatch!(self.db.pool(), pool => sqlx::query(&sql)
            .bind(status.as_str())
            .fetch_all(pool)
            .await?
            .iter()
            .map(project_from_row)
            .collect())
    }

    /// One page of projects, ordered by id: `limit` (1 to [`crate::project::MAX_PROJECT_PAGE`]) after
    /// `offset`, with the total.
    pub async fn page(&self, limit: u32, offset: u32) -> Result<ProjectPage> {
        validate_page_limit(limit)?;
        let sql = format!("SELECT {PROJECT_COLUMNS} FROM projects ORDER BY id LIMIT $1 OFFSET $2");
        let projects = async {
            dispatch!(self.db.pool(), pool => sqlx::query(&sql)
                .bind(i64::from(limit))
                .bind(i64::from(offset))
                .fetch_all(pool)
                .await?
                .iter()
                .map(project_from_row)
                .collect::<Result<Vec<_>>>())
        };
        let (projects, total) = tokio::try_join!(projects, self.count())?;
        Ok(ProjectPage { projects, total })
    }

    /// Changes name (and so slug), path or ports. Unchanged fields stay as they are.
    pub async fn update(
        &self,
        key: impl Into<ProjectKey>,
        update: ProjectUpdate,
    ) -> Result<Project> {
        let key = key.into();
        let renamed = update.name.as_deref().map(validate_name).transpose()?;
        let moved = match update.path {
            Some(path) => Some(self.checked_path(path).await?),
            None => None,
        };
        let rehosted = update.host.as_deref().map(validate_host).transpose()?;

        // New ports are proposed and probed before the lock and the transaction; every role is
        // requested (the unchanged ones keep theirs), so confirming checks them all.
        let before = self.get(key.clone()).await?;
        // Ports are unique per host: a project that moves gets a set on its new host (the
        // ports asked for, the lowest free slot for the rest).
        let rehosting = rehosted.as_deref().is_some_and(|host| host != before.host);
        let wanted = if rehosting {
            Some(update.ports)
        } else {
            (!update.ports.is_empty()).then(|| update.ports.or(before.ports.into()))
        };
        let (proposed, _reservation) = match wanted {
            Some(wanted) => {
                let host = rehosted.as_deref().unwrap_or(&before.host);
                let own = (!rehosting).then_some(&before.ports);
                let (ports, reservation) =
                    self.propose(host, wanted, own, host == LOCAL_HOST).await?;
                (Some(ports), Some(reservation))
            }
            None => (None, None),
        };

        let mut allocator = self.allocator.lock().await;
        let mut tx = self.db.begin_write().await?;
        let current = fetch(tx.conn(), &key).await?;
        if current.id != before.id || current.ports != before.ports {
            return Err(HubError::Conflict {
                message: format!(
                    "project '{}' changed while this update was prepared; try again",
                    current.slug
                ),
            });
        }
        let (name, slug) = renamed.unwrap_or((current.name.clone(), current.slug.clone()));
        let path = match moved {
            Some(path) => path,
            None => path_text(&current.path)?,
        };
        // Containers are named after the slug, bind the folder and publish the ports: none of
        // them may change under a stack that runs, or one that an operation is changing.
        let mut changing = Vec::new();
        if slug != current.slug {
            changing.push("name");
        }
        if path != path_text(&current.path)? {
            changing.push("path");
        }
        if !update.ports.is_empty() {
            changing.push("ports");
        }
        let host = rehosted.unwrap_or_else(|| current.host.clone());
        if host != current.host {
            changing.push("host");
        }
        if !changing.is_empty() {
            let doing = format!("change its {}", changing.join(", "));
            if matches!(
                current.status,
                ProjectStatus::Running | ProjectStatus::Starting | ProjectStatus::Stopping
            ) {
                return Err(HubError::Conflict {
                    message: format!(
                        "project '{}' is {}; stop it before you {doing}",
                        current.slug, current.status
                    ),
                });
            }
            ensure_no_operation(tx.conn(), &current, &doing).await?;
        }
        ensure_unique(tx.conn(), &name, &slug, &path, Some(current.id)).await?;

        let ports = match (wanted, proposed) {
            (Some(wanted), Some(proposed)) => allocator
                .confirm(tx.conn(), &host, wanted, proposed, Some(current.id))
                .await?
                .ok_or_else(|| HubError::PortUnavailable {
                    message: "port leases changed while this update was prepared; try again".into(),
                })?,
            _ => current.ports,
        };

        let moving = host != current.host;
        let leases_change = moving || ports != current.ports;
        // A project that moves keeps no extra port: they are leased on its new host at its
        // next start.
        let moved_extras: Vec<u16> = if moving {
            extra_leases(tx.conn(), current.id)
                .await?
                .into_values()
                .collect()
        } else {
            Vec::new()
        };
        dispatch!(tx.conn(), tx => {
            sqlx::query(
                "UPDATE projects SET name = $1, slug = $2, path = $3, backend_port = $4, \
                 frontend_port = $5, postgres_port = $6, redis_port = $7, updated_at = $8, \
                 host = $10 WHERE id = $9",
            )
            .bind(&name)
            .bind(&slug)
            .bind(&path)
            .bind(i64::from(ports.backend))
            .bind(i64::from(ports.frontend))
            .bind(i64::from(ports.postgres))
            .bind(i64::from(ports.redis))
            .bind(now_millis())
            .bind(current.id)
            .bind(&host)
            .execute(&mut *tx)
            .await
            .map_err(|err| unique_violation(err, &name, &slug, &path))?;
            if leases_change {
                let released = if moving {
                    "DELETE FROM port_leases WHERE project_id = $1"
                } else {
                    "DELETE FROM port_leases WHERE project_id = $1 AND role NOT LIKE 'extra:%'"
                };
                sqlx::query(released).bind(current.id).execute(&mut *tx).await?;
            }
        });
        if leases_change {
            insert_leases(tx.conn(), current.id, &host, &ports).await?;
        }
        let project = fetch(tx.conn(), &ProjectKey::Id(current.id)).await?;
        tx.commit().await?;
        allocator.commit(Some((&current.host, &current.ports)), Some((&host, &ports)));
        allocator.commit_extra(&current.host, &moved_extras, &[]);
        Ok(project)
    }

    /// Removes a project and releases its ports. Returns the removed project.
    pub async fn delete(&self, key: impl Into<ProjectKey>) -> Result<Project> {
        let key = key.into();
        let mut allocator = self.allocator.lock().await;
        let mut tx = self.db.begin_write().await?;
        let project = fetch(tx.conn(), &key).await?;
        // Checked in the deleting transaction, so no operation can begin in between.
        ensure_no_operation(tx.conn(), &project, "delete it").await?;
        let extras: Vec<u16> = extra_leases(tx.conn(), project.id)
            .await?
            .into_values()
            .collect();
        // Leases go with the project (ON DELETE CASCADE); deleting them first keeps that true
        // on connections where foreign keys are off.
        dispatch!(tx.conn(), tx => {
            sqlx::query("DELETE FROM port_leases WHERE project_id = $1")
                .bind(project.id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM projects WHERE id = $1")
                .bind(project.id)
                .execute(&mut *tx)
                .await?;
        });
        tx.commit().await?;
        allocator.commit(Some((&project.host, &project.ports)), None);
        allocator.commit_extra(&project.host, &extras, &[]);
        tracing::info!(id = project.id, slug = %project.slug, "project deleted, ports released");
        Ok(project)
    }

    /// Counts of projects by status.
    pub async fn stats(&self) -> Result<ProjectStats> {
        type Counts = (i64, Option<i64>, Option<i64>, Option<i64>);
        let (total, running, stopped, errors): Counts = dispatch!(self.db.pool(), pool => {
            sqlx::query_as(
                "SELECT COUNT(*), \
                 CAST(SUM(CASE WHEN status = 'running' THEN 1 ELSE 0 END) AS BIGINT), \
                 CAST(SUM(CASE WHEN status = 'stopped' THEN 1 ELSE 0 END) AS BIGINT), \
                 CAST(SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END) AS BIGINT) FROM projects",
            )
            .fetch_one(pool)
            .await?
        });
        let count = |value: Option<i64>| u64::try_from(value.unwrap_or(0)).unwrap_or(0);
        Ok(ProjectStats {
            total_projects: count(Some(total)),
            running: count(running),
            stopped: count(stopped),
            errors: count(errors),
        })
    }

    /// The project's extra ports (published ports beyond its four roles), by lease key.
    pub async fn extra_ports(&self, project_id: i64) -> Result<BTreeMap<String, u16>> {
        let mut conn = self.db.acquire().await?;
        extra_leases(conn.conn(), project_id).await
    }

    /// Makes the project hold an extra port for each of `keys`: a key it holds keeps its port,
    /// a new one gets the lowest free port from `extra_base` up (free on the host too, for a
    /// local project). With `release_others`, leases for keys not in `keys` are given back.
    /// Returns the project's extra ports after the change.
    pub async fn lease_extra_ports(
        &self,
        project: &Project,
        keys: &[String],
        release_others: bool,
    ) -> Result<BTreeMap<String, u16>> {
        let probe = project.host == LOCAL_HOST;
        let mut attempt = 0;
        loop {
            let mut allocator = self.allocator.lock().await;
            let mut tx = self.db.begin_write().await?;
            let mut held = extra_leases(tx.conn(), project.id).await?;
            let stale: Vec<(String, u16)> = held
                .iter()
                .filter(|(key, _)| release_others && !keys.contains(key))
                .map(|(key, port)| (key.clone(), *port))
                .collect();
            let mut missing: Vec<&String> =
                keys.iter().filter(|key| !held.contains_key(*key)).collect();
            missing.dedup();
            if missing.is_empty() && stale.is_empty() {
                return Ok(held);
            }
            for (key, _) in &stale {
                dispatch!(tx.conn(), tx => {
                    sqlx::query("DELETE FROM port_leases WHERE project_id = $1 AND role = $2")
                        .bind(project.id)
                        .bind(format!("{EXTRA_ROLE}{key}"))
                        .execute(&mut *tx)
                        .await?;
                });
                held.remove(key);
            }
            let reserved = lock(&self.reserved).clone();
            let probes = probe && allocator.probes_host();
            let candidates = allocator.extra_candidates(&project.host, missing.len(), |port| {
                reserved.contains(&port) || (probes && !is_port_free_on_host(port))
            })?;
            let mut taken_meanwhile = false;
            for (key, port) in missing.iter().zip(&candidates) {
                let inserted = dispatch!(tx.conn(), tx => {
                    sqlx::query(INSERT_LEASE)
                        .bind(i64::from(*port))
                        .bind(project.id)
                        .bind(format!("{EXTRA_ROLE}{key}"))
                        .bind(&project.host)
                        .execute(&mut *tx)
                        .await
                        .map(|_| ())
                });
                match inserted {
                    Ok(_) => {
                        held.insert((*key).clone(), *port);
                    }
                    // Another process leased it since this allocator last looked.
                    Err(sqlx::Error::Database(err)) if err.is_unique_violation() => {
                        taken_meanwhile = true;
                        break;
                    }
                    Err(err) => return Err(err.into()),
                }
            }
            if taken_meanwhile {
                allocator.reload(tx.conn()).await?;
                drop(tx);
                attempt = retry_after_stale(attempt)?;
                continue;
            }
            tx.commit().await?;
            let released: Vec<u16> = stale.iter().map(|(_, port)| *port).collect();
            allocator.commit_extra(&project.host, &released, &candidates);
            tracing::info!(project = %project.slug, leased = ?candidates, ?released, "extra ports");
            return Ok(held);
        }
    }

    /// Which of the project's ports are busy on the host right now (checked before a start).
    pub async fn check_ports(&self, key: impl Into<ProjectKey>) -> Result<Vec<BusyPort>> {
        let project = self.get(key).await?;
        busy_host_ports(&project.ports).await
    }

    /// Records a lifecycle change of a project's stack. `error` is kept as `last_error` when the
    /// status is `error` and cleared otherwise; reaching `running` or `stopped` stamps
    /// `last_started` / `last_stopped`.
    pub async fn set_status(
        &self,
        id: i64,
        status: ProjectStatus,
        health: Health,
        error: Option<&str>,
    ) -> Result<()> {
        self.apply_status(&StatusChange::new(id, status, health, error))
            .await
    }

    /// Records `change` in a transaction of its own.
    pub async fn apply_status(&self, change: &StatusChange) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        if !write_status(tx.conn(), change).await? {
            return Err(HubError::not_found(Entity::Project, change.project_id));
        }
        tx.commit().await?;
        Ok(())
    }
}

/// A lifecycle change of a project's stack, as [`Registry::set_status`] records it; task
/// handlers may hand it to their backend's writer instead, to be stored with the task's own
/// changes (see [`crate::tasks::TaskContext::record_project_status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    /// The project.
    pub project_id: i64,
    /// Its new status.
    pub status: ProjectStatus,
    /// Its new health.
    pub health: Health,
    /// `last_error`, kept only with status `error`.
    pub error: Option<String>,
    /// When it happened (Unix milliseconds).
    pub at: i64,
}

impl StatusChange {
    /// A change happening now.
    pub fn new(
        project_id: i64,
        status: ProjectStatus,
        health: Health,
        error: Option<&str>,
    ) -> Self {
        StatusChange {
            project_id,
            status,
            health,
            error: error
                .filter(|_| status == ProjectStatus::Error)
                .map(str::to_owned),
            at: now_millis(),
        }
    }
}

/// Writes `change` on `conn` (inside the caller's transaction); `false` when the project does
/// not exist.
async fn write_status(conn: Conn<'_>, change: &StatusChange) -> Result<bool> {
    Ok(write_statuses(conn, &[change]).await? > 0)
}

/// Writes `changes`, in order, on `conn` (inside the caller's transaction), one statement per
/// [`statement_chunks`] chunk of the projects changed: each project ends as its last change
/// says, its `last_started` / `last_stopped` stamped by its latest `running` / `stopped`, as one
/// statement per change would leave it. Returns how many projects were found.
pub(crate) async fn write_statuses(conn: Conn<'_>, changes: &[&StatusChange]) -> Result<u64> {
    let mut last: BTreeMap<i64, (&StatusChange, Option<i64>, Option<i64>)> = BTreeMap::new();
    for change in changes {
        let entry = last
            .entry(change.project_id)
            .or_insert((change, None, None));
        entry.0 = change;
        match change.status {
            ProjectStatus::Running => entry.1 = Some(change.at),
            ProjectStatus::Stopped => entry.2 = Some(change.at),
            _ => {}
        }
    }
    static UPDATE_STATUSES: RowStatements = RowStatements::new(7, |_, values| {
        format!(
            "WITH v (id, status, health, last_error, at, started, stopped) AS (VALUES {values}) \
             UPDATE projects SET status = v.status, health = v.health, \
             last_error = v.last_error, updated_at = v.at, \
             last_started = COALESCE(v.started, projects.last_started), \
             last_stopped = COALESCE(v.stopped, projects.last_stopped) \
             FROM v WHERE projects.id = v.id"
        )
    });
    let last: Vec<_> = last.into_iter().collect();
    let dialect = conn.dialect();
    let mut found = 0;
    dispatch!(conn, conn => {
        for chunk in statement_chunks(&last) {
            let sql = UPDATE_STATUSES.get(dialect, chunk.len());
            let mut query = sqlx::query_with(&sql, UPDATE_STATUSES.arguments(chunk.len()));
            for (id, (change, started, stopped)) in chunk {
                query = query
                    .bind(*id)
                    .bind(change.status.as_str())
                    .bind(change.health.as_str())
                    .bind(change.error.as_deref())
                    .bind(change.at)
                    .bind(*started)
                    .bind(*stopped);
            }
            found += query.execute(&mut *conn).await?.rows_affected();
        }
        Ok(found)
    })
}

fn path_text(path: &Path) -> Result<String> {
    path.to_str().map(str::to_owned).ok_or_else(|| {
        HubError::invalid("path", format!("'{}' is not valid UTF-8", path.display()))
    })
}

async fn insert_leases(conn: Conn<'_>, project_id: i64, host: &str, ports: &PortSet) -> Result<()> {
    dispatch!(conn, conn => {
        for (role, port) in ports.iter() {
            sqlx::query(INSERT_LEASE)
                .bind(i64::from(port))
                .bind(project_id)
                .bind(role.as_str())
                .bind(host)
                .execute(&mut *conn)
                .await
                .map_err(|err| match &err {
                    sqlx::Error::Database(db) if db.is_unique_violation() => {
                        HubError::PortUnavailable {
                            message: format!(
                                "{} port {port} was taken by another process meanwhile; try again",
                                role.title()
                            ),
                        }
                    }
                    _ => HubError::Database(err),
                })?;
        }
        Ok(())
    })
}

/// The extra-port leases of a project, by lease key.
async fn extra_leases(conn: Conn<'_>, project_id: i64) -> Result<BTreeMap<String, u16>> {
    dispatch!(conn, conn => {
        let rows = sqlx::query(
            "SELECT role, port FROM port_leases WHERE project_id = $1 AND role LIKE 'extra:%'",
        )
        .bind(project_id)
        .fetch_all(&mut *conn)
        .await?;
        let mut leases = BTreeMap::new();
        for row in rows {
            let role: String = row.try_get(0)?;
            let key = role.strip_prefix(EXTRA_ROLE).unwrap_or(&role).to_owned();
            leases.insert(key, port_from_db(row.try_get(1)?)?);
        }
        Ok(leases)
    })
}

/// Fails with `already_exists` naming the first of name, slug or path another project has.
async fn ensure_unique(
    conn: Conn<'_>,
    name: &str,
    slug: &str,
    path: &str,
    except: Option<i64>,
) -> Result<()> {
    dispatch!(conn, conn => {
        let rows = sqlx::query(
            "SELECT name, slug, path FROM projects \
             WHERE (name = $1 OR slug = $2 OR path = $3) AND id <> $4",
        )
        .bind(name)
        .bind(slug)
        .bind(path)
        .bind(except.unwrap_or(-1))
        .fetch_all(&mut *conn)
        .await?;
        for row in rows {
            let (other_name, other_slug, other_path): (String, String, String) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            if other_name == name {
                return Err(HubError::AlreadyExists {
                    field: "name",
                    value: name.into(),
                });
            }
            if other_slug == slug {
                return Err(HubError::AlreadyExists {
                    field: "slug",
                    value: slug.into(),
                });
            }
            if other_path == path {
                return Err(HubError::AlreadyExists {
                    field: "path",
                    value: path.into(),
                });
            }
        }
        Ok(())
    })
}

/// Maps a unique-constraint failure that slipped past [`ensure_unique`] (another process won a
/// race) to `already_exists`.
fn unique_violation(err: sqlx::Error, name: &str, slug: &str, path: &str) -> HubError {
    if let sqlx::Error::Database(db) = &err
        && db.is_unique_violation()
    {
        let message = db.message();
        let (field, value) = if message.contains("slug") {
            ("slug", slug)
        } else if message.contains("path") {
            ("path", path)
        } else {
            ("name", name)
        };
        return HubError::AlreadyExists {
            field,
            value: value.into(),
        };
    }
    HubError::Database(err)
}

/// The ports of `proposed` worth probing on the host: not the project's own (`own`: they may
/// be busy with its own stack), nor held by another project (a requested one is a
/// `port_conflict` naming its holder, decided at confirm).
fn ports_to_probe(
    allocator: &PortAllocator,
    host: &str,
    proposed: &PortSet,
    own: Option<&PortSet>,
) -> Vec<u16> {
    let owned = |port: u16| own.is_some_and(|own| own.iter().any(|(_, o)| o == port));
    proposed
        .iter()
        .map(|(_, port)| port)
        .filter(|port| !owned(*port) && !allocator.is_held(host, *port))
        .collect()
}

/// Fails with `port_unavailable` when a port `request` asks for by number is among `busy`
/// (bound on this host by another process): no other port would do.
fn requested_port_free(request: PortRequest, busy: &[u16]) -> Result<()> {
    for role in PortRole::ALL {
        if let Some(port) = request.get(role)
            && busy.contains(&port)
        {
            return Err(HubError::PortUnavailable {
                message: format!(
                    "{} port {port} is in use on this host by another process",
                    role.title()
                ),
            });
        }
    }
    Ok(())
}

/// The next attempt after a stale port view, or an error after a few: other processes keep
/// taking the ports proposed.
fn retry_after_stale(attempt: u32) -> Result<u32> {
    if attempt >= 8 {
        return Err(HubError::PortUnavailable {
            message: "port leases keep changing under the allocator; try again".into(),
        });
    }
    Ok(attempt + 1)
}

/// Fails with `conflict` when an unfinished task holds `project`'s operation key. Run inside
/// the write transaction that depends on it: the task store shares the database, so the check
/// and the change are one step and no operation can be submitted in between.
async fn ensure_no_operation(conn: Conn<'_>, project: &Project, doing: &str) -> Result<()> {
    dispatch!(conn, conn => {
        let held: Option<String> =
            sqlx::query_scalar("SELECT id FROM tasks WHERE exclusive_key = $1")
                .bind(operation_key(project.id))
                .fetch_optional(&mut *conn)
                .await?;
        if let Some(task) = held {
            return Err(HubError::Conflict {
                message: format!(
                    "task {task} is still working on project '{}'; wait for it or revoke it before \
                     you {doing}",
                    project.slug
                ),
            });
        }
        Ok(())
    })
}

async fn fetch(conn: Conn<'_>, key: &ProjectKey) -> Result<Project> {
    dispatch!(conn, conn => {
        let row = match key {
            ProjectKey::Id(id) => {
                sqlx::query(&format!(
                    "SELECT {PROJECT_COLUMNS} FROM projects WHERE id = $1"
                ))
                .bind(*id)
                .fetch_optional(&mut *conn)
                .await?
            }
            // Slugs are lowercase, so `ALPHA` finds `alpha`.
            ProjectKey::Slug(slug) => {
                sqlx::query(&format!(
                    "SELECT {PROJECT_COLUMNS} FROM projects WHERE slug = $1"
                ))
                .bind(slug.to_lowercase())
                .fetch_optional(&mut *conn)
                .await?
            }
        };
        match row {
            Some(row) => project_from_row(&row),
            None => Err(HubError::not_found(Entity::Project, key)),
        }
    })
}

fn project_from_row(row: &impl StoredRow) -> Result<Project> {
    let optional_time = |column: &str| -> Result<Option<chrono::DateTime<Utc>>> {
        row.get::<Option<i64>, _>(column)?
            .map(from_millis)
            .transpose()
    };
    Ok(Project {
        id: row.get("id")?,
        name: row.get("name")?,
        slug: row.get("slug")?,
        path: row.get::<String, _>("path")?.into(),
        host: row.get("host")?,
        ports: PortSet {
            backend: port_from_db(row.get("backend_port")?)?,
            frontend: port_from_db(row.get("frontend_port")?)?,
            postgres: port_from_db(row.get("postgres_port")?)?,
            redis: port_from_db(row.get("redis_port")?)?,
        },
        status: row.get::<String, _>("status")?.parse()?,
        health: row.get::<String, _>("health")?.parse()?,
        last_error: row.get("last_error")?,
        created_at: from_millis(row.get("created_at")?)?,
        updated_at: from_millis(row.get("updated_at")?)?,
        last_started: optional_time("last_started")?,
        last_stopped: optional_time("last_stopped")?,
    })
}
