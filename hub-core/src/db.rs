//! The database the registry and the in-database task store share: an embedded SQLite file,
//! or a PostgreSQL server when several hosts share one registry.
//!
//! Every pool and connection is typed by its database ([`Typed`]): a statement is written once
//! and [`dispatch!`] compiles it for each driver, so each decodes with its own types (no
//! `Any` layer hiding that `SUM(BIGINT)` is `NUMERIC` on PostgreSQL). SQL stays portable (`$n`
//! placeholders, `BIGINT` Unix-millisecond timestamps); only what truly differs is chosen per
//! [`Dialect`]: connection settings, how a write transaction begins, multi-row placeholders,
//! a few functions, the migrations.

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{ColumnIndex, Decode, Postgres, Row, Sqlite, Type};
use tokio_util::task::AbortOnDrop;

use crate::error::{HubError, Result};

/// One value per database: a pool, a connection, a transaction, typed by its driver.
#[derive(Debug, Clone, Copy)]
pub enum Typed<S, P> {
    /// The SQLite one.
    Sqlite(S),
    /// The PostgreSQL one.
    Postgres(P),
}

/// Runs `$body` once per database with `$c` bound to the typed value inside `$target` (a
/// [`Typed`]): the body is compiled for each driver, so it reads and binds that driver's types.
macro_rules! dispatch {
    ($target:expr, $c:ident => $body:expr) => {
        match $target {
            $crate::db::Typed::Sqlite($c) => $body,
            $crate::db::Typed::Postgres($c) => $body,
        }
    };
}
pub(crate) use dispatch;

/// A pool of either database, borrowed.
pub type PoolRef<'p> = Typed<&'p SqlitePool, &'p PgPool>;

/// A connection of either database, borrowed mutably (a pooled connection or an open
/// transaction's): what store functions run their statements on.
pub type Conn<'c> = Typed<&'c mut SqliteConnection, &'c mut PgConnection>;

impl Conn<'_> {
    /// The same connection, borrowed again for one more call.
    pub fn reborrow(&mut self) -> Conn<'_> {
        dispatch!(self, c => Conn::from(&mut **c))
    }

    /// The SQL engine behind the connection.
    pub fn dialect(&self) -> Dialect {
        match self {
            Typed::Sqlite(_) => Dialect::Sqlite,
            Typed::Postgres(_) => Dialect::Postgres,
        }
    }
}

impl<'c> From<&'c mut SqliteConnection> for Conn<'c> {
    fn from(conn: &'c mut SqliteConnection) -> Self {
        Typed::Sqlite(conn)
    }
}

impl<'c> From<&'c mut PgConnection> for Conn<'c> {
    fn from(conn: &'c mut PgConnection) -> Self {
        Typed::Postgres(conn)
    }
}

/// A connection taken from the pool, returned to it when dropped.
pub type PooledConn = Typed<PoolConnection<Sqlite>, PoolConnection<Postgres>>;

impl PooledConn {
    /// The connection, to run statements on.
    pub fn conn(&mut self) -> Conn<'_> {
        dispatch!(self, c => Conn::from(&mut **c))
    }

    /// Begins a write transaction on this connection (see [`Database::begin_write`]); the
    /// caller holds the process's write gate.
    pub(crate) async fn begin_write(&mut self) -> Result<Transaction<'_>> {
        Ok(match self {
            Typed::Sqlite(c) => {
                Typed::Sqlite(sqlx::Connection::begin_with(&mut **c, SQLITE_BEGIN_WRITE).await?)
            }
            Typed::Postgres(c) => {
                Typed::Postgres(sqlx::Connection::begin_with(&mut **c, PG_BEGIN_WRITE).await?)
            }
        })
    }
}

/// An open transaction of either database.
pub type Transaction<'c> = Typed<sqlx::Transaction<'c, Sqlite>, sqlx::Transaction<'c, Postgres>>;

impl Transaction<'_> {
    /// The transaction's connection, to run statements on.
    pub fn conn(&mut self) -> Conn<'_> {
        dispatch!(self, c => Conn::from(&mut **c))
    }

    /// Commits.
    pub async fn commit(self) -> Result<()> {
        dispatch!(self, tx => tx.commit().await?);
        Ok(())
    }
}

/// A column type the store reads from rows of either database.
pub(crate) trait Column:
    for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}

impl<T> Column for T where
    T: for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}

