//! Reading `hub.toml`: TOML into raw structs that keep source spans, then checks that name the
//! line and the field of every mistake.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{
    Condition, Dependency, HealthSpec, Mount, PortMapping, Protocol, ServiceSpec, StackFormat,
    StackSpec,
};
use crate::error::{HubError, Result};
use crate::ports::PortRole;

/// The stack file a project folder may hold.
pub const STACK_FILE: &str = "hub.toml";

/// The default stack, in stack-file form.
pub const DEFAULT_STACK_TOML: &str = include_str!("default.toml");

pub(super) const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(300);
pub(super) const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    hub: RawHub,
    #[serde(default)]
    services: BTreeMap<Spanned<String>, Spanned<RawService>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHub {
    health_timeout: Option<Spanned<String>>,
    stop_grace: Option<Spanned<String>>,
    allow_outside: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    image: Spanned<String>,
    command: Option<Vec<String>>,
    publish: Option<Spanned<RawPublish>>,
    #[serde(default)]
    volumes: Vec<Spanned<String>>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    #[serde(default)]
    depends_on: Vec<Spanned<String>>,
    healthcheck: Option<Spanned<RawHealth>>,
    working_dir: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPublish {
    role: Spanned<String>,
    target: Spanned<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    test: Spanned<Vec<String>>,
    interval: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    retries: Option<Spanned<i64>>,
    start_period: Option<Spanned<String>>,
}

/// Turns spans into "line N" for messages.
struct Source<'a> {
    text: &'a str,
    name: &'a str,
}

impl Source<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn error(&self, field: &str, offset: usize, message: impl std::fmt::Display) -> HubError {
        HubError::invalid(
            format!("{}: {field}", self.name),
            format!("line {}: {message}", self.line_of(offset)),
        )
    }

    fn duration(&self, field: &str, value: &Spanned<String>) -> Result<Duration> {
        humantime::parse_duration(value.get_ref().trim()).map_err(|err| {
            self.error(
                field,
                value.span().start,
                format!(
                    "'{}' is not a duration like \"1s\" or \"5m\": {err}",
                    value.get_ref()
                ),
            )
        })
    }
}

pub(super) fn parse(text: &str, name: &str) -> Result<StackSpec> {
    let source = Source { text, name };
    let raw: RawFile = toml::from_str(text).map_err(|err| {
        let offset = err.span().map_or(0, |span| span.start);
        source.error("syntax", offset, err.message())
    })?;

    let health_timeout = match &raw.hub.health_timeout {
        Some(value) => source.duration("hub.health_timeout", value)?,
        None => DEFAULT_HEALTH_TIMEOUT,
    };
    let stop_grace = match &raw.hub.stop_grace {
        Some(value) => source.duration("hub.stop_grace", value)?,
        None => DEFAULT_STOP_GRACE,
    };

    let allow_outside = raw.hub.allow_outside.unwrap_or(false);

    let names: Vec<&str> = raw.services.keys().map(|k| k.get_ref().as_str()).collect();
    let mut services = Vec::with_capacity(raw.services.len());
    let mut roles: BTreeMap<PortRole, String> = BTreeMap::new();
    for (name, service) in &raw.services {
        let service_name = name.get_ref().as_str();
        let at = |field: &str| format!("services.{service_name}.{field}");
        if !is_service_name(service_name) {
            return Err(source.error(
                &format!("services.{service_name}"),
                name.span().start,
                "a service name must start with a lowercase letter or digit and use only a-z, 0-9, '-' and '_'",
            ));
        }
        let raw_service = service.get_ref();
        if raw_service.image.get_ref().trim().is_empty() {
            return Err(source.error(
                &at("image"),
                raw_service.image.span().start,
                "must not be empty",
            ));
        }

        let ports = match &raw_service.publish {
            None => Vec::new(),
            Some(publish) => {
                let p = publish.get_ref();
                let role: PortRole = p.role.get_ref().parse().map_err(|_| {
                    source.error(
                        &at("publish.role"),
                        p.role.span().start,
                        format!(
                            "unknown role '{}' (expected backend, frontend, postgres or redis)",
                            p.role.get_ref()
                        ),
                    )
                })?;
                if let Some(other) = roles.insert(role, service_name.to_owned()) {
                    return Err(source.error(
                        &at("publish.role"),
                        p.role.span().start,
                        format!("role '{role}' is already published by service '{other}'"),
                    ));
                }
                let target = u16::try_from(*p.target.get_ref())
                    .ok()
                    .filter(|port| *port > 0)
                    .ok_or_else(|| {
                        source.error(
                            &at("publish.target"),
                            p.target.span().start,
                            format!("{} is not a port (1-65535)", p.target.get_ref()),
                        )
                    })?;
                vec![PortMapping {
                    role: Some(role),
                    target,
                    protocol: Protocol::Tcp,
                    host_ip: "127.0.0.1".into(),
                    host_port: None,
                    published: None,
                }]
            }
        };

        let mut volumes = Vec::with_capacity(raw_service.volumes.len());
        for volume in &raw_service.volumes {
            volumes.push(
                parse_mount(volume.get_ref(), allow_outside).map_err(|message| {
                    source.error(&at("volumes"), volume.span().start, message)
                })?,
            );
        }

        let mut depends_on = Vec::with_capacity(raw_service.depends_on.len());
        for dependency in &raw_service.depends_on {
            let dep = dependency.get_ref();
            if dep == service_name {
                return Err(source.error(
                    &at("depends_on"),
                    dependency.span().start,
                    "a service cannot depend on itself",
                ));
            }
            if !names.contains(&dep.as_str()) {
                return Err(source.error(
                    &at("depends_on"),
                    dependency.span().start,
                    format!("unknown service '{dep}' (services: {})", names.join(", ")),
                ));
            }
            depends_on.push(Dependency {
                service: dep.clone(),
                condition: Condition::ServiceHealthy,
            });
        }

        let healthcheck = match &raw_service.healthcheck {
            None => None,
            Some(check) => Some(parse_health(&source, &at("healthcheck"), check)?),
        };

        let working_dir = match &raw_service.working_dir {
            Some(dir) if !dir.get_ref().starts_with('/') => {
                return Err(source.error(
                    &at("working_dir"),
                    dir.span().start,
                    "must be an absolute path in the container",
                ));
            }
            other => other.as_ref().map(|d| d.get_ref().clone()),
        };

        services.push(ServiceSpec {
            name: service_name.to_owned(),
            image: raw_service.image.get_ref().trim().to_owned(),
            command: raw_service.command.clone(),
            ports,
            volumes,
            environment: raw_service.environment.clone(),
            depends_on,
            healthcheck,
            working_dir,
            ..ServiceSpec::default()
        });
    }

    let stack = StackSpec {
        services,
        volumes: BTreeMap::new(),
        health_timeout,
        stop_grace,
        allow_outside,
        source: name.to_owned(),
        format: StackFormat::Default,
        warnings: Vec::new(),
    };
    let cycle = stack.in_cycle();
    if let Some(first) = cycle.first() {
        let offset = raw
            .services
            .iter()
            .find(|(k, _)| k.get_ref() == first)
            .map_or(0, |(k, _)| k.span().start);
        return Err(source.error(
            &format!("services.{first}.depends_on"),
            offset,
            format!("dependency cycle between {}", cycle.join(", ")),
        ));
    }
    Ok(stack)
}

