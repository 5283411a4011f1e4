//! Compose files over a corpus written for these tests (`tests/compose/`):
//!
//! - `accepted/<case>/`: a project folder whose `compose.yaml` (with its `.env`, env files and
//!   build contexts) must load; its effective stack, as `hub stack` shows it, is compared with
//!   `effective.json` beside it. `UPDATE_GOLDEN=1 cargo test -p hub-core --test compose` rewrites
//!   those files after a deliberate change.
//! - `refused/<case>.yaml`: a file that must be refused. Its first lines say how:
//!   `# field: …`, `# line: …` and `# message: …` (a part of the message).
//!
//! No engine is needed: reading a stack and leasing its ports touch only the registry.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on setup failure by design

use std::path::{Path, PathBuf};

use hub_core::stack::{StackContext, StackSpec};
use hub_core::{ErrorCode, Hub, HubConfig, HubError, NewProject, PortConfig};
use tempfile::TempDir;

fn corpus(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/compose")
        .join(kind)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "effective.json" {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    entries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_files_give_their_golden_effective_stack() {
    let dir = TempDir::new().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let config = HubConfig {
        project_roots: vec![root.clone()],
        // Ports must not depend on what else runs on this machine.
        ports: PortConfig {
            probe_host: false,
            ..PortConfig::default()
        },
        ..HubConfig::with_data_dir(root.join("state"))
    };
    let hub = Hub::open(config).await.unwrap();
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut checked = 0;
    for case in sorted_entries(&corpus("accepted")) {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let folder = root.join(&name);
        copy_dir(&case, &folder);
        let project = hub
            .create_project(NewProject::new(&name, &folder))
            .await
            .unwrap();
        let stack = hub
            .effective_stack(project.id)
            .await
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        let text = serde_json::to_string_pretty(&stack)
            .unwrap()
            .replace(&root.display().to_string(), "<root>")
            + "\n";
        let golden = case.join("effective.json");
        if update {
            std::fs::write(&golden, &text).unwrap();
        } else {
            let expected = std::fs::read_to_string(&golden)
                .unwrap_or_else(|err| panic!("{}: {err}", golden.display()));
            assert_eq!(
                text, expected,
                "{name}: the effective stack changed; if that is meant, run with UPDATE_GOLDEN=1"
            );
        }
        // Leasing is stable: asking again changes nothing.
        assert_eq!(hub.effective_stack(project.id).await.unwrap(), stack);
        checked += 1;
    }
    assert!(checked >= 4, "the corpus lost cases: {checked}");
}

/// The expectation written at the top of a refused file.
struct Expected {
    field: String,
    line: usize,
    message: String,
}

fn expectation(text: &str, file: &Path) -> Expected {
    let header = |key: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("# {key}: ")))
            .unwrap_or_else(|| panic!("{}: no `# {key}:` line", file.display()))
            .trim()
            .to_owned()
    };
    Expected {
        field: header("field"),
        line: header("line").parse().unwrap(),
        message: header("message"),
    }
}

#[test]
fn refused_files_name_the_key_and_its_line() {
    let context = StackContext {
        variables: [("PROJECT_SLUG", "demo"), ("BACKEND_PORT", "8010")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        ..StackContext::default()
    };
    let mut checked = 0;
    let mut wrong = Vec::new();
    for file in sorted_entries(&corpus("refused")) {
        let text = std::fs::read_to_string(&file).unwrap();
        let expected = expectation(&text, &file);
        let dir = TempDir::new().unwrap();
        std::fs::write(dir.path().join("compose.yaml"), &text).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        match StackSpec::load_blocking(dir.path(), &context) {
            Ok(_) => wrong.push(format!("{name}: accepted")),
            Err(HubError::InvalidInput { field, message }) => {
                let field_ok = field.ends_with(&format!(": {}", expected.field));
                let line_ok = message.starts_with(&format!("line {}: ", expected.line));
                let message_ok = message.contains(&expected.message);
                if !(field_ok && line_ok && message_ok) {
                    wrong.push(format!("{name}: got field '{field}', message '{message}'"));
                }
            }
            Err(other) => wrong.push(format!("{name}: {:?} {other}", other.code())),
        }
        checked += 1;
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(checked >= 30, "the corpus lost cases: {checked}");
}

/// A `hub.toml` wins over a compose file; without either, the default stack runs; compose's
/// own order of file names is kept.
#[test]
fn the_stack_file_is_chosen_as_compose_chooses_it() {
    let dir = TempDir::new().unwrap();
    let folder = dir.path();
    // The default stack uses every variable the hub offers.
    let context = StackContext {
        variables: [
            "BACKEND_PORT",
            "FRONTEND_PORT",
            "POSTGRES_PORT",
            "REDIS_PORT",
            "PROJECT_SLUG",
            "PROJECT_NAME",
            "POSTGRES_PASSWORD",
            "SECRET_KEY",
        ]
        .into_iter()
        .map(|name| (name.to_owned(), "1".to_owned()))
        .collect(),
        ..StackContext::default()
    };
    let load = || StackSpec::load_blocking(folder, &context).unwrap();
    assert_eq!(load().source, "default");
    std::fs::write(
        folder.join("docker-compose.yml"),
        "services:\n  old: { image: x }\n",
    )
    .unwrap();
    assert_eq!(load().services[0].name, "old");
    std::fs::write(
        folder.join("compose.yaml"),
        "services:\n  new: { image: x }\n",
    )
    .unwrap();
    assert_eq!(load().services[0].name, "new");
    std::fs::write(folder.join("hub.toml"), "[services.toml]\nimage = \"x\"\n").unwrap();
    assert_eq!(load().services[0].name, "toml");
    assert_eq!(load().format, hub_core::stack::StackFormat::HubToml);
    // An unreadable compose file is an error, not the default stack.
    std::fs::remove_file(folder.join("hub.toml")).unwrap();
    std::fs::write(folder.join("compose.yaml"), "services: [").unwrap();
    let err = StackSpec::load_blocking(folder, &context).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidInput);
}
