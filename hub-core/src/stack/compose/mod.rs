//! Compose files: a project's `compose.yaml` (or `compose.yml`, `docker-compose.yaml`,
//! `docker-compose.yml`) read as a hub stack, after the Compose Specification.
//!
//! What the hub adds is the host ports: every published port gets its host port from the
//! project's allocation, whatever the file writes, so several copies of one compose project run
//! side by side. A service's first published port takes the project's port for its role
//! (`x-hub: { role: backend }`, or by name: `backend`/`api`, `frontend`/`web`/`ui`,
//! `postgres`/`db`, `redis`/`cache`); every other published port gets an extra port leased to
//! the project. Services may use them as `${BACKEND_PORT}` … and `${<SERVICE>_PORT}` /
//! `${<SERVICE>_<CONTAINER PORT>_PORT}`.
//!
//! A key the hub does not support is an error naming the key and its line, never ignored.
//! Extension fields (`x-…`) are ignored, as the specification says, except `x-hub`.

mod vars;
mod yaml;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::path::Path;
use std::time::Duration;

use self::vars::{Variables, parse_env_file};
use self::yaml::{Node, Value};
use super::file::{DEFAULT_HEALTH_TIMEOUT, DEFAULT_STOP_GRACE, is_service_name, leaves_folder};
use super::{
    BuildSpec, Condition, Dependency, HealthSpec, Mount, PortMapping, Protocol, RestartPolicy,
    ServiceSpec, StackContext, StackFormat, StackSpec, VolumeSpec,
};
use crate::error::{HubError, Result};
use crate::ports::PortRole;

/// The compose file names a project folder may hold, in compose's order of preference.
pub const COMPOSE_FILES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

const TOP_KEYS: &[&str] = &["services", "volumes", "networks", "version", "name"];
const SERVICE_KEYS: &[&str] = &[
    "image",
    "build",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "ports",
    "volumes",
    "depends_on",
    "healthcheck",
    "working_dir",
    "user",
    "restart",
    "labels",
    "networks",
    "profiles",
];
/// Label prefixes the hub sets itself: a file may not forge them.
const RESERVED_LABELS: [&str; 2] = ["com.docker.compose.", "dev.commandcenter.hub."];

/// The port role a service takes from its name alone.
pub fn role_by_name(service: &str) -> Option<PortRole> {
    match service {
        "backend" | "api" => Some(PortRole::Backend),
        "frontend" | "web" | "ui" => Some(PortRole::Frontend),
        "postgres" | "db" => Some(PortRole::Postgres),
        "redis" | "cache" => Some(PortRole::Redis),
        _ => None,
    }
}

/// Reads compose file `text` (named `source` in messages) of the project in `folder`, for the
/// project `context` describes.
pub(super) fn parse(
    text: &str,
    source: &str,
    folder: &Path,
    context: &StackContext,
) -> Result<StackSpec> {
    let root = yaml::parse(text).map_err(|err| invalid(source, "syntax", err.line, err.message))?;
    let mut reader = Reader::new(source, folder, context)?;
    reader.stack(&root)
}

fn invalid(source: &str, path: &str, line: usize, message: impl Display) -> HubError {
    HubError::invalid(
        format!("{source}: {path}"),
        format!("line {line}: {message}"),
    )
}

/// The `(key, value)` pairs of a mapping node.
type Entries = [(Node, Node)];

fn get<'n>(entries: &'n Entries, key: &str) -> Option<&'n Node> {
    entries.iter().find(|(k, _)| k.key() == key).map(|(_, v)| v)
}

/// A service as the first pass saw it: its fields, and its published ports.
struct Draft<'n> {
    name: String,
    key: &'n Node,
    fields: &'n Entries,
    /// `Some(None)` for `x-hub: { role: none }`.
    explicit_role: Option<Option<PortRole>>,
    ports: Vec<PortMapping>,
}

struct Reader<'a> {
    source: &'a str,
    folder: &'a Path,
    context: &'a StackContext,
    vars: Variables,
    warnings: Vec<String>,
    allow_outside: bool,
}

