//! Host ports: the four roles a project publishes, and the allocator that hands out sets of them.
//!
//! Project slot `k` gets `base + stride·k` for every role (first project: 8010 / 3010 / 5442 / 6389,
//! as in the original hub). A port is free only when **no registered project holds it** — running or
//! stopped — **and** it can be bound on the host right now. The database is the truth: every held
//! port has a row in `port_leases` whose primary key is the port, so two projects (or two roles)
//! can never share one, whichever host or process allocated them. An in-memory bitmap of held ports
//! makes the search cheap; each candidate is re-checked in the allocating transaction, and a stale
//! bitmap (another process allocated meanwhile) is simply reloaded.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::str::FromStr;

use crate::db::{Conn, dispatch};
use serde::{Deserialize, Serialize};

use crate::error::{HubError, Result};

/// The role a published host port plays in a project's stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum PortRole {
    /// The API server (original: 8000 + 10·k).
    Backend,
    /// The web front end (original: 3000 + 10·k).
    Frontend,
    /// PostgreSQL (original: 5432 + 10·k).
    Postgres,
    /// Redis (original: 6379 + 10·k).
    Redis,
}

impl PortRole {
    /// All roles, in the order ports are listed everywhere.
    pub const ALL: [PortRole; 4] = [
        PortRole::Backend,
        PortRole::Frontend,
        PortRole::Postgres,
        PortRole::Redis,
    ];

    /// The role's name: `backend`, `frontend`, `postgres` or `redis`.
    pub fn as_str(self) -> &'static str {
        match self {
            PortRole::Backend => "backend",
            PortRole::Frontend => "frontend",
            PortRole::Postgres => "postgres",
            PortRole::Redis => "redis",
        }
    }

    /// The field that carries this port in project JSON (`backend_port`, …).
    pub fn field_name(self) -> &'static str {
        match self {
            PortRole::Backend => "backend_port",
            PortRole::Frontend => "frontend_port",
            PortRole::Postgres => "postgres_port",
            PortRole::Redis => "redis_port",
        }
    }

    /// The role's name with a capital, as the original's messages wrote it ("Frontend port 3010").
    pub fn title(self) -> &'static str {
        match self {
            PortRole::Backend => "Backend",
            PortRole::Frontend => "Frontend",
            PortRole::Postgres => "Postgres",
            PortRole::Redis => "Redis",
        }
    }
}

impl fmt::Display for PortRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PortRole {
    type Err = HubError;

    fn from_str(s: &str) -> Result<Self> {
        PortRole::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| {
                HubError::invalid(
                    "role",
                    format!(
                        "unknown port role '{s}' (expected backend, frontend, postgres or redis)"
                    ),
                )
            })
    }
}

/// One host port per role: what a project holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortSet {
    /// Backend (API) port.
    pub backend: u16,
    /// Frontend (web) port.
    pub frontend: u16,
    /// PostgreSQL port.
    pub postgres: u16,
    /// Redis port.
    pub redis: u16,
}

impl PortSet {
    /// The port held for `role`.
    pub fn get(&self, role: PortRole) -> u16 {
        match role {
            PortRole::Backend => self.backend,
            PortRole::Frontend => self.frontend,
            PortRole::Postgres => self.postgres,
            PortRole::Redis => self.redis,
        }
    }

    fn set(&mut self, role: PortRole, port: u16) {
        match role {
            PortRole::Backend => self.backend = port,
            PortRole::Frontend => self.frontend = port,
            PortRole::Postgres => self.postgres = port,
            PortRole::Redis => self.redis = port,
        }
    }

    /// `(role, port)` pairs in [`PortRole::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (PortRole, u16)> + '_ {
        PortRole::ALL.into_iter().map(|role| (role, self.get(role)))
    }
}

/// Ports a caller asks for explicitly; roles left `None` are allocated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PortRequest {
    /// Wanted backend port.
    pub backend: Option<u16>,
    /// Wanted frontend port.
    pub frontend: Option<u16>,
    /// Wanted PostgreSQL port.
    pub postgres: Option<u16>,
    /// Wanted Redis port.
    pub redis: Option<u16>,
}