/// A column's name or position in rows of either database.
pub(crate) trait ColumnRef: ColumnIndex<SqliteRow> + ColumnIndex<PgRow> {}

impl<I> ColumnRef for I where I: ColumnIndex<SqliteRow> + ColumnIndex<PgRow> {}

/// A row of either database, read by functions written once for both.
pub(crate) trait StoredRow {
    /// The value of a column; a type that does not match the stored one is an error.
    fn get<T: Column, I: ColumnRef>(&self, index: I) -> Result<T>;
}

impl StoredRow for SqliteRow {
    fn get<T: Column, I: ColumnRef>(&self, index: I) -> Result<T> {
        Ok(self.try_get(index)?)
    }
}

impl StoredRow for PgRow {
    fn get<T: Column, I: ColumnRef>(&self, index: I) -> Result<T> {
        Ok(self.try_get(index)?)
    }
}

/// Which SQL engine is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// An embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server (shared by several hosts).
    Postgres,
}

/// SQLite: the write lock from the start; a deferred transaction that reads and then writes
/// fails with `SQLITE_BUSY` when another connection wrote between.
const SQLITE_BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// PostgreSQL: one writer at a time across every process and host, as SQLite has. The event
/// log's sequence numbers must follow commit order (a subscriber that has read up to `n` never
/// misses a later commit that numbered an event below `n`), exclusive keys and port leases are
/// checked then written, and work is claimed oldest first: a transaction-scoped advisory lock
/// makes all of it hold, released by the commit or rollback.
const PG_BEGIN_WRITE: &str = "BEGIN; SELECT pg_advisory_xact_lock(7233184392061202805)";

/// The most rows one multi-row statement carries: a batch of up to this many is one round trip.
pub(crate) const MAX_ROWS_PER_STATEMENT: usize = 64;

/// Splits `rows` into the chunks multi-row statements write them in: as many chunks of
/// [`MAX_ROWS_PER_STATEMENT`] as fit, then the rest in powers of two, largest first.
///
/// Why not any length: every statement text a connection runs stays prepared in its statement
/// cache (100 per connection), and a prepared upsert of 64 task rows is some 200 KB of SQLite
/// program. With one text per row count, the task writer's cache kept whatever a burst's batch
/// sizes had made, up to a hundred of them, for good (the HTTP bench's memory after its run
/// went down 4 MB with this alone). Seven row counts (1, 2, 4 … 64) per statement keep it to a
/// few hundred KB, for at most five more statements per table in a batch.
pub(crate) fn statement_chunks<T>(rows: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let len = rest.len().min(MAX_ROWS_PER_STATEMENT);
        // The largest power of two not above `len` (`len` is at least 1).
        let (chunk, after) = rest.split_at(1 << len.ilog2());
        rest = after;
        Some(chunk)
    })
}

/// The chunk lengths [`statement_chunks`] makes: 1, 2, 4 … [`MAX_ROWS_PER_STATEMENT`].
const CHUNK_LENGTHS: usize = MAX_ROWS_PER_STATEMENT.ilog2() as usize + 1;

/// One multi-row statement of `columns` values a row: its texts, one per dialect and chunk
/// length, each made once on first use, and argument lists sized for them. Formatting the texts
/// again for every statement of every batch (placeholders for up to 64 rows of 22 columns)
/// took 2 % of the engine bench's samples; binding into a list that started empty regrew and
/// copied it some ten times a statement, 2 % more.
pub(crate) struct RowStatements {
    columns: usize,
    make: fn(Dialect, &str) -> String,
    texts: [[OnceLock<String>; CHUNK_LENGTHS]; 2],
}

impl RowStatements {
    /// The statement `make(dialect, values)` writes, where `values` are the rows' placeholders
    /// (`(?, ?), (?, ?)`, see [`Dialect::row_placeholders`]), kept per dialect and row count.
    pub(crate) const fn new(columns: usize, make: fn(Dialect, &str) -> String) -> Self {
        Self {
            columns,
            make,
            texts: [const { [const { OnceLock::new() }; CHUNK_LENGTHS] }; 2],
        }
    }