pub(super) fn is_service_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.len() <= 63
}

fn parse_mount(text: &str, allow_outside: bool) -> std::result::Result<Mount, String> {
    let Some((source, target)) = text.split_once(':') else {
        return Err(format!("'{text}' is not \"name:/path\" or \"./dir:/path\""));
    };
    if !target.starts_with('/') {
        return Err(format!(
            "'{text}': the container path '{target}' must be absolute"
        ));
    }
    let target = target.to_owned();
    if source.starts_with("./")
        || source.starts_with("../")
        || source.starts_with('/')
        || source == "."
    {
        if !allow_outside && leaves_folder(source) {
            return Err(format!(
                "'{source}' leaves the project folder; a bind mount must stay inside it \
                 (set `allow_outside = true` under [hub] to allow it, at your own risk)"
            ));
        }
        return Ok(Mount::Bind {
            source: source.to_owned(),
            target,
            host: None,
            read_only: false,
        });
    }
    let valid_name = source
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && source
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !valid_name {
        return Err(format!(
            "'{source}' is neither a volume name (letters, digits, '_', '.', '-') nor a path starting with ./"
        ));
    }
    Ok(Mount::Volume {
        name: source.to_owned(),
        target,
        read_only: false,
    })
}

/// Whether a bind source, as written, points outside the project folder: absolute, or climbing
/// above it with `..`. (Links are checked when the stack is loaded from its folder.)
pub(super) fn leaves_folder(source: &str) -> bool {
    if source.starts_with('/') {
        return true;
    }
    let mut depth: i64 = 0;
    for part in source.split('/') {
        match part {
            "" | "." => {}
            ".." => depth -= 1,
            _ => depth += 1,
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

fn parse_health(
    source: &Source<'_>,
    field: &str,
    check: &Spanned<RawHealth>,
) -> Result<HealthSpec> {
    let raw = check.get_ref();
    let test = raw.test.get_ref();
    let valid = match test.first().map(String::as_str) {
        Some("CMD") => test.len() > 1,
        Some("CMD-SHELL") => test.len() == 2,
        _ => false,
    };
    if !valid {
        return Err(source.error(
            &format!("{field}.test"),
            raw.test.span().start,
            "must be [\"CMD\", program, args…] or [\"CMD-SHELL\", \"command\"]",
        ));
    }
    let duration = |name: &str, value: &Option<Spanned<String>>, default: Duration| match value {
        Some(v) => source.duration(&format!("{field}.{name}"), v),
        None => Ok(default),
    };
    let retries = match &raw.retries {
        Some(r) => u32::try_from(*r.get_ref())
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                source.error(
                    &format!("{field}.retries"),
                    r.span().start,
                    format!("{} is not a positive number", r.get_ref()),
                )
            })?,
        None => 3,
    };
    Ok(HealthSpec {
        test: test.clone(),
        interval: duration("interval", &raw.interval, Duration::from_secs(5))?,
        timeout: duration("timeout", &raw.timeout, Duration::from_secs(5))?,
        retries,
        start_period: duration("start_period", &raw.start_period, Duration::ZERO)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> (String, String) {
        match parse(text, "hub.toml").unwrap_err() {
            HubError::InvalidInput { field, message } => (field, message),
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn the_issue_example_parses() {
        let stack = parse(
            r#"
[services.db]
image = "hubtest/redis:latest"

[services.cache]
image = "hubtest/redis:latest"
command = ["/usr/bin/redis-server", "--protected-mode", "no"]
publish = { role = "redis", target = 6379 }
volumes = ["data:/data", "./conf:/etc/redis"]
environment = { LOG_LEVEL = "debug" }
depends_on = ["db"]
healthcheck = { test = ["CMD", "/usr/bin/redis-cli", "ping"], interval = "1s", retries = 30 }
"#,
            "hub.toml",
        )
        .unwrap();
        let cache = stack.service("cache").unwrap();
        assert_eq!(
            cache
                .ports
                .iter()
                .map(|p| (p.role, p.target))
                .collect::<Vec<_>>(),
            [(Some(PortRole::Redis), 6379)]
        );
        assert_eq!(cache.volumes.len(), 2);
        assert!(matches!(&cache.volumes[1], Mount::Bind { source, .. } if source == "./conf"));
        let health = cache.healthcheck.as_ref().unwrap();
        assert_eq!(
            (health.interval, health.retries),
            (Duration::from_secs(1), 30)
        );
        assert_eq!(stack.start_order().len(), 2);
        assert_eq!(stack.health_timeout, DEFAULT_HEALTH_TIMEOUT);
    }

    #[test]
    fn an_empty_file_is_an_empty_stack() {
        let stack = parse("", "hub.toml").unwrap();
        assert!(stack.services.is_empty());
        assert!(stack.start_order().is_empty());
    }

    #[test]
    fn errors_name_the_line_and_the_field() {
        let (field, message) =
            err("[services.web]\nimage = \"x\"\npublish = { role = \"web\", target = 80 }\n");
        assert_eq!(field, "hub.toml: services.web.publish.role");
        assert!(message.starts_with("line 3:"), "{message}");

        let (field, message) = err("[services.a]\nimage = \"x\"\ndepends_on = [\"ghost\"]\n");
        assert_eq!(field, "hub.toml: services.a.depends_on");
        assert!(
            message.contains("line 3") && message.contains("ghost"),
            "{message}"
        );

        let (field, message) = err(
            "[services.a]\nimage = \"x\"\n\n[services.b]\nimage = \"y\"\nvolumes = [\"data\"]\n",
        );
        assert_eq!(field, "hub.toml: services.b.volumes");
        assert!(message.starts_with("line 6:"), "{message}");

        let (field, message) = err(
            "[services.a]\nimage = \"x\"\nhealthcheck = { test = [\"CMD\", \"true\"], interval = \"soon\" }\n",
        );
        assert_eq!(field, "hub.toml: services.a.healthcheck.interval");
        assert!(message.starts_with("line 3:"), "{message}");

        let (field, message) = err("[services.a]\nimage = \"x\"\nimgae = \"typo\"\n");
        assert_eq!(field, "hub.toml: syntax");
        assert!(
            message.contains("line 3") && message.contains("imgae"),
            "{message}"
        );
    }

    #[test]
    fn two_services_cannot_publish_one_role() {
        let (field, message) = err(
            "[services.a]\nimage = \"x\"\npublish = { role = \"redis\", target = 1 }\n\
             [services.b]\nimage = \"x\"\npublish = { role = \"redis\", target = 1 }\n",
        );
        assert_eq!(field, "hub.toml: services.b.publish.role");
        assert!(
            message.contains("already published by service 'a'"),
            "{message}"
        );
    }

    #[test]
    fn dependency_cycles_are_refused() {
        let (field, message) = err(
            "[services.a]\nimage = \"x\"\ndepends_on = [\"b\"]\n[services.b]\nimage = \"x\"\ndepends_on = [\"a\"]\n",
        );
        assert!(field.ends_with("depends_on"), "{field}");
        assert!(message.contains("cycle"), "{message}");
    }
}