impl PortRequest {
    /// The port requested for `role`, if any.
    pub fn get(&self, role: PortRole) -> Option<u16> {
        match role {
            PortRole::Backend => self.backend,
            PortRole::Frontend => self.frontend,
            PortRole::Postgres => self.postgres,
            PortRole::Redis => self.redis,
        }
    }

    /// These requests, with `fallback`'s filling the roles left open.
    pub fn or(self, fallback: PortRequest) -> PortRequest {
        PortRequest {
            backend: self.backend.or(fallback.backend),
            frontend: self.frontend.or(fallback.frontend),
            postgres: self.postgres.or(fallback.postgres),
            redis: self.redis.or(fallback.redis),
        }
    }

    /// Whether no port was requested.
    pub fn is_empty(&self) -> bool {
        PortRole::ALL.iter().all(|role| self.get(*role).is_none())
    }
}

impl From<PortSet> for PortRequest {
    fn from(ports: PortSet) -> Self {
        PortRequest {
            backend: Some(ports.backend),
            frontend: Some(ports.frontend),
            postgres: Some(ports.postgres),
            redis: Some(ports.redis),
        }
    }
}

/// How ports are laid out. The defaults reproduce the original hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PortConfig {
    /// Slot 0 of every role; project slot `k` gets `base + stride·k`.
    pub bases: PortSet,
    /// Distance between two slots.
    pub stride: u16,
    /// Lowest port ever handed out or accepted.
    pub min_port: u16,
    /// Highest port ever handed out or accepted.
    pub max_port: u16,
    /// Skip ports that cannot be bound on this host right now (on by default).
    pub probe_host: bool,
    /// Where extra ports start: a compose service's published ports beyond its role's get the
    /// lowest free ports from here up.
    pub extra_base: u16,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig {
            bases: PortSet {
                backend: 8000,
                frontend: 3000,
                postgres: 5432,
                redis: 6379,
            },
            stride: 10,
            min_port: 1024,
            max_port: 65535,
            probe_host: true,
            extra_base: 9000,
        }
    }
}

impl PortConfig {
    /// Checks that the layout can hand out at least one set.
    pub fn validate(&self) -> Result<()> {
        if self.stride == 0 {
            return Err(HubError::invalid("ports.stride", "must be at least 1"));
        }
        if self.min_port == 0 || self.min_port > self.max_port {
            return Err(HubError::invalid(
                "ports.min_port",
                format!(
                    "range {}..={} is empty or starts at 0",
                    self.min_port, self.max_port
                ),
            ));
        }
        if self.max_slot() == 0 {
            return Err(HubError::invalid(
                "ports.bases",
                "no slot fits inside the port range",
            ));
        }
        Ok(())
    }

    /// The ports of slot `k`, or `None` when one of them falls outside the range.
    pub fn slot(&self, k: u32) -> Option<PortSet> {
        let mut set = self.bases;
        for role in PortRole::ALL {
            let port = u32::from(self.bases.get(role)) + u32::from(self.stride) * k;
            let port = u16::try_from(port).ok()?;
            if port < self.min_port || port > self.max_port {
                return None;
            }
            set.set(role, port);
        }
        Some(set)
    }

    /// The highest slot whose ports all fit in the range (0 when none does).
    pub fn max_slot(&self) -> u32 {
        let stride = u32::from(self.stride.max(1));
        PortRole::ALL
            .iter()
            .map(|role| {
                u32::from(self.max_port).saturating_sub(u32::from(self.bases.get(*role))) / stride
            })
            .min()
            .unwrap_or(0)
    }

    fn check_in_range(&self, role: PortRole, port: u16) -> Result<()> {
        if port < self.min_port || port > self.max_port {
            return Err(HubError::invalid(
                format!("ports.{role}"),
                format!(
                    "port {port} is outside the allowed range {}..={}",
                    self.min_port, self.max_port
                ),
            ));
        }
        Ok(())
    }
}

/// A port of a project that is busy on the host right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BusyPort {
    /// The role the port plays.
    pub role: PortRole,
    /// The port.
    pub port: u16,
}

