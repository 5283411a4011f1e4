//! The database the registry and the in-process task queue share.
//!
//! Everything goes through sqlx's `Any` driver with portable SQL (`$n` placeholders, `BIGINT`
//! timestamps in Unix milliseconds), so the same code serves the embedded SQLite file and, when
//! several hosts share one registry, PostgreSQL. Only what truly differs — connection pragmas,
//! the statement that opens a write transaction, migrations — is chosen per [`Dialect`].

use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Once};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

use crate::error::{HubError, Result};

/// Which SQL engine is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// An embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server (shared by several hosts).
    Postgres,
}

impl Dialect {
    /// The statement that opens a transaction holding the write lock from its start (SQLite's
    /// `BEGIN IMMEDIATE`; a deferred transaction that reads and then writes fails with
    /// `SQLITE_BUSY` when another connection wrote between).
    pub fn begin_write_statement(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        }
    }
}

/// A connection pool plus the dialect it speaks.
#[derive(Debug, Clone)]
pub struct Database {
    pool: AnyPool,
    dialect: Dialect,
    url: String,
    /// One writer at a time in this process. SQLite lets one connection write; another that
    /// tries meanwhile sleeps in its busy handler (1, 2, 5, 10 … ms) even if the lock frees
    /// a few microseconds later. Waiting here instead wakes the next writer at once; the busy
    /// handler is left to decide between processes.
    write_gate: Arc<tokio::sync::Mutex<()>>,
    /// Stops the background checkpoints once the last clone is gone (they hold a pool handle,
    /// which would otherwise keep the pool open forever).
    _checkpoints: Option<Arc<AbortOnDrop>>,
}

/// Aborts a background task when dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A transaction that holds the write lock, and this process's write gate until it ends.
/// Derefs to its connection (`.execute(&mut *tx)`).
#[derive(Debug)]
pub struct WriteTransaction {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    _gate: tokio::sync::OwnedMutexGuard<()>,
}

impl WriteTransaction {
    /// Commits; the gate opens after.
    pub async fn commit(self) -> Result<()> {
        Ok(self.tx.commit().await?)
    }
}

impl std::ops::Deref for WriteTransaction {
    type Target = sqlx::AnyConnection;

    fn deref(&self) -> &sqlx::AnyConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTransaction {
    fn deref_mut(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }
}

static INSTALL_DRIVERS: Once = Once::new();

impl Database {
    /// The URL of the SQLite file at `path` (created on first use).
    pub fn sqlite_url(path: &Path) -> String {
        format!("sqlite://{}?mode=rwc", path.display())
    }

