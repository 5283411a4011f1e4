//! The PostgreSQL server tests run against: `HUB_TEST_POSTGRES_URL` when set (the test command
//! starts one), else a throwaway cluster started for this test binary with
//! `scripts/postgres-up.sh`, stopped when the binary exits. Each test gets a database of its own.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)] // test helpers panic on setup failure by design

use std::sync::OnceLock;

use sqlx::Connection;

static SERVER: OnceLock<String> = OnceLock::new();

/// The URL of the server's maintenance database.
pub fn server_url() -> String {
    SERVER
        .get_or_init(|| {
            if let Ok(url) = std::env::var("HUB_TEST_POSTGRES_URL") {
                return url;
            }
            let dir = tempfile::Builder::new()
                .prefix("hub-postgres-")
                .tempdir()
                .unwrap()
                .keep();
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/postgres-up.sh");
            let out = std::process::Command::new("bash")
                .arg(script)
                .arg(free_port().to_string())
                .arg(&dir)
                .output()
                .expect("bash scripts/postgres-up.sh (Debian package postgresql)");
            assert!(
                out.status.success(),
                "postgres-up.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            // A watchdog stops the cluster once this process is gone; it outlives this
            // process by design, so it is never waited for.
            let stop = format!(
                "while kill -0 {parent} 2>/dev/null; do sleep 1; done; \
                 bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1); \
                 if [ \"$(id -u)\" -eq 0 ]; then as='runuser -u postgres --'; fi; \
                 $as \"$bin/pg_ctl\" -D '{dir}/data' -m immediate stop; rm -rf '{dir}'",
                parent = std::process::id(),
                dir = dir.display()
            );
            #[allow(clippy::zombie_processes)]
            std::process::Command::new("sh")
                .arg("-c")
                .arg(stop)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .last()
                .unwrap()
                .to_owned()
        })
        .clone()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The URL of a database of its own for `key` (a test's folder): created on first use, the same
/// one for every hub opened with that key.
pub async fn database(key: &std::path::Path) -> String {
    let name: String = key
        .to_string_lossy()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    // The end of the path is the random part; PostgreSQL names hold 63 bytes.
    let name = format!("hub_{}", &name[name.len().saturating_sub(40)..]);
    let server = server_url();
    let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
    match sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
    {
        Ok(_) => {}
        // Made already, by another hub of the same test.
        Err(sqlx::Error::Database(err))
            if matches!(err.code().as_deref(), Some("42P04" | "23505")) => {}
        Err(err) => panic!("cannot create test database {name}: {err}"),
    }
    let (base, _) = server.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}