/// Whether `port` can be bound on every interface right now.
///
/// Binding the wildcard address fails when anything listens on the port on any address, which is
/// what a published container port needs.
pub fn is_port_free_on_host(port: u16) -> bool {
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).is_ok()
}

/// Which of `ports` are busy on the host right now (probed on a blocking thread).
pub async fn busy_host_ports(ports: &PortSet) -> Result<Vec<BusyPort>> {
    let busy = probe_busy(ports.iter().map(|(_, port)| port).collect()).await?;
    Ok(ports
        .iter()
        .filter(|(_, port)| busy.contains(port))
        .map(|(role, port)| BusyPort { role, port })
        .collect())
}

/// A fixed-size bitmap of the 65,536 TCP ports.
#[derive(Clone)]
struct PortBitmap(Box<[u64; 1024]>);

impl PortBitmap {
    fn new() -> Self {
        PortBitmap(Box::new([0; 1024]))
    }

    fn contains(&self, port: u16) -> bool {
        self.0[usize::from(port >> 6)] & (1 << (port & 63)) != 0
    }

    fn insert(&mut self, port: u16) {
        self.0[usize::from(port >> 6)] |= 1 << (port & 63);
    }

    fn remove(&mut self, port: u16) {
        self.0[usize::from(port >> 6)] &= !(1 << (port & 63));
    }
}

/// Hands out port sets. Callers serialise use of one allocator (the [`crate::Hub`] holds it behind
/// a mutex) and pass the connection of the transaction that will record the leases.
///
/// Ports are unique per Docker host (a project's `host`): two projects on different hosts may
/// both hold 8010, as their stacks publish it on different machines.
pub struct PortAllocator {
    config: PortConfig,
    /// Held ports by host.
    held: HashMap<String, PortBitmap>,
}

impl fmt::Debug for PortAllocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortAllocator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A port held by a project, as stored in `port_leases`.
#[derive(Debug, Clone)]
struct Lease {
    port: u16,
    holder_id: i64,
    holder_name: String,
}

impl PortAllocator {
    /// An allocator with an empty view of held ports; call [`PortAllocator::reload`] before use.
    pub fn new(config: PortConfig) -> Result<Self> {
        config.validate()?;
        Ok(PortAllocator {
            config,
            held: HashMap::new(),
        })
    }

    /// The layout in use.
    pub fn config(&self) -> &PortConfig {
        &self.config
    }

    /// Re-reads every held port from the database.
    pub async fn reload(&mut self, conn: Conn<'_>) -> Result<()> {
        let leases: Vec<(String, i64)> = dispatch!(conn, c => {
            sqlx::query_as("SELECT host, port FROM port_leases")
                .fetch_all(&mut *c)
                .await?
        });
        let mut held: HashMap<String, PortBitmap> = HashMap::new();
        for (host, port) in leases {
            held.entry(host)
                .or_insert_with(PortBitmap::new)
                .insert(port_from_db(port)?);
        }
        self.held = held;
        Ok(())
    }

    fn held_on(&mut self, host: &str) -> &mut PortBitmap {
        self.held
            .entry(host.to_owned())
            .or_insert_with(PortBitmap::new)
    }

    /// Proposes ports for a project from memory alone (no system call, no query): the
    /// requested ones after checking their range and that they differ, the others from the
    /// lowest slot none of whose ports is held or in `busy` (ports a probe found taken on the
    /// host). Probe the result with [`probe_busy`] outside any lock, then
    /// [`PortAllocator::confirm`] it inside the write transaction.
    pub fn propose(
        &self,
        host: &str,
        request: PortRequest,
        busy: &HashSet<u16>,
    ) -> Result<PortSet> {
        let mut wanted: Vec<(PortRole, u16)> = Vec::new();
        for role in PortRole::ALL {
            let Some(port) = request.get(role) else {
                continue;
            };
            self.config.check_in_range(role, port)?;
            if let Some((other, _)) = wanted.iter().find(|(_, p)| *p == port) {
                return Err(HubError::invalid(
                    format!("ports.{role}"),
                    format!("port {port} is also requested for {other}"),
                ));
            }
            wanted.push((role, port));
        }
        self.search(host, request, busy)
    }