impl<'a> Reader<'a> {
    /// Variables come from the project's `.env`, then the hub's own, which win: the ports in
    /// them are the allocation.
    fn new(source: &'a str, folder: &'a Path, context: &'a StackContext) -> Result<Self> {
        let mut reader = Reader {
            source,
            folder,
            context,
            vars: Variables::new(BTreeMap::new()),
            warnings: Vec::new(),
            allow_outside: false,
        };
        let env_path = folder.join(".env");
        let mut values = BTreeMap::new();
        let mut unset = Vec::new();
        match std::fs::read_to_string(&env_path) {
            Ok(text) => {
                let name = env_path.display().to_string();
                let entries = parse_env_file(&text)
                    .map_err(|(line, message)| invalid(&name, "syntax", line, message))?;
                for entry in entries {
                    let Some(value) = entry.value else { continue };
                    let value = if entry.literal {
                        value
                    } else {
                        // A value may use the ones above it and the hub's.
                        let mut scope = values.clone();
                        scope.extend(context.variables.clone());
                        let mut vars = Variables::new(scope);
                        let value = vars
                            .interpolate(&value)
                            .map_err(|message| invalid(&name, &entry.key, entry.line, message))?;
                        unset.extend(vars.unset);
                        value
                    };
                    values.insert(entry.key, value);
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(HubError::io(
                    format!("cannot read {}", env_path.display()),
                    err,
                ));
            }
        }
        for (key, value) in &context.variables {
            if let Some(old) = values.insert(key.clone(), value.clone())
                && old != *value
            {
                reader.warnings.push(format!(
                    "{key} from .env is replaced by the hub's value ({value})"
                ));
            }
        }
        unset.sort();
        unset.dedup();
        reader.vars = Variables::new(values);
        reader.vars.unset = unset;
        Ok(reader)
    }

    fn err(&self, path: &str, node: &Node, message: impl Display) -> HubError {
        invalid(self.source, path, node.line, message)
    }

    fn entries<'n>(&self, node: &'n Node, path: &str) -> Result<&'n Entries> {
        match &node.value {
            Value::Map(entries) => Ok(entries),
            Value::Null => Ok(&[]),
            _ => Err(self.err(path, node, "must be a mapping")),
        }
    }

    fn items<'n>(&self, node: &'n Node, path: &str) -> Result<&'n [Node]> {
        match &node.value {
            Value::Seq(items) => Ok(items),
            Value::Null => Ok(&[]),
            _ => Err(self.err(path, node, "must be a list")),
        }
    }

    /// Refuses every key of `entries` that is not in `allowed` (extension fields `x-…` pass).
    fn check_keys(&self, entries: &Entries, path: &str, allowed: &[&str]) -> Result<()> {
        for (key, _) in entries {
            let name = key.key();
            if name.starts_with("x-") || allowed.contains(&name) {
                continue;
            }
            let at = if path.is_empty() {
                name.to_owned()
            } else {
                format!("{path}.{name}")
            };
            return Err(self.err(
                &at,
                key,
                format!(
                    "'{name}' is not supported by the hub (supported here: {})",
                    allowed.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// A scalar, interpolated.
    fn text(&mut self, node: &Node, path: &str) -> Result<String> {
        match &node.value {
            Value::Scalar { text, .. } => self
                .vars
                .interpolate(text)
                .map_err(|message| self.err(path, node, message)),
            Value::Null => Err(self.err(path, node, "needs a value")),
            _ => Err(self.err(path, node, "must be a single value, not a list or mapping")),
        }
    }

    fn flag(&mut self, node: &Node, path: &str) -> Result<bool> {
        match self.text(node, path)?.as_str() {
            "true" | "True" | "TRUE" => Ok(true),
            "false" | "False" | "FALSE" => Ok(false),
            other => Err(self.err(path, node, format!("'{other}' is not true or false"))),
        }
    }

    fn number<T: TryFrom<i64>>(&mut self, node: &Node, path: &str, what: &str) -> Result<T> {
        let text = self.text(node, path)?;
        text.trim()
            .parse::<i64>()
            .ok()
            .and_then(|n| T::try_from(n).ok())
            .ok_or_else(|| self.err(path, node, format!("'{text}' is not {what}")))
    }

    fn duration(&mut self, node: &Node, path: &str) -> Result<Duration> {
        let text = self.text(node, path)?;
        humantime::parse_duration(text.trim()).map_err(|err| {
            self.err(
                path,
                node,
                format!("'{text}' is not a duration like \"30s\" or \"1m30s\": {err}"),
            )
        })
    }

    /// A command: a list as written, or a string split the way a shell would.
    fn command(&mut self, node: &Node, path: &str) -> Result<Vec<String>> {
        match &node.value {
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| self.text(item, &format!("{path}[{i}]")))
                .collect(),
            _ => {
                let text = self.text(node, path)?;
                shlex::split(&text)
                    .ok_or_else(|| self.err(path, node, format!("unbalanced quotes in '{text}'")))
            }
        }
    }

    /// `KEY: value` mappings and `KEY=value` lists alike; a key without a value is `None`.
    fn pairs(&mut self, node: &Node, path: &str) -> Result<Vec<(String, Option<String>)>> {
        let mut pairs = Vec::new();
        match &node.value {
            Value::Map(entries) => {
                for (key, value) in entries {
                    let at = format!("{path}.{}", key.key());
                    let value = match &value.value {
                        Value::Null => None,
                        _ => Some(self.text(value, &at)?),
                    };
                    pairs.push((key.key().to_owned(), value));
                }
            }
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let text = self.text(item, &format!("{path}[{i}]"))?;
                    match text.split_once('=') {
                        Some((key, value)) => pairs.push((key.to_owned(), Some(value.to_owned()))),
                        None => pairs.push((text, None)),
                    }
                }
            }
            Value::Null => {}
            Value::Scalar { .. } => {
                return Err(self.err(path, node, "must be a mapping or a list of KEY=value"));
            }
        }
        Ok(pairs)
    }

    fn stack(&mut self, root: &Node) -> Result<StackSpec> {
        let top = match &root.value {
            Value::Map(entries) => entries.as_slice(),
            _ => {
                return Err(self.err(
                    "syntax",
                    root,
                    "a compose file is a mapping with a `services` key",
                ));
            }
        };
        self.check_keys(top, "", TOP_KEYS)?;
        if get(top, "version").is_some() {
            self.warnings
                .push("`version` is obsolete and ignored, as compose itself does".into());
        }
        if get(top, "name").is_some() {
            self.warnings
                .push("`name` is ignored: the hub names the stack hub-<project slug>".into());
        }
        let mut health_timeout = DEFAULT_HEALTH_TIMEOUT;
        let mut stop_grace = DEFAULT_STOP_GRACE;
        if let Some(hub) = get(top, "x-hub") {
            let entries = self.entries(hub, "x-hub")?;
            self.check_keys(
                entries,
                "x-hub",
                &["health_timeout", "stop_grace", "allow_outside"],
            )?;
            for (key, value) in entries {
                let path = format!("x-hub.{}", key.key());
                match key.key() {
                    "health_timeout" => health_timeout = self.duration(value, &path)?,
                    "stop_grace" => stop_grace = self.duration(value, &path)?,
                    "allow_outside" => self.allow_outside = self.flag(value, &path)?,
                    _ => {}
                }
            }
        }
        let volumes = match get(top, "volumes") {
            Some(node) => self.volumes(node)?,
            None => BTreeMap::new(),
        };
        if let Some(node) = get(top, "networks") {
            for (key, value) in self.entries(node, "networks")? {
                let path = format!("networks.{}", key.key());
                if key.key() != "default" {
                    return Err(self.err(
                        &path,
                        key,
                        "only the default network is supported: the hub gives each project one \
                         network of its own",
                    ));
                }
                let entries = self.entries(value, &path)?;
                self.check_keys(entries, &path, &[])?;
            }
        }
        let empty = Node {
            line: root.line,
            value: Value::Null,
        };
        let services = get(top, "services").unwrap_or(&empty);
        let services = self.services(services, &volumes)?;
        let mut stack = StackSpec {
            services,
            volumes,
            health_timeout,
            stop_grace,
            allow_outside: self.allow_outside,
            source: self.source.to_owned(),
            format: StackFormat::Compose,
            warnings: Vec::new(),
        };
        for name in &self.vars.unset {
            self.warnings.push(format!(
                "variable {name} is not set: an empty string is used, as compose does"
            ));
        }
        stack.warnings = std::mem::take(&mut self.warnings);
        Ok(stack)
    }

    fn volumes(&mut self, node: &Node) -> Result<BTreeMap<String, VolumeSpec>> {
        let mut volumes = BTreeMap::new();
        for (key, value) in self.entries(node, "volumes")? {
            let path = format!("volumes.{}", key.key());
            let entries = self.entries(value, &path)?;
            self.check_keys(entries, &path, &["name", "external", "labels"])?;
            let mut spec = VolumeSpec::default();
            for (field, value) in entries {
                let at = format!("{path}.{}", field.key());
                match field.key() {
                    "name" => spec.name = Some(self.text(value, &at)?),
                    "external" => spec.external = self.flag(value, &at)?,
                    "labels" => spec.labels = self.labels(value, &at)?,
                    _ => {}
                }
            }
            volumes.insert(key.key().to_owned(), spec);
        }
        Ok(volumes)
    }

    fn labels(&mut self, node: &Node, path: &str) -> Result<BTreeMap<String, String>> {
        let mut labels = BTreeMap::new();
        for (key, value) in self.pairs(node, path)? {
            if RESERVED_LABELS.iter().any(|prefix| key.starts_with(prefix)) {
                return Err(self.err(
                    path,
                    node,
                    format!("label '{key}' is one the hub sets itself"),
                ));
            }
            labels.insert(key, value.unwrap_or_default());
        }
        Ok(labels)
    }

    fn services(
        &mut self,
        node: &Node,
        volumes: &BTreeMap<String, VolumeSpec>,
    ) -> Result<Vec<ServiceSpec>> {
        let mut drafts: Vec<Draft<'_>> = Vec::new();
        let mut inactive: BTreeMap<String, String> = BTreeMap::new();
        for (key, value) in self.entries(node, "services")? {
            let name = key.key().to_owned();
            let path = format!("services.{name}");
            if !is_service_name(&name) {
                return Err(self.err(
                    &path,
                    key,
                    "a service name must start with a lowercase letter or digit and use only \
                     a-z, 0-9, '-' and '_'",
                ));
            }
            let fields = self.entries(value, &path)?;
            self.check_keys(fields, &path, SERVICE_KEYS)?;
            if let Some(profiles) = get(fields, "profiles") {
                let at = format!("{path}.profiles");
                let mut names = Vec::new();
                for (i, item) in self.items(profiles, &at)?.iter().enumerate() {
                    names.push(self.text(item, &format!("{at}[{i}]"))?);
                }
                if !names.is_empty() {
                    let names = names.join(", ");
                    self.warnings.push(format!(
                        "service '{name}' runs only under profile {names}: the hub runs the \
                         default profile, so it is left out"
                    ));
                    inactive.insert(name, names);
                    continue;
                }
            }
            let explicit_role = self.hub_role(fields, &path)?;
            let ports = match get(fields, "ports") {
                Some(ports) => self.ports(ports, &format!("{path}.ports"))?,
                None => Vec::new(),
            };
            drafts.push(Draft {
                name,
                key,
                fields,
                explicit_role,
                ports,
            });
        }
        self.assign_ports(&mut drafts)?;

        let known: BTreeSet<&str> = drafts.iter().map(|d| d.name.as_str()).collect();
        let mut services = Vec::with_capacity(drafts.len());
        for draft in &drafts {
            services.push(self.service(draft, &known, &inactive, volumes)?);
        }
        let completed: BTreeSet<String> = services
            .iter()
            .flat_map(|s| &s.depends_on)
            .filter(|d| d.condition == Condition::ServiceCompletedSuccessfully)
            .map(|d| d.service.clone())
            .collect();
        for service in &mut services {
            service.run_once = completed.contains(&service.name);
        }
        services.sort_by(|a, b| a.name.cmp(&b.name));
        let probe = StackSpec {
            services,
            volumes: BTreeMap::new(),
            health_timeout: Duration::ZERO,
            stop_grace: Duration::ZERO,
            allow_outside: false,
            source: String::new(),
            format: StackFormat::Compose,
            warnings: Vec::new(),
        };
        let cycle = probe.in_cycle();
        if let Some(draft) = drafts.iter().find(|d| cycle.contains(&d.name.as_str())) {
            return Err(self.err(
                &format!("services.{}.depends_on", draft.name),
                draft.key,
                format!("dependency cycle between {}", cycle.join(", ")),
            ));
        }
        Ok(probe.services)
    }

    /// `x-hub: { role: … }` of a service.
    fn hub_role(&mut self, fields: &Entries, path: &str) -> Result<Option<Option<PortRole>>> {
        let Some(hub) = get(fields, "x-hub") else {
            return Ok(None);
        };
        let at = format!("{path}.x-hub");
        let entries = self.entries(hub, &at)?;
        self.check_keys(entries, &at, &["role"])?;
        let Some(role) = get(entries, "role") else {
            return Ok(None);
        };
        let at = format!("{at}.role");
        let text = self.text(role, &at)?;
        if text == "none" {
            return Ok(Some(None));
        }
        text.parse::<PortRole>()
            .map(|r| Some(Some(r)))
            .map_err(|_| {
                self.err(
                    &at,
                    role,
                    format!(
                        "unknown role '{text}' (expected backend, frontend, postgres, redis or \
                     none)"
                    ),
                )
            })
    }

    /// Gives every published port its host port: the role's for a service's first one, an
    /// extra lease for the rest; then offers them as `${…_PORT}` variables.
    fn assign_ports(&mut self, drafts: &mut [Draft<'_>]) -> Result<()> {
        let mut claimed: BTreeMap<PortRole, String> = BTreeMap::new();
        for draft in drafts.iter().filter(|d| !d.ports.is_empty()) {
            if let Some(Some(role)) = draft.explicit_role
                && let Some(other) = claimed.insert(role, draft.name.clone())
            {
                return Err(self.err(
                    &format!("services.{}.x-hub.role", draft.name),
                    draft.key,
                    format!("role '{role}' is already taken by service '{other}'"),
                ));
            }
        }
        let mut roles: BTreeMap<String, PortRole> = claimed
            .iter()
            .map(|(role, name)| (name.clone(), *role))
            .collect();
        // A role given explicitly wins over one guessed from a name; two names are a tie.
        let mut by_name: BTreeMap<PortRole, String> = BTreeMap::new();
        for draft in drafts.iter().filter(|d| !d.ports.is_empty()) {
            if draft.explicit_role.is_some() {
                continue;
            }
            let Some(role) = role_by_name(&draft.name) else {
                continue;
            };
            if claimed.contains_key(&role) {
                continue;
            }
            if let Some(other) = by_name.insert(role, draft.name.clone()) {
                return Err(self.err(
                    &format!("services.{}", draft.name),
                    draft.key,
                    format!(
                        "services '{other}' and '{}' both take the {role} port by their names; \
                         give one of them `x-hub: {{ role: … }}` (or `role: none`)",
                        draft.name
                    ),
                ));
            }
            roles.insert(draft.name.clone(), role);
        }
        for draft in drafts.iter_mut() {
            let role = roles.get(&draft.name).copied();
            for (i, mapping) in draft.ports.iter_mut().enumerate() {
                if i == 0
                    && let Some(role) = role
                {
                    mapping.role = Some(role);
                    mapping.host_port = self.context.ports.map(|ports| ports.get(role));
                } else {
                    mapping.host_port = self
                        .context
                        .extra_ports
                        .get(&mapping.lease_key(&draft.name))
                        .copied();
                }
            }
            let prefix = draft.name.to_ascii_uppercase().replace('-', "_");
            for (i, mapping) in draft.ports.iter().enumerate() {
                let Some(port) = mapping.host_port else {
                    continue;
                };
                let mut names = vec![format!("{prefix}_{}_PORT", mapping.target)];
                if i == 0 {
                    names.push(format!("{prefix}_PORT"));
                }
                // The hub's own variables keep their meaning.
                for name in names {
                    if !self.context.variables.contains_key(&name) {
                        self.vars.set(name, port.to_string());
                    }
                }
            }
        }
        Ok(())
    }

    fn ports(&mut self, node: &Node, path: &str) -> Result<Vec<PortMapping>> {
        let mut ports = Vec::new();
        for (i, item) in self.items(node, path)?.iter().enumerate() {
            let at = format!("{path}[{i}]");
            match &item.value {
                Value::Map(entries) => {
                    self.check_keys(
                        entries,
                        &at,
                        &[
                            "target",
                            "published",
                            "host_ip",
                            "protocol",
                            "mode",
                            "name",
                            "app_protocol",
                        ],
                    )?;
                    let target = get(entries, "target")
                        .ok_or_else(|| self.err(&at, item, "a port needs `target`"))?;
                    let target = self.port(target, &format!("{at}.target"))?;
                    let mut mapping = mapping(target, Protocol::Tcp, None, None);
                    for (key, value) in entries {
                        let field = format!("{at}.{}", key.key());
                        match key.key() {
                            "published" => mapping.published = Some(self.text(value, &field)?),
                            "host_ip" => mapping.host_ip = self.text(value, &field)?,
                            "protocol" => mapping.protocol = self.protocol(value, &field)?,
                            "mode" => {
                                let mode = self.text(value, &field)?;
                                if mode != "host" && mode != "ingress" {
                                    return Err(self.err(
                                        &field,
                                        value,
                                        format!("'{mode}' is not host or ingress"),
                                    ));
                                }
                            }
                            _ => {}
                        }
                    }
                    ports.push(mapping);
                }
                _ => {
                    let text = self.text(item, &at)?;
                    let parsed =
                        short_port(&text).map_err(|message| self.err(&at, item, message))?;
                    ports.extend(parsed);
                }
            }
        }
        let mut seen = BTreeSet::new();
        for mapping in &ports {
            if !seen.insert((mapping.target, mapping.protocol)) {
                return Err(self.err(
                    path,
                    node,
                    format!(
                        "container port {}/{} is published twice",
                        mapping.target, mapping.protocol
                    ),
                ));
            }
        }
        Ok(ports)
    }

    fn port(&mut self, node: &Node, path: &str) -> Result<u16> {
        let port: u16 = self.number(node, path, "a port (1-65535)")?;
        if port == 0 {
            return Err(self.err(path, node, "0 is not a port (1-65535)"));
        }
        Ok(port)
    }

    fn protocol(&mut self, node: &Node, path: &str) -> Result<Protocol> {
        match self.text(node, path)?.as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            other => Err(self.err(path, node, format!("'{other}' is not tcp or udp"))),
        }
    }

    fn service(
        &mut self,
        draft: &Draft<'_>,
        known: &BTreeSet<&str>,
        inactive: &BTreeMap<String, String>,
        volumes: &BTreeMap<String, VolumeSpec>,
    ) -> Result<ServiceSpec> {
        let name = draft.name.as_str();
        let path = format!("services.{name}");
        let mut service = ServiceSpec {
            name: name.to_owned(),
            ports: draft.ports.clone(),
            ..ServiceSpec::default()
        };
        let mut env_files = None;
        let mut environment = None;
        for (key, value) in draft.fields {
            let at = format!("{path}.{}", key.key());
            match key.key() {
                "image" => service.image = self.text(value, &at)?.trim().to_owned(),
                "build" => service.build = Some(self.build(value, &at)?),
                "command" => service.command = Some(self.command(value, &at)?),
                "entrypoint" => service.entrypoint = Some(self.command(value, &at)?),
                "environment" => environment = Some(value),
                "env_file" => env_files = Some(value),
                "volumes" => service.volumes = self.mounts(value, &at, volumes)?,
                "depends_on" => {
                    service.depends_on = self.depends_on(value, &at, name, known, inactive)?;
                }
                "healthcheck" => service.healthcheck = Some(self.healthcheck(value, &at)?),
                "working_dir" => {
                    let dir = self.text(value, &at)?;
                    if !dir.starts_with('/') {
                        return Err(self.err(
                            &at,
                            value,
                            "must be an absolute path in the container",
                        ));
                    }
                    service.working_dir = Some(dir);
                }
                "user" => service.user = Some(self.text(value, &at)?),
                "restart" => service.restart = Some(self.restart(value, &at)?),
                "labels" => service.labels = self.labels(value, &at)?,
                "networks" => service.aliases = self.networks(value, &at)?,
                _ => {}
            }
        }
        if service.image.is_empty() {
            if service.build.is_none() {
                return Err(self.err(&path, draft.key, "a service needs `image` or `build`"));
            }
            let slug = self
                .context
                .variables
                .get("PROJECT_SLUG")
                .map_or("project", String::as_str);
            service.image = format!("hub-{slug}_{name}");
        }
        if let Some(files) = env_files {
            self.env_files(files, &format!("{path}.env_file"), &mut service.environment)?;
        }
        if let Some(environment) = environment {
            for (key, value) in self.pairs(environment, &format!("{path}.environment"))? {
                // `KEY` alone takes the variable's value, and is left out when it has none.
                let value = value.or_else(|| self.vars.get(&key).map(str::to_owned));
                if let Some(value) = value {
                    service.environment.insert(key, value);
                }
            }
        }
        Ok(service)
    }

    fn env_files(
        &mut self,
        node: &Node,
        path: &str,
        environment: &mut BTreeMap<String, String>,
    ) -> Result<()> {
        let single = [node.clone()];
        let items: &[Node] = match &node.value {
            Value::Seq(items) => items,
            _ => &single,
        };
        for (i, item) in items.iter().enumerate() {
            let at = format!("{path}[{i}]");
            let (file, required) = match &item.value {
                Value::Map(entries) => {
                    self.check_keys(entries, &at, &["path", "required"])?;
                    let file = get(entries, "path")
                        .ok_or_else(|| self.err(&at, item, "an env_file entry needs `path`"))?;
                    let file = self.text(file, &format!("{at}.path"))?;
                    let required = match get(entries, "required") {
                        Some(flag) => self.flag(flag, &format!("{at}.required"))?,
                        None => true,
                    };
                    (file, required)
                }
                _ => (self.text(item, &at)?, true),
            };
            if !self.allow_outside && leaves_folder(&file) {
                return Err(self.err(&at, item, leaves_the_folder(&format!("'{file}'"))));
            }
            let full = self.folder.join(&file);
            let text = match std::fs::read_to_string(&full) {
                Ok(text) => text,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound && !required => continue,
                Err(err) => {
                    return Err(self.err(&at, item, format!("cannot read '{file}': {err}")));
                }
            };
            let entries = parse_env_file(&text).map_err(|(line, message)| {
                self.err(&at, item, format!("{file} line {line}: {message}"))
            })?;
            for entry in entries {
                let value = match entry.value {
                    Some(value) if entry.literal => Some(value),
                    Some(value) => Some(self.vars.interpolate(&value).map_err(|message| {
                        self.err(&at, item, format!("{file} line {}: {message}", entry.line))
                    })?),
                    None => self.vars.get(&entry.key).map(str::to_owned),
                };
                if let Some(value) = value {
                    environment.insert(entry.key, value);
                }
            }
        }
        Ok(())
    }

    fn build(&mut self, node: &Node, path: &str) -> Result<BuildSpec> {
        let mut build = BuildSpec {
            context: ".".into(),
            context_dir: None,
            dockerfile: "Dockerfile".into(),
            args: BTreeMap::new(),
            target: None,
        };
        match &node.value {
            Value::Map(entries) => {
                self.check_keys(entries, path, &["context", "dockerfile", "args", "target"])?;
                for (key, value) in entries {
                    let at = format!("{path}.{}", key.key());
                    match key.key() {
                        "context" => build.context = self.text(value, &at)?,
                        "dockerfile" => build.dockerfile = self.text(value, &at)?,
                        "target" => build.target = Some(self.text(value, &at)?),
                        "args" => {
                            for (arg, value) in self.pairs(value, &at)? {
                                let value =
                                    value.or_else(|| self.vars.get(&arg).map(str::to_owned));
                                if let Some(value) = value {
                                    build.args.insert(arg, value);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => build.context = self.text(node, path)?,
        }
        if build.context.contains("://") || build.context.starts_with("git@") {
            return Err(self.err(
                path,
                node,
                format!(
                    "'{}': only a folder of the project can be a build context",
                    build.context
                ),
            ));
        }
        if !self.allow_outside && leaves_folder(&build.context) {
            return Err(self.err(
                path,
                node,
                leaves_the_folder(&format!("context '{}'", build.context)),
            ));
        }
        if leaves_folder(&build.dockerfile) {
            return Err(self.err(
                path,
                node,
                format!(
                    "dockerfile '{}' must lie inside the context",
                    build.dockerfile
                ),
            ));
        }
        Ok(build)
    }

    fn mounts(
        &mut self,
        node: &Node,
        path: &str,
        declared: &BTreeMap<String, VolumeSpec>,
    ) -> Result<Vec<Mount>> {
        let mut mounts = Vec::new();
        for (i, item) in self.items(node, path)?.iter().enumerate() {
            let at = format!("{path}[{i}]");
            let (kind, source, target, read_only) = match &item.value {
                Value::Map(entries) => {
                    self.check_keys(
                        entries,
                        &at,
                        &["type", "source", "target", "read_only", "bind", "volume"],
                    )?;
                    let mut kind = None;
                    let mut source = None;
                    let mut target = None;
                    let mut read_only = false;
                    for (key, value) in entries {
                        let field = format!("{at}.{}", key.key());
                        match key.key() {
                            "type" => kind = Some(self.text(value, &field)?),
                            "source" => source = Some(self.text(value, &field)?),
                            "target" => target = Some(self.text(value, &field)?),
                            "read_only" => read_only = self.flag(value, &field)?,
                            "bind" => {
                                let options = self.entries(value, &field)?;
                                self.check_keys(options, &field, &["create_host_path"])?;
                            }
                            "volume" => {
                                let options = self.entries(value, &field)?;
                                self.check_keys(options, &field, &[])?;
                            }
                            _ => {}
                        }
                    }
                    let kind = kind.ok_or_else(|| {
                        self.err(&at, item, "a mount needs `type` (volume or bind)")
                    })?;
                    if kind != "volume" && kind != "bind" {
                        return Err(self.err(
                            &format!("{at}.type"),
                            item,
                            format!("mount type '{kind}' is not supported (volume or bind)"),
                        ));
                    }
                    let target =
                        target.ok_or_else(|| self.err(&at, item, "a mount needs `target`"))?;
                    (Some(kind), source, target, read_only)
                }
                _ => {
                    let text = self.text(item, &at)?;
                    let parts: Vec<&str> = text.split(':').collect();
                    let (source, target, mode) = match parts.as_slice() {
                        [_] => (None, parts[0], None),
                        [source, target] => (Some(*source), *target, None),
                        [source, target, mode] => (Some(*source), *target, Some(*mode)),
                        _ => {
                            return Err(self.err(
                                &at,
                                item,
                                format!("'{text}' is not SOURCE:TARGET[:MODE]"),
                            ));
                        }
                    };
                    let mut read_only = false;
                    for option in mode.unwrap_or("").split(',').filter(|o| !o.is_empty()) {
                        match option {
                            "ro" => read_only = true,
                            "rw" => read_only = false,
                            other => {
                                return Err(self.err(
                                    &at,
                                    item,
                                    format!("mount option '{other}' is not supported (ro or rw)"),
                                ));
                            }
                        }
                    }
                    (
                        None,
                        source.map(str::to_owned),
                        target.to_owned(),
                        read_only,
                    )
                }
            };
            if !target.starts_with('/') {
                return Err(self.err(
                    &at,
                    item,
                    format!("the container path '{target}' must be absolute"),
                ));
            }
            let Some(source) = source.filter(|s| !s.is_empty()) else {
                return Err(self.err(
                    &at,
                    item,
                    "an anonymous volume would not survive a stop; name it (data:/path) and \
                     declare it under the top-level volumes",
                ));
            };
            let is_path =
                source.starts_with('.') || source.starts_with('/') || source.starts_with('~');
            let bind = match kind.as_deref() {
                Some("bind") => true,
                Some(_) => false,
                None => is_path,
            };
            if bind {
                if source.starts_with('~') || (!self.allow_outside && leaves_folder(&source)) {
                    return Err(self.err(
                        &at,
                        item,
                        leaves_the_folder(&format!("bind mount '{source}'")),
                    ));
                }
                mounts.push(Mount::Bind {
                    source,
                    target,
                    host: None,
                    read_only,
                });
            } else {
                if !declared.contains_key(&source) {
                    return Err(self.err(
                        &at,
                        item,
                        format!("volume '{source}' is not declared under the top-level volumes"),
                    ));
                }
                mounts.push(Mount::Volume {
                    name: source,
                    target,
                    read_only,
                });
            }
        }
        Ok(mounts)
    }

    fn depends_on(
        &mut self,
        node: &Node,
        path: &str,
        own: &str,
        known: &BTreeSet<&str>,
        inactive: &BTreeMap<String, String>,
    ) -> Result<Vec<Dependency>> {
        let mut wanted: Vec<(String, Condition, bool, &Node)> = Vec::new();
        match &node.value {
            Value::Map(entries) => {
                for (key, value) in entries {
                    let at = format!("{path}.{}", key.key());
                    let options = self.entries(value, &at)?;
                    self.check_keys(options, &at, &["condition", "required", "restart"])?;
                    let mut condition = Condition::ServiceStarted;
                    let mut required = true;
                    for (option, value) in options {
                        let field = format!("{at}.{}", option.key());
                        match option.key() {
                            "condition" => {
                                let name = self.text(value, &field)?;
                                condition = match Condition::named(&name) {
                                    Some(condition) => condition,
                                    None => {
                                        let [a, b, c] = Condition::ALL.map(Condition::as_str);
                                        return Err(self.err(
                                            &field,
                                            value,
                                            format!("unknown condition '{name}' ({a}, {b} or {c})"),
                                        ));
                                    }
                                }
                            }
                            "required" => required = self.flag(value, &field)?,
                            "restart" if self.flag(value, &field)? => {
                                self.warnings.push(format!(
                                    "{field}: the hub does not restart '{own}' when '{}' \
                                     restarts",
                                    key.key()
                                ));
                            }
                            _ => {}
                        }
                    }
                    wanted.push((key.key().to_owned(), condition, required, key));
                }
            }
            _ => {
                for (i, item) in self.items(node, path)?.iter().enumerate() {
                    let name = self.text(item, &format!("{path}[{i}]"))?;
                    wanted.push((name, Condition::ServiceStarted, true, item));
                }
            }
        }
        let mut dependencies = Vec::with_capacity(wanted.len());
        for (service, condition, required, at) in wanted {
            if service == own {
                return Err(self.err(path, at, "a service cannot depend on itself"));
            }
            if !known.contains(service.as_str()) {
                if !required {
                    continue;
                }
                let message = match inactive.get(&service) {
                    Some(profiles) => format!(
                        "'{service}' runs only under profile {profiles}, which the hub does not run"
                    ),
                    None => format!(
                        "unknown service '{service}' (services: {})",
                        known.iter().copied().collect::<Vec<_>>().join(", ")
                    ),
                };
                return Err(self.err(path, at, message));
            }
            dependencies.push(Dependency { service, condition });
        }
        Ok(dependencies)
    }

    fn healthcheck(&mut self, node: &Node, path: &str) -> Result<HealthSpec> {
        let entries = self.entries(node, path)?;
        self.check_keys(
            entries,
            path,
            &[
                "test",
                "interval",
                "timeout",
                "retries",
                "start_period",
                "start_interval",
                "disable",
            ],
        )?;
        // Docker's defaults, which compose uses too.
        let mut check = HealthSpec {
            test: Vec::new(),
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
            retries: 3,
            start_period: Duration::ZERO,
        };
        for (key, value) in entries {
            let at = format!("{path}.{}", key.key());
            match key.key() {
                "test" => {
                    check.test = match &value.value {
                        Value::Seq(_) => {
                            let test = self.command(value, &at)?;
                            let valid = match test.first().map(String::as_str) {
                                Some("CMD") => test.len() > 1,
                                Some("CMD-SHELL") => test.len() == 2,
                                Some("NONE") => test.len() == 1,
                                _ => false,
                            };
                            if !valid {
                                return Err(self.err(
                                    &at,
                                    value,
                                    "must be [\"CMD\", program, args…], [\"CMD-SHELL\", \"command\"], \
                                     [\"NONE\"] or a shell command",
                                ));
                            }
                            test
                        }
                        _ => vec!["CMD-SHELL".into(), self.text(value, &at)?],
                    };
                }
                "interval" => check.interval = self.duration(value, &at)?,
                "timeout" => check.timeout = self.duration(value, &at)?,
                "start_period" => check.start_period = self.duration(value, &at)?,
                "start_interval" => {
                    self.duration(value, &at)?;
                    self.warnings.push(format!(
                        "{at}: needs Docker API 1.44; the hub's checks already run fast while a \
                         service starts"
                    ));
                }
                "retries" => check.retries = self.number(value, &at, "a number of retries")?,
                "disable" if self.flag(value, &at)? => check.test = vec!["NONE".into()],
                _ => {}
            }
        }
        Ok(check)
    }

    fn restart(&mut self, node: &Node, path: &str) -> Result<RestartPolicy> {
        let text = self.text(node, path)?;
        Ok(match text.as_str() {
            "no" => RestartPolicy::No,
            "always" => RestartPolicy::Always,
            "unless-stopped" => RestartPolicy::UnlessStopped,
            "on-failure" => RestartPolicy::OnFailure { max_retries: None },
            other => match other.strip_prefix("on-failure:").map(str::parse::<u32>) {
                Some(Ok(n)) => RestartPolicy::OnFailure {
                    max_retries: Some(n),
                },
                _ => {
                    return Err(self.err(
                        path,
                        node,
                        format!("'{other}' is not no, always, on-failure[:N] or unless-stopped"),
                    ));
                }
            },
        })
    }

    /// A service's `networks`: only `default`, perhaps with aliases. Returns the aliases.
    fn networks(&mut self, node: &Node, path: &str) -> Result<Vec<String>> {
        let refuse = |reader: &Self, at: &Node, name: &str| {
            reader.err(
                path,
                at,
                format!(
                    "network '{name}': only the default network is supported (each project \
                     has one network of its own)"
                ),
            )
        };
        let mut aliases = Vec::new();
        match &node.value {
            Value::Map(entries) => {
                for (key, value) in entries {
                    if key.key() != "default" {
                        return Err(refuse(self, key, key.key()));
                    }
                    let at = format!("{path}.default");
                    let options = self.entries(value, &at)?;
                    self.check_keys(options, &at, &["aliases"])?;
                    if let Some(list) = get(options, "aliases") {
                        for (i, alias) in self
                            .items(list, &format!("{at}.aliases"))?
                            .iter()
                            .enumerate()
                        {
                            aliases.push(self.text(alias, &format!("{at}.aliases[{i}]"))?);
                        }
                    }
                }
            }
            _ => {
                for (i, item) in self.items(node, path)?.iter().enumerate() {
                    let name = self.text(item, &format!("{path}[{i}]"))?;
                    if name != "default" {
                        return Err(refuse(self, item, &name));
                    }
                }
            }
        }
        Ok(aliases)
    }
}

/// The refusal of a path that leads out of the project folder.
fn leaves_the_folder(what: &str) -> String {
    format!(
        "{what} leaves the project folder; set `x-hub: {{ allow_outside: true }}` to allow it, \
         at your own risk (the hub usually runs as root beside the Docker socket)"
    )
}

fn mapping(
    target: u16,
    protocol: Protocol,
    host_ip: Option<&str>,
    published: Option<&str>,
) -> PortMapping {
    PortMapping {
        role: None,
        target,
        protocol,
        host_ip: host_ip.unwrap_or("127.0.0.1").to_owned(),
        host_port: None,
        published: published.map(str::to_owned),
    }
}

/// The short port syntax, `[[HOST_IP:]HOST_PORT[-RANGE]:]CONTAINER_PORT[-RANGE][/PROTOCOL]`; a
/// container range publishes each of its ports.
fn short_port(text: &str) -> std::result::Result<Vec<PortMapping>, String> {
    let (spec, protocol) = match text.rsplit_once('/') {
        Some((spec, "tcp")) => (spec, Protocol::Tcp),
        Some((spec, "udp")) => (spec, Protocol::Udp),
        Some((_, other)) => return Err(format!("'{other}' in '{text}' is not tcp or udp")),
        None => (text, Protocol::Tcp),
    };
    // An IPv6 host address comes in brackets: `[::1]:8080:80`.
    let (host_ip, rest) = match spec.strip_prefix('[') {
        Some(bracketed) => {
            let (ip, rest) = bracketed
                .split_once("]:")
                .ok_or_else(|| format!("'{text}': unclosed '[' around the host address"))?;
            (Some(ip), rest)
        }
        None => (None, spec),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (host_ip, published, container) = match (host_ip, parts.as_slice()) {
        (None, [container]) => (None, None, *container),
        (None, [published, container]) => (None, Some(*published), *container),
        (None, [ip, published, container]) => (Some(*ip), Some(*published), *container),
        (Some(ip), [published, container]) => (Some(ip), Some(*published), *container),
        _ => {
            return Err(format!(
                "'{text}' is not [[HOST_IP:]HOST_PORT:]CONTAINER_PORT[/PROTOCOL]"
            ));
        }
    };
    let bad = || format!("'{container}' in '{text}' is not a port or a range of ports (1-65535)");
    let number = |s: &str| s.trim().parse::<u16>().ok().filter(|p| *p > 0);
    let (first, last) = match container.split_once('-') {
        Some((a, b)) => (number(a).ok_or_else(bad)?, number(b).ok_or_else(bad)?),
        None => {
            let port = number(container).ok_or_else(bad)?;
            (port, port)
        }
    };
    if last < first {
        return Err(bad());
    }
    let published = published.filter(|p| !p.is_empty());
    let host_ip = host_ip.filter(|ip| !ip.is_empty());
    Ok((first..=last)
        .map(|target| mapping(target, protocol, host_ip, published))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_follow_service_names() {
        assert_eq!(role_by_name("api"), Some(PortRole::Backend));
        assert_eq!(role_by_name("ui"), Some(PortRole::Frontend));
        assert_eq!(role_by_name("db"), Some(PortRole::Postgres));
        assert_eq!(role_by_name("cache"), Some(PortRole::Redis));
        assert_eq!(role_by_name("mailhog"), None);
    }

    #[test]
    fn every_short_port_form() {
        let read = |text: &str| {
            short_port(text)
                .unwrap()
                .into_iter()
                .map(|m| (m.host_ip, m.published, m.target, m.protocol))
                .collect::<Vec<_>>()
        };
        let local = "127.0.0.1".to_owned();
        assert_eq!(read("80"), [(local.clone(), None, 80, Protocol::Tcp)]);
        assert_eq!(
            read("8080:80/udp"),
            [(local.clone(), Some("8080".into()), 80, Protocol::Udp)]
        );
        assert_eq!(
            read("0.0.0.0:8080:80"),
            [("0.0.0.0".into(), Some("8080".into()), 80, Protocol::Tcp)]
        );
        assert_eq!(
            read("[::1]:8080:80"),
            [("::1".into(), Some("8080".into()), 80, Protocol::Tcp)]
        );
        assert_eq!(read("9090-9091:8080-8081").len(), 2);
        assert_eq!(read("127.0.0.1::5000")[0].1, None);
        for bad in ["", "x", "80/sctp", "8080:0", "1:2:3:4", "90-80", "[::1:80"] {
            assert!(short_port(bad).is_err(), "{bad}");
        }
    }
}