    /// The text for `rows` rows: kept for the lengths [`statement_chunks`] makes, made anew
    /// for any other.
    pub(crate) fn get(&self, dialect: Dialect, rows: usize) -> Cow<'_, str> {
        let by_length = match dialect {
            Dialect::Sqlite => &self.texts[0],
            Dialect::Postgres => &self.texts[1],
        };
        let make = || (self.make)(dialect, &dialect.row_placeholders(rows, self.columns));
        let slot = rows
            .is_power_of_two()
            .then(|| by_length.get(rows.ilog2() as usize))
            .flatten();
        match slot {
            Some(slot) => Cow::Borrowed(slot.get_or_init(make)),
            None => Cow::Owned(make()),
        }
    }

    /// An empty argument list with room for the values of `rows` rows.
    pub(crate) fn arguments<'q, A: sqlx::Arguments<'q>>(&self, rows: usize) -> A {
        let mut arguments = A::default();
        arguments.reserve(rows * self.columns, 0);
        arguments
    }
}

impl Dialect {
    /// `rows` rows of `columns` positional placeholders, numbered from 1: `(?, ?), (?, ?)` on
    /// SQLite, `($1, $2), ($3, $4)` on PostgreSQL.
    ///
    /// Multi-row statements bind hundreds of parameters. SQLite resolves a numbered `$n` by a
    /// linear search of the statement's parameter names, once per parameter — quadratic in
    /// their count, and the single largest cost of a batch when measured; anonymous `?` are
    /// bound by position at no such cost. PostgreSQL only knows numbered ones.
    pub(crate) fn row_placeholders(self, rows: usize, columns: usize) -> String {
        let mut sql = String::with_capacity(rows * columns * 5);
        for row in 0..rows {
            if row > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for column in 0..columns {
                if column > 0 {
                    sql.push_str(", ");
                }
                match self {
                    Dialect::Sqlite => sql.push('?'),
                    Dialect::Postgres => {
                        sql.push('$');
                        sql.push_str(&(row * columns + column + 1).to_string());
                    }
                }
            }
            sql.push(')');
        }
        sql
    }

    /// The larger of two values: SQLite's two-argument `MAX`, PostgreSQL's `GREATEST`.
    pub(crate) fn greatest(self) -> &'static str {
        match self {
            Dialect::Sqlite => "MAX",
            Dialect::Postgres => "GREATEST",
        }
    }

    /// A pattern match that ignores ASCII case, as SQLite's `LIKE` does.
    pub(crate) fn like(self) -> &'static str {
        match self {
            Dialect::Sqlite => "LIKE",
            Dialect::Postgres => "ILIKE",
        }
    }
}

/// A connection pool plus the dialect it speaks.
#[derive(Debug, Clone)]
pub struct Database {
    pool: Typed<SqlitePool, PgPool>,
    url: String,
    /// One writer at a time in this process. SQLite lets one connection write; another that
    /// tries meanwhile sleeps in its busy handler (1, 2, 5, 10 … ms) even if the lock frees
    /// a few microseconds later. Waiting here instead wakes the next writer at once; the busy
    /// handler (SQLite) or the advisory lock (PostgreSQL) decides between processes.
    write_gate: Arc<tokio::sync::Mutex<()>>,
    /// Stops the background checkpoints once the last clone is gone (they hold a pool handle,
    /// which would otherwise keep the pool open forever).
    _checkpoints: Option<Arc<AbortOnDrop>>,
}

/// A transaction that holds the write lock, and this process's write gate until it ends.
#[derive(Debug)]
pub struct WriteTransaction {
    tx: Transaction<'static>,
    _gate: tokio::sync::OwnedMutexGuard<()>,
}

impl WriteTransaction {
    /// The transaction's connection, to run statements on.
    pub fn conn(&mut self) -> Conn<'_> {
        self.tx.conn()
    }

    /// Commits; the gate opens after.
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await
    }
}

impl Database {
    /// The URL of the SQLite file at `path` (created on first use).
    pub fn sqlite_url(path: &Path) -> String {
        format!("sqlite://{}?mode=rwc", path.display())
    }