    /// Confirms `ports`, proposed for `request`, inside the transaction that will record them:
    /// a requested port leased by another project is a `port_conflict`; a proposed one leased
    /// meanwhile (by another process) makes the view stale: it is reloaded and `None` returned,
    /// so the caller proposes again. `owner` is the project being re-allocated; `host` the
    /// Docker host the ports are for.
    pub async fn confirm(
        &mut self,
        mut conn: Conn<'_>,
        host: &str,
        request: PortRequest,
        ports: PortSet,
        owner: Option<i64>,
    ) -> Result<Option<PortSet>> {
        let leases = leases_of(conn.reborrow(), host, &ports, owner).await?;
        for role in PortRole::ALL {
            if let Some(port) = request.get(role)
                && let Some(lease) = leases.iter().find(|l| l.port == port)
            {
                return Err(HubError::PortConflict {
                    role,
                    port,
                    holder: lease.holder_name.clone(),
                });
            }
        }
        if leases.is_empty() {
            return Ok(Some(ports));
        }
        tracing::debug!(ports = ?leases.iter().map(|l| l.port).collect::<Vec<_>>(), "port view stale, reloading");
        self.reload(conn).await?;
        Ok(None)
    }

    /// Whether a project on `host` holds `port`, as this allocator last saw it.
    pub fn is_held(&self, host: &str, port: u16) -> bool {
        self.held.get(host).is_some_and(|held| held.contains(port))
    }

    /// Whether proposals should be probed on the host.
    pub fn probes_host(&self) -> bool {
        self.config.probe_host
    }

    /// Records in memory that `new` is now held and `old` (if any) released, each on its host.
    pub fn commit(&mut self, old: Option<(&str, &PortSet)>, new: Option<(&str, &PortSet)>) {
        if let Some((host, old)) = old {
            let held = self.held_on(host);
            for (_, port) in old.iter() {
                held.remove(port);
            }
        }
        if let Some((host, new)) = new {
            let held = self.held_on(host);
            for (_, port) in new.iter() {
                held.insert(port);
            }
        }
    }

    /// `count` ports for extra leases: the lowest from `extra_base` up (then from `min_port`)
    /// that no project on `host` holds and `skip` does not refuse.
    pub fn extra_candidates(
        &self,
        host: &str,
        count: usize,
        skip: impl Fn(u16) -> bool,
    ) -> Result<Vec<u16>> {
        let base = self
            .config
            .extra_base
            .clamp(self.config.min_port, self.config.max_port);
        let mut found = Vec::with_capacity(count);
        let range = (base..=self.config.max_port).chain(self.config.min_port..base);
        for port in range {
            if found.len() == count {
                break;
            }
            if !self.is_held(host, port) && !skip(port) {
                found.push(port);
            }
        }
        if found.len() < count {
            return Err(HubError::PortUnavailable {
                message: format!(
                    "no free port left for {count} extra ports in {}..={}",
                    self.config.min_port, self.config.max_port
                ),
            });
        }
        Ok(found)
    }

    /// Records in memory that `leased` are now held on `host` and `released` are not.
    pub fn commit_extra(&mut self, host: &str, released: &[u16], leased: &[u16]) {
        let held = self.held_on(host);
        for port in released {
            held.remove(*port);
        }
        for port in leased {
            held.insert(*port);
        }
    }