    /// Opens (and creates, for SQLite) the database at `url` and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Self> {
        INSTALL_DRIVERS.call_once(sqlx::any::install_default_drivers);
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Dialect::Postgres
        } else {
            return Err(HubError::invalid(
                "database_url",
                format!("'{}' is neither a sqlite: nor a postgres: URL", redact(url)),
            ));
        };
        if dialect == Dialect::Sqlite {
            create_parent_dir(url)?;
        }
        let options = AnyConnectOptions::from_str(url).map_err(|err| {
            HubError::invalid("database_url", format!("'{}': {err}", redact(url)))
        })?;
        let pool = AnyPoolOptions::new()
            .max_connections(if dialect == Dialect::Sqlite { 8 } else { 16 })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        // WAL lets readers run beside the single writer; NORMAL sync is durable
                        // across application crashes, which is what a local registry needs.
                        // A small page cache per connection (2 MB) and no mmap: the OS caches
                        // the file once for all of them, and the hub's memory stays small.
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; \
                             PRAGMA cache_size = -2048; PRAGMA mmap_size = 0; \
                             PRAGMA wal_autocheckpoint = 100000;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|err| HubError::BackendUnavailable {
                message: format!("cannot open database '{}': {err}", redact(url)),
            })?;
        let migrator = match dialect {
            Dialect::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Dialect::Postgres => {
                return Err(HubError::invalid(
                    "database_url",
                    "PostgreSQL support is not built into this hub yet; use a sqlite: URL",
                ));
            }
        };
        // Processes that open a fresh database at the same moment must not both migrate it:
        // the whole run holds the write lock (each migration's own transaction nests inside as
        // a savepoint), so the second one waits and then finds everything applied.
        let mut migrating = pool.begin_with(dialect.begin_write_statement()).await?;
        migrator.run(&mut *migrating).await?;
        migrating.commit().await?;
        tracing::debug!(url = %redact(url), "database ready");
        let checkpoints = (dialect == Dialect::Sqlite).then(|| {
            Arc::new(AbortOnDrop(
                tokio::spawn(checkpoint_loop(pool.clone())).abort_handle(),
            ))
        });
        Ok(Database {
            pool,
            dialect,
            url: url.to_owned(),
            write_gate: Arc::new(tokio::sync::Mutex::new(())),
            _checkpoints: checkpoints,
        })
    }

    /// The connection pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The SQL engine behind the pool.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The URL the database was opened with, password removed.
    pub fn display_url(&self) -> String {
        redact(&self.url)
    }

    /// Begins a transaction that will write.
    ///
    /// On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`): a deferred transaction
    /// that reads and then writes fails with `SQLITE_BUSY` when another connection wrote between.
    /// The gate is taken before a connection, so a writer waiting for it holds none. Never
    /// call it while holding a write transaction: the gate is not reentrant.
    pub async fn begin_write(&self) -> Result<WriteTransaction> {
        let gate = self.write_gate().await;
        let tx = self.pool.begin_with(self.begin_write_statement()).await?;
        Ok(WriteTransaction { tx, _gate: gate })
    }

    /// This process's write gate, for a writer that holds its own connection: take it before
    /// `BEGIN`, keep it until the commit.
    pub async fn write_gate(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.write_gate.clone().lock_owned().await
    }

    /// The statement [`Database::begin_write`] opens a transaction with, for callers that hold
    /// their own connection.
    pub fn begin_write_statement(&self) -> &'static str {
        self.dialect.begin_write_statement()
    }

    /// The value of setting `key`, storing `make()` first if it has none. Concurrent callers
    /// (even on other hosts) all get the value that was stored first.
    pub async fn setting_or_insert(
        &self,
        key: &str,
        make: impl FnOnce() -> String,
    ) -> Result<String> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(make())
        .execute(&self.pool)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes every connection; later use fails.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// How often the WAL is copied back into the database file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Copies the WAL back into the database in the background, so no commit pays for it. SQLite
/// would otherwise checkpoint inside the commit that crosses its threshold, stalling that
/// writer (and every writer behind it) for as long as the copy takes; `PASSIVE` never waits for
/// readers or writers. The automatic checkpoint stays, far out, for processes that stop early.
async fn checkpoint_loop(pool: AnyPool) {
    loop {
        tokio::time::sleep(CHECKPOINT_INTERVAL).await;
        if pool.is_closed() {
            return;
        }
        if let Err(err) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            if pool.is_closed() {
                return;
            }
            tracing::debug!(error = %err, "background checkpoint did not run");
        }
    }
}

fn create_parent_dir(url: &str) -> Result<()> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(parent) = Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(|err| {
            HubError::io(
                format!("cannot create database folder '{}'", parent.display()),
                err,
            )
        })?;
    }
    Ok(())
}

/// The URL with any password replaced by `***`, for messages and logs.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Now, as stored: Unix milliseconds.
pub(crate) fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A stored timestamp as a UTC date-time.
pub(crate) fn from_millis(ms: i64) -> Result<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| HubError::Internal(format!("stored timestamp {ms} is out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://hub:secret@db:5432/hub"),
            "postgres://hub:***@db:5432/hub"
        );
        assert_eq!(redact("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
    }
}