    /// Opens (and creates, for SQLite) the database at `url` and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Self> {
        let invalid = |err: sqlx::Error| {
            HubError::invalid("database_url", format!("'{}': {err}", redact(url)))
        };
        let unavailable = |err: sqlx::Error| HubError::BackendUnavailable {
            message: format!("cannot open database '{}': {err}", redact(url)),
        };
        let pool = if url.starts_with("sqlite:") {
            create_parent_dir(url)?;
            // WAL lets readers run beside the single writer; NORMAL sync is durable across
            // application crashes, which is what a local registry needs. A small page cache
            // per reader (the task writer sets a larger one on its own connection, see
            // `acquire_writer`) and no mmap: the OS caches the file once for all of them, and
            // the hub's memory stays small. Checkpoints run in the background (below).
            // Temporary data in memory: a multi-row write keeps a statement journal (the pages
            // it changes, to undo it alone), which SQLite otherwise spills to a file in /var/tmp
            // past 64 KB, with a system call per page: 5.7 % of the engine bench's CPU samples
            // were those writes.
            let options = SqliteConnectOptions::from_str(url)
                .map_err(invalid)?
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .pragma("cache_size", format!("-{SQLITE_READER_CACHE_KIB}"))
                .pragma("mmap_size", "0")
                .pragma("temp_store", "memory")
                .pragma("wal_autocheckpoint", "100000")
                .pragma("journal_size_limit", WAL_LIMIT_BYTES.to_string());
            // No ping before each acquire: a connection to a local file does not drop the way a
            // socket does, and the ping was one more round trip to its thread per query.
            // Four connections: the writer and three readers keep two cores busy. Each one is a
            // thread with its own page cache and its own allocator pages, so more of them only
            // spread memory (8 kept ~10 MB more after a few whole-list reads, with no faster
            // starts at 32 concurrent clients).
            let pool = connect_sqlite(
                SqlitePoolOptions::new()
                    .max_connections(4)
                    .test_before_acquire(false)
                    .after_release(|conn, _| Box::pin(settle_transaction(conn)))
                    .before_acquire(|conn, _| Box::pin(outside_transaction(conn)))
                    .acquire_timeout(Duration::from_secs(30)),
                options,
            )
            .await
            .map_err(unavailable)?;
            // Processes that open a fresh database at the same moment must not both migrate
            // it: the whole run holds the write lock (each migration's own transaction nests
            // inside as a savepoint), so the second one waits and then finds everything applied.
            let mut migrating = pool.begin_with(SQLITE_BEGIN_WRITE).await?;
            sqlx::migrate!("./migrations/sqlite")
                .run(&mut *migrating)
                .await?;
            migrating.commit().await?;
            Typed::Sqlite(pool)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = PgConnectOptions::from_str(url)
                .map_err(invalid)?
                .application_name("commandcenter-hub");
            // One attempt first: the pool would retry a refused connection until its acquire
            // timeout, and a wrong URL deserves its error at once.
            drop(
                <PgConnection as sqlx::Connection>::connect_with(&options)
                    .await
                    .map_err(unavailable)?,
            );
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .after_release(|conn, _| Box::pin(settle_transaction(conn)))
                .before_acquire(|conn, _| Box::pin(outside_transaction(conn)))
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(options)
                .await
                .map_err(unavailable)?;
            // The migrator takes a session advisory lock of its own: processes that start
            // together migrate one after the other.
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
            Typed::Postgres(pool)
        } else {
            return Err(HubError::invalid(
                "database_url",
                format!("'{}' is neither a sqlite: nor a postgres: URL", redact(url)),
            ));
        };
        tracing::debug!(url = %redact(url), "database ready");
        let checkpoints = match &pool {
            Typed::Sqlite(pool) => Some(Arc::new(AbortOnDrop::new(
                tokio::spawn(checkpoint_loop(pool.clone())).abort_handle(),
            ))),
            Typed::Postgres(_) => None,
        };
        Ok(Database {
            pool,
            url: url.to_owned(),
            write_gate: Arc::new(tokio::sync::Mutex::new(())),
            _checkpoints: checkpoints,
        })
    }

    /// The connection pool, typed by its database.
    pub fn pool(&self) -> PoolRef<'_> {
        match &self.pool {
            Typed::Sqlite(pool) => Typed::Sqlite(pool),
            Typed::Postgres(pool) => Typed::Postgres(pool),
        }
    }

    /// A connection from the pool.
    pub async fn acquire(&self) -> Result<PooledConn> {
        Ok(match &self.pool {
            Typed::Sqlite(pool) => Typed::Sqlite(pool.acquire().await?),
            Typed::Postgres(pool) => Typed::Postgres(pool.acquire().await?),
        })
    }

    /// A connection for a writer that keeps it for as long as it runs (the task writer): on
    /// SQLite with a larger page cache than the readers', as every batch it writes goes through
    /// the same tables' and indexes' pages (a connection given back to the pool keeps it).
    pub async fn acquire_writer(&self) -> Result<PooledConn> {
        let mut conn = self.acquire().await?;
        if let Typed::Sqlite(c) = &mut conn {
            sqlx::query(&format!("PRAGMA cache_size = -{SQLITE_WRITER_CACHE_KIB}"))
                .execute(&mut **c)
                .await?;
        }
        Ok(conn)
    }

    /// The SQL engine behind the pool.
    pub fn dialect(&self) -> Dialect {
        match self.pool {
            Typed::Sqlite(_) => Dialect::Sqlite,
            Typed::Postgres(_) => Dialect::Postgres,
        }
    }

    /// The URL the database was opened with, password removed.
    pub fn display_url(&self) -> String {
        redact(&self.url)
    }

    /// Begins a transaction that will write, holding the write lock from its start: SQLite's
    /// `BEGIN IMMEDIATE`, a transaction-scoped advisory lock on PostgreSQL (every writer of
    /// every process is one after the other, as on SQLite).
    ///
    /// The gate is taken before a connection, so a writer waiting for it holds none. Never
    /// call it while holding a write transaction: the gate is not reentrant.
    ///
    /// Safe to drop at any point (a revoked start, a client that hung up): the BEGIN runs in a
    /// task of its own. sqlx's is not: dropped once the statement went to the connection, it
    /// hands the connection back to the pool inside a transaction no one will end, which then
    /// holds SQLite's write lock for good. Here a transaction no one waits for any more is
    /// dropped, which rolls it back, and only then opens the gate.
    pub async fn begin_write(&self) -> Result<WriteTransaction> {
        let gate = self.write_gate().await;
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let tx = match &pool {
                Typed::Sqlite(pool) => Typed::Sqlite(pool.begin_with(SQLITE_BEGIN_WRITE).await?),
                Typed::Postgres(pool) => Typed::Postgres(pool.begin_with(PG_BEGIN_WRITE).await?),
            };
            Ok(WriteTransaction { tx, _gate: gate })
        })
        .await
        .map_err(|err| HubError::Internal(format!("beginning a write transaction: {err}")))?
    }

    /// This process's write gate, for a writer that holds its own connection: take it before
    /// [`PooledConn::begin_write`], keep it until the commit.
    pub async fn write_gate(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.write_gate.clone().lock_owned().await
    }

    /// The value of setting `key`, storing `make()` first if it has none. Concurrent callers
    /// (even on other hosts) all get the value that was stored first.
    pub async fn setting_or_insert(
        &self,
        key: &str,
        make: impl FnOnce() -> String,
    ) -> Result<String> {
        let value = make();
        dispatch!(self.pool(), pool => {
            sqlx::query(
                "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            )
            .bind(key)
            .bind(&value)
            .execute(pool)
            .await?;
            Ok(sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_one(pool)
                .await?)
        })
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<()> {
        dispatch!(self.pool(), pool => {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    /// Closes every connection; later use fails.
    pub async fn close(&self) {
        dispatch!(self.pool(), pool => pool.close().await);
    }
}

/// Whether a connection given back to the pool may be kept: one still inside a transaction
/// is closed instead, which ends the transaction (and frees SQLite's write lock) with it. A
/// dropped `Transaction` queues its rollback, so a connection found inside one first lets
/// what is queued run. [`Database::begin_write`] leaves no transaction without an owner;
/// this keeps the pool's promise for any other path that would.
async fn settle_transaction<C: sqlx::Connection>(conn: &mut C) -> Result<bool, sqlx::Error> {
    if conn.is_in_transaction() {
        conn.ping().await?;
    }
    outside_transaction(conn).await
}

/// Whether an idle connection may be handed out: not inside a transaction. A BEGIN still
/// queued when its connection came back (its caller dropped meanwhile) ran after
/// [`settle_transaction`] looked; such a connection is closed here, at its next use.
async fn outside_transaction<C: sqlx::Connection>(conn: &mut C) -> Result<bool, sqlx::Error> {
    if conn.is_in_transaction() {
        tracing::warn!("closing a pooled connection left inside a transaction");
        return Ok(false);
    }
    Ok(true)
}

/// How long a SQLite connection waits for another one's lock before it gives up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The page cache of a SQLite connection, in KiB. Readers keep little: each connection is a
/// thread with a cache of its own, and 2 MB each kept 4-5 MB more after a load run (2,800
/// projects listed, 2,800 starts) with no quicker list or start.
const SQLITE_READER_CACHE_KIB: u32 = 512;
/// The task writer's page cache, in KiB: every batch goes through the same tables' and
/// indexes' pages, and with 512 KB the engine bench (100,000 tasks stored) ran about 5 % slower.
const SQLITE_WRITER_CACHE_KIB: u32 = 2048;

/// Opens the SQLite pool, trying again while another connection holds the write lock of a file
/// that is not in WAL mode yet (a fresh one, which another process is creating).
///
/// Each new connection switches the file to WAL. Before the switch, SQLite answers `SQLITE_BUSY`
/// at once to a connection whose read must become a write while another holds the write lock,
/// without calling the busy handler: waiting there could deadlock. Once the file is in WAL mode
/// (it stays so), the busy handler covers every wait, so only this first connection needs it.
async fn connect_sqlite(
    pool: SqlitePoolOptions,
    options: SqliteConnectOptions,
) -> std::result::Result<SqlitePool, sqlx::Error> {
    let deadline = tokio::time::Instant::now() + SQLITE_BUSY_TIMEOUT;
    loop {
        match pool.clone().connect_with(options.clone()).await {
            Err(err) if is_sqlite_busy(&err) && tokio::time::Instant::now() < deadline => {
                tracing::debug!(%err, "database file is being set up by another connection; retrying");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            outcome => return outcome,
        }
    }
}

/// Whether `err` is SQLite's `SQLITE_BUSY` (any extended form of it).
fn is_sqlite_busy(err: &sqlx::Error) -> bool {
    const SQLITE_BUSY: i32 = 5;
    err.as_database_error()
        .and_then(|err| err.code())
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| code & 0xff == SQLITE_BUSY)
}

/// How often the WAL is copied back into the database file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// What the WAL file is cut back to when SQLite starts it over (`journal_size_limit`).
///
/// Under steady writes the background checkpoint never catches up with the writer (commits land
/// while it copies), so SQLite never starts the WAL over and the file grows as long as the
/// writes go on: 230 MB after 2,000 projects registered and started back to back. SQLite
/// starts it over at the first commit after a checkpoint that copied everything, once the
/// writes pause, but keeps the file at its largest unless told a limit. Starting it over under
/// load instead (a `RESTART` checkpoint past this size, holding the writers) made the p99 of
/// sequential starts 3-4 times worse, so a burst still grows the WAL; only what stays on disk
/// after it is bounded.
const WAL_LIMIT_BYTES: i64 = 64 << 20;

/// Copies the WAL back into the database in the background, so no commit pays for it. SQLite
/// would otherwise checkpoint inside the commit that crosses its threshold, stalling that
/// writer (and every writer behind it) for as long as the copy takes; `PASSIVE` never waits for
/// readers or writers. The automatic checkpoint stays, far out, for processes that stop early.
async fn checkpoint_loop(pool: SqlitePool) {
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

    /// Every row is written once, in order, in chunks of the few lengths statements are
    /// prepared for.
    #[test]
    fn statement_chunks_use_few_lengths_and_keep_every_row_in_order() {
        let lengths: std::collections::BTreeSet<usize> = (0..=300)
            .flat_map(|n| {
                let rows: Vec<usize> = (0..n).collect();
                let chunks: Vec<&[usize]> = statement_chunks(&rows).collect();
                assert_eq!(chunks.concat(), rows, "{n} rows");
                // At most one chunk of each length below the maximum.
                let short: Vec<usize> = chunks
                    .iter()
                    .map(|c| c.len())
                    .filter(|&l| l < MAX_ROWS_PER_STATEMENT)
                    .collect();
                assert!(short.windows(2).all(|w| w[0] > w[1]), "{n} rows: {short:?}");
                chunks.into_iter().map(<[usize]>::len).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(
            lengths.into_iter().collect::<Vec<_>>(),
            [1, 2, 4, 8, 16, 32, MAX_ROWS_PER_STATEMENT]
        );
    }

    /// Each dialect and chunk length gets its own text, made once: the same text as made
    /// anew, borrowed from the first call on; any other length is made anew each time.
    #[test]
    fn row_statements_keep_one_text_per_dialect_and_chunk_length() {
        static STATEMENTS: RowStatements = RowStatements::new(2, |_, values| {
            format!("INSERT INTO t (a, b) VALUES {values}")
        });
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            for rows in [1, 2, 4, 8, 16, 32, MAX_ROWS_PER_STATEMENT] {
                let made = format!(
                    "INSERT INTO t (a, b) VALUES {}",
                    dialect.row_placeholders(rows, 2)
                );
                let first = STATEMENTS.get(dialect, rows);
                assert_eq!(first, made, "{dialect:?}, {rows} rows");
                let (Cow::Borrowed(first), Cow::Borrowed(again)) =
                    (first, STATEMENTS.get(dialect, rows))
                else {
                    panic!("{dialect:?}, {rows} rows: the text was not kept");
                };
                assert!(
                    std::ptr::eq(first, again),
                    "{dialect:?}, {rows} rows: made twice"
                );
            }
            for rows in [3, 100] {
                let text = STATEMENTS.get(dialect, rows);
                assert!(matches!(text, Cow::Owned(_)), "{dialect:?}, {rows} rows");
                assert_eq!(
                    text,
                    format!(
                        "INSERT INTO t (a, b) VALUES {}",
                        dialect.row_placeholders(rows, 2)
                    )
                );
            }
        }
        assert_ne!(
            STATEMENTS.get(Dialect::Sqlite, 2),
            STATEMENTS.get(Dialect::Postgres, 2)
        );
    }

    #[test]
    fn multi_row_placeholders_follow_each_dialect() {
        assert_eq!(
            Dialect::Sqlite.row_placeholders(2, 3),
            "(?, ?, ?), (?, ?, ?)"
        );
        assert_eq!(
            Dialect::Postgres.row_placeholders(2, 3),
            "($1, $2, $3), ($4, $5, $6)"
        );
    }

    /// A process opening a fresh file while another one holds its write lock, before the file
    /// is in WAL mode (the other is creating it), waits for it instead of failing: SQLite answers
    /// that connection's switch to WAL with `SQLITE_BUSY` at once, without its busy handler.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn opening_a_fresh_file_waits_while_another_connection_holds_its_write_lock() {
        use sqlx::Connection;
        let dir = tempfile::TempDir::new().unwrap();
        let url = Database::sqlite_url(&dir.path().join("hub.db"));
        let mut other =
            SqliteConnection::connect_with(&SqliteConnectOptions::from_str(&url).unwrap())
                .await
                .unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut other)
            .await
            .unwrap();
        let release = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            sqlx::query("COMMIT").execute(&mut other).await.unwrap();
        };
        let (opened, ()) = tokio::join!(Database::open(&url), release);
        let db = opened.unwrap();
        let Typed::Sqlite(pool) = db.pool() else {
            unreachable!("a sqlite: URL opens a SQLite pool")
        };
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
    }

    /// A WAL grown by a burst of writes is cut back to [`WAL_LIMIT_BYTES`] once the writes
    /// pause and the background checkpoint copied it; SQLite otherwise keeps the file at its
    /// largest.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wal_grown_by_a_burst_is_cut_back_once_the_writes_pause() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("hub.db");
        let db = Database::open(&Database::sqlite_url(&path)).await.unwrap();
        let Typed::Sqlite(pool) = db.pool() else {
            unreachable!("a sqlite: URL opens a SQLite pool")
        };
        sqlx::query("CREATE TABLE filler (b BLOB)")
            .execute(pool)
            .await
            .unwrap();
        let wal = dir.path().join("hub.db-wal");
        let wal_size = || std::fs::metadata(&wal).unwrap().len();
        let limit = u64::try_from(WAL_LIMIT_BYTES).unwrap();
        // One transaction larger than the limit grows the WAL past it.
        let blob = vec![7u8; 1 << 20];
        let mut tx = pool.begin().await.unwrap();
        for _ in 0..(limit >> 20) + 8 {
            sqlx::query("INSERT INTO filler (b) VALUES (?)")
                .bind(&blob)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        let grown = wal_size();
        assert!(grown > limit, "the WAL grew to {grown} bytes only");

        // The background checkpoint copies it within a second or two; the first commit after
        // that starts the WAL over, and cuts the file back.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while wal_size() > limit && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            sqlx::query("INSERT INTO filler (b) VALUES (x'00')")
                .execute(pool)
                .await
                .unwrap();
        }
        assert!(
            wal_size() <= limit,
            "the WAL stayed at {} bytes, from {grown}",
            wal_size()
        );
    }

    /// Asserts that a small write through [`Database::begin_write`] goes through at once.
    async fn assert_writable(db: &Database) {
        let write = async {
            let mut tx = db.begin_write().await?;
            dispatch!(tx.conn(), c => {
                sqlx::query(
                    "INSERT INTO settings (key, value) VALUES ('k', 'v') \
                     ON CONFLICT (key) DO UPDATE SET value = 'v'",
                )
                .execute(&mut *c)
                .await?;
            });
            tx.commit().await
        };
        let done = tokio::time::timeout(Duration::from_secs(5), write).await;
        assert!(
            matches!(done, Ok(Ok(()))),
            "a write after the dropped ones: {done:?}"
        );
    }

    /// Polls `begin` `round % 8` times, with a pause of a few microseconds between polls (a
    /// BEGIN runs on its connection's own thread meanwhile), then drops it: over the rounds,
    /// before, while and after the statement runs.
    fn drop_midway<F: std::future::Future>(begin: F, round: u64) {
        let mut begin = std::pin::pin!(begin);
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        for _ in 0..round % 8 {
            if begin.as_mut().poll(&mut cx).is_ready() {
                break;
            }
            std::thread::sleep(Duration::from_micros(round % 50));
        }
    }

    /// A write transaction whose caller gives up while it begins (a revoked start, a client
    /// that hung up) leaves neither the write lock nor a connection inside a transaction, and
    /// a write still goes through at once afterwards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_transaction_dropped_while_it_begins_leaves_no_lock_behind() {
        let dir = tempfile::TempDir::new().unwrap();
        let db = Database::open(&Database::sqlite_url(&dir.path().join("hub.db")))
            .await
            .unwrap();
        for round in 0..2000u64 {
            drop_midway(db.begin_write(), round);
        }
        assert_writable(&db).await;
    }

    /// The pool never hands out a connection inside a transaction, whatever left it so: here
    /// a connection's own BEGIN dropped midway, which leaves no `Transaction` to end it. Such
    /// a connection is closed when it comes back or at its next use, and writes go on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pool_never_hands_out_a_connection_inside_a_transaction() {
        let dir = tempfile::TempDir::new().unwrap();
        let db = Database::open(&Database::sqlite_url(&dir.path().join("hub.db")))
            .await
            .unwrap();
        // A connection kept inside a transaction holds the write lock: every other one's BEGIN
        // waits out its busy timeout, which would stretch this loop to minutes.
        let rounds = async {
            for round in 0..500u64 {
                let mut conn = db.acquire().await?;
                drop_midway(conn.begin_write(), round);
            }
            futures_util::future::try_join_all((0..4).map(|_| db.acquire())).await
        };
        let all = tokio::time::timeout(Duration::from_secs(30), rounds)
            .await
            .expect("500 rounds within 30 s")
            .unwrap();
        for conn in &all {
            let in_transaction = dispatch!(conn, c => sqlx::Connection::is_in_transaction(&**c));
            assert!(
                !in_transaction,
                "the pool handed out a connection inside a transaction"
            );
        }
        drop(all);
        assert_writable(&db).await;
    }

    /// Readers keep a small page cache; the task writer, which keeps its connection, a larger
    /// one.
    #[tokio::test]
    async fn the_writer_s_connection_has_a_larger_page_cache_than_the_readers() {
        let dir = tempfile::TempDir::new().unwrap();
        let db = Database::open(&Database::sqlite_url(&dir.path().join("hub.db")))
            .await
            .unwrap();
        async fn cache_kib(conn: &mut PooledConn) -> i64 {
            let Typed::Sqlite(c) = conn else {
                unreachable!("a sqlite: URL opens a SQLite pool")
            };
            let size: i64 = sqlx::query_scalar("PRAGMA cache_size")
                .fetch_one(&mut **c)
                .await
                .unwrap();
            -size
        }
        let mut writer = db.acquire_writer().await.unwrap();
        let mut reader = db.acquire().await.unwrap();
        assert_eq!(
            cache_kib(&mut writer).await,
            i64::from(SQLITE_WRITER_CACHE_KIB)
        );
        assert_eq!(
            cache_kib(&mut reader).await,
            i64::from(SQLITE_READER_CACHE_KIB)
        );
    }
}