    /// The requested ports plus, for the other roles, those of the lowest usable slot.
    fn search(&self, host: &str, request: PortRequest, busy: &HashSet<u16>) -> Result<PortSet> {
        let open_roles: Vec<PortRole> = PortRole::ALL
            .into_iter()
            .filter(|role| request.get(*role).is_none())
            .collect();
        let mut result = self.config.bases;
        for role in PortRole::ALL {
            if let Some(port) = request.get(role) {
                result.set(role, port);
            }
        }
        if open_roles.is_empty() {
            return Ok(result);
        }
        let requested: Vec<u16> = PortRole::ALL
            .iter()
            .filter_map(|r| request.get(*r))
            .collect();
        for k in 1..=self.config.max_slot() {
            let Some(slot) = self.config.slot(k) else {
                continue;
            };
            let usable = open_roles.iter().all(|role| {
                let port = slot.get(*role);
                !self.is_held(host, port) && !requested.contains(&port) && !busy.contains(&port)
            });
            if usable {
                for role in &open_roles {
                    result.set(*role, slot.get(*role));
                }
                return Ok(result);
            }
        }
        Err(HubError::PortUnavailable {
            message: format!(
                "no free port set left: all {} slots of the range {}..={} are held or busy",
                self.config.max_slot(),
                self.config.min_port,
                self.config.max_port
            ),
        })
    }
}

/// Leases on `host` on any port of `ports` held by a project other than `owner`.
async fn leases_of(
    conn: Conn<'_>,
    host: &str,
    ports: &PortSet,
    owner: Option<i64>,
) -> Result<Vec<Lease>> {
    let rows: Vec<(i64, i64, String)> = dispatch!(conn, c => sqlx::query_as(
        "SELECT l.port, l.project_id, p.name FROM port_leases l \
         JOIN projects p ON p.id = l.project_id \
         WHERE l.host = $5 AND l.port IN ($1, $2, $3, $4)",
    )
    .bind(i64::from(ports.backend))
    .bind(i64::from(ports.frontend))
    .bind(i64::from(ports.postgres))
    .bind(i64::from(ports.redis))
    .bind(host)
    .fetch_all(&mut *c)
    .await?);
    let mut leases = Vec::with_capacity(rows.len());
    for (port, holder_id, holder_name) in rows {
        let lease = Lease {
            port: port_from_db(port)?,
            holder_id,
            holder_name,
        };
        if Some(lease.holder_id) != owner {
            leases.push(lease);
        }
    }
    Ok(leases)
}

/// Which of `ports` cannot be bound on the host right now. Probing is a system call per port,
/// so it runs on a blocking thread, outside every lock and transaction.
pub async fn probe_busy(ports: Vec<u16>) -> Result<Vec<u16>> {
    // Nothing to probe (an empty stack, ports its own containers hold): no thread hop.
    if ports.is_empty() {
        return Ok(Vec::new());
    }
    tokio::task::spawn_blocking(move || {
        ports
            .into_iter()
            .filter(|port| !is_port_free_on_host(*port))
            .collect()
    })
    .await
    .map_err(|err| HubError::Internal(format!("port probe failed: {err}")))
}

/// Converts a stored port, rejecting values a corrupted database could hold.
pub(crate) fn port_from_db(value: i64) -> Result<u16> {
    u16::try_from(value)
        .map_err(|_| HubError::Internal(format!("stored port {value} is not a valid TCP port")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_slot_matches_the_original_hub() {
        let config = PortConfig::default();
        assert_eq!(
            config.slot(1),
            Some(PortSet {
                backend: 8010,
                frontend: 3010,
                postgres: 5442,
                redis: 6389
            })
        );
    }

    #[test]
    fn slots_stop_at_the_top_of_the_range() {
        let config = PortConfig::default();
        let max = config.max_slot();
        assert!(config.slot(max).is_some());
        assert_eq!(config.slot(max + 1), None);
        // backend is the highest base: 8000 + 10·k ≤ 65535
        assert_eq!(max, 5753);
    }

    #[test]
    fn bitmap_tracks_ports_at_both_ends() {
        let mut bitmap = PortBitmap::new();
        for port in [0u16, 63, 64, 65535] {
            assert!(!bitmap.contains(port));
            bitmap.insert(port);
            assert!(bitmap.contains(port));
        }
        bitmap.remove(64);
        assert!(!bitmap.contains(64));
        assert!(bitmap.contains(63));
    }

    #[test]
    fn invalid_layouts_are_rejected_with_the_field() {
        let config = PortConfig {
            stride: 0,
            ..PortConfig::default()
        };
        let err = PortAllocator::new(config).unwrap_err();
        assert_eq!(err.field(), Some("ports.stride"));
    }
}
