// The registry's cases, included once per database by `registry.rs`: `DB` says which.

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use hub_core::{
    ErrorCode, Health, Hub, HubConfig, HubError, NewProject, PortConfig, PortRequest, PortRole,
    PortSet, ProjectStatus, ProjectUpdate,
};
use tempfile::TempDir;

/// The configuration of a hub whose state lives in `data`, on this module's database (a
/// database of its own per `data` folder on PostgreSQL).
async fn base_config(data: &Path) -> HubConfig {
    let config = HubConfig::with_data_dir(data.join("state"));
    match DB {
        super::Db::Sqlite => config,
        super::Db::Postgres => config.database_url(crate::postgres::database(data).await),
    }
}

/// A hub on a fresh data folder, plus a folder to register projects from.
struct Fixture {
    data: TempDir,
    projects: TempDir,
    hub: Hub,
}

impl Fixture {
    async fn new() -> Self {
        Self::with_ports(PortConfig::default()).await
    }

    async fn with_ports(ports: PortConfig) -> Self {
        let data = TempDir::new().unwrap();
        let projects = TempDir::new().unwrap();
        // These tests set statuses by hand; the engine's view must not correct them meanwhile.
        let config = HubConfig {
            reconcile_on_open: false,
            ..base_config(data.path())
                .await
                .ports(ports)
                .project_roots([projects.path()])
        };
        let hub = Hub::open(config).await.unwrap();
        Fixture {
            data,
            projects,
            hub,
        }
    }

    async fn reopen(&self) -> Hub {
        let config = HubConfig {
            reconcile_on_open: false,
            ..base_config(self.data.path())
                .await
                .project_roots([self.projects.path()])
        };
        Hub::open(config).await.unwrap()
    }

    /// A new project folder named `name`.
    fn folder(&self, name: &str) -> PathBuf {
        let path = self.projects.path().join(name);
        std::fs::create_dir_all(&path).unwrap();
        path
    }

    /// The ids of every project, in the list's order.
    async fn listed_ids(&self) -> Vec<i64> {
        self.hub
            .projects()
            .await
            .unwrap()
            .iter()
            .map(|p| p.id)
            .collect()
    }

    async fn create(&self, name: &str) -> hub_core::Project {
        let path = self.folder(&hub_core::slugify(name));
        self.hub
            .create_project(NewProject::new(name, path))
            .await
            .unwrap()
    }
}

fn slot(k: u16) -> PortSet {
    PortSet {
        backend: 8000 + 10 * k,
        frontend: 3000 + 10 * k,
        postgres: 5432 + 10 * k,
        redis: 6379 + 10 * k,
    }
}

fn assert_code(err: &HubError, code: ErrorCode) {
    assert_eq!(err.code(), code, "unexpected error: {err}");
}

#[tokio::test]
async fn create_get_list_and_delete_a_project() {
    let fx = Fixture::new().await;
    let alpha = fx.create("Alpha Project").await;
    assert_eq!(alpha.name, "Alpha Project");
    assert_eq!(alpha.slug, "alpha-project");
    assert_eq!(alpha.status, ProjectStatus::Stopped);
    assert_eq!(alpha.health, Health::Unknown);
    assert!(alpha.path.is_absolute());
    assert_eq!(alpha.last_started, None);

    assert_eq!(fx.hub.project(alpha.id).await.unwrap(), alpha);
    assert_eq!(fx.hub.project("alpha-project").await.unwrap(), alpha);

    let beta = fx.create("Beta").await;
    let ids = fx.listed_ids().await;
    assert_eq!(ids, vec![alpha.id, beta.id]);

    let removed = fx.hub.delete_project(alpha.id, false).await.unwrap();
    assert_eq!(removed.id, alpha.id);
    assert_code(
        &fx.hub.project(alpha.id).await.unwrap_err(),
        ErrorCode::NotFound,
    );
    assert_code(
        &fx.hub.delete_project(alpha.id, false).await.unwrap_err(),
        ErrorCode::NotFound,
    );
    assert_eq!(fx.hub.projects().await.unwrap().len(), 1);
}

#[tokio::test]
async fn names_are_trimmed_and_slugged_like_the_original() {
    let fx = Fixture::new().await;
    let p = fx
        .hub
        .create_project(NewProject::new("  My App!! 2.0 ", fx.folder("a")))
        .await
        .unwrap();
    assert_eq!(p.name, "My App!! 2.0");
    assert_eq!(p.slug, "my-app-2-0");

    for bad in [
        "",
        "   ",
        "nul\0byte",
        "\u{1b}[31mred",
        "evil\u{202E}gnp.exe",
        "zero\u{200B}width",
        "forged\nINFO hub: FORGED",
    ] {
        let err = fx
            .hub
            .create_project(NewProject::new(bad, fx.folder("b")))
            .await
            .unwrap_err();
        assert_code(&err, ErrorCode::InvalidInput);
        assert_eq!(err.field(), Some("name"));
    }
    // Any script is welcome; a slug is found for every name, and lookups ignore case.
    for (i, (name, slug)) in [
        ("日本語", "ri-ben-yu"),
        ("🚀🚀", "rocket-rocket"),
        ("Ünïcode", "unicode"),
    ]
    .into_iter()
    .enumerate()
    {
        let p = fx
            .hub
            .create_project(NewProject::new(name, fx.folder(&format!("script-{i}"))))
            .await
            .unwrap();
        assert_eq!((p.name.as_str(), p.slug.as_str()), (name, slug));
    }
    let symbols = fx
        .hub
        .create_project(NewProject::new("!!!", fx.folder("symbols")))
        .await
        .unwrap();
    assert!(symbols.slug.starts_with("project-"), "{}", symbols.slug);
    assert_eq!(fx.hub.project("MY-APP-2-0").await.unwrap().id, p.id);
    let err = fx
        .hub
        .create_project(NewProject::new("x".repeat(256), fx.folder("c")))
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("name"));
}

#[tokio::test]
async fn paths_must_be_existing_absolute_folders() {
    let fx = Fixture::new().await;
    let missing = fx.projects.path().join("nope");
    let file = fx.projects.path().join("file.txt");
    std::fs::write(&file, "x").unwrap();
    for (path, why) in [
        (missing, "does not exist"),
        (file, "not a directory"),
        // Outside the project roots: the hub's containers may bind-mount a project folder.
        (PathBuf::from("/"), "outside"),
        (PathBuf::from("/etc"), "outside"),
        (fx.projects.path().join(".."), "outside"),
        (PathBuf::from("relative/dir"), "not an absolute path"),
        (PathBuf::new(), "must not be empty"),
    ] {
        let err = fx
            .hub
            .create_project(NewProject::new("P", &path))
            .await
            .unwrap_err();
        assert_code(&err, ErrorCode::InvalidInput);
        assert_eq!(err.field(), Some("path"));
        assert!(err.to_string().contains(why), "{err}");
    }
    // Nothing was stored, and no port was consumed.
    assert!(fx.hub.projects().await.unwrap().is_empty());
    assert_eq!(fx.create("P").await.ports, slot(1));
}

#[tokio::test]
async fn paths_are_canonicalised_so_aliases_are_duplicates() {
    let fx = Fixture::new().await;
    let real = fx.folder("real");
    let alias = fx.projects.path().join("real/../real/.");
    let p = fx
        .hub
        .create_project(NewProject::new("One", &alias))
        .await
        .unwrap();
    assert_eq!(p.path, std::fs::canonicalize(&real).unwrap());

    let link = fx.projects.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let err = fx
        .hub
        .create_project(NewProject::new("Two", &link))
        .await
        .unwrap_err();
    assert_code(&err, ErrorCode::AlreadyExists);
    assert_eq!(err.field(), Some("path"));
}

#[tokio::test]
async fn name_slug_and_path_are_unique() {
    let fx = Fixture::new().await;
    let first = fx.create("Alpha").await;

    let err = fx
        .hub
        .create_project(NewProject::new("Alpha", fx.folder("other")))
        .await
        .unwrap_err();
    assert_code(&err, ErrorCode::AlreadyExists);
    assert_eq!(err.field(), Some("name"));

    // A different name with the same slug.
    let err = fx
        .hub
        .create_project(NewProject::new("ALPHA!", fx.folder("other2")))
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("slug"));

    let err = fx
        .hub
        .create_project(NewProject::new("Gamma", &first.path))
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("path"));

    // Failed creates consumed no ports.
    assert_eq!(fx.create("Delta").await.ports, slot(2));
}

#[tokio::test]
async fn rename_regenerates_the_slug_and_keeps_uniqueness() {
    let fx = Fixture::new().await;
    let alpha = fx.create("Alpha").await;
    fx.create("Beta").await;

    let renamed = fx
        .hub
        .update_project(
            alpha.id,
            ProjectUpdate {
                name: Some("Alpha Two".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(renamed.slug, "alpha-two");
    assert_eq!(renamed.ports, alpha.ports);
    assert!(renamed.updated_at >= alpha.updated_at);
    assert_code(
        &fx.hub.project("alpha").await.unwrap_err(),
        ErrorCode::NotFound,
    );
    assert_eq!(fx.hub.project("alpha-two").await.unwrap().id, alpha.id);

    let err = fx
        .hub
        .update_project(
            "alpha-two",
            ProjectUpdate {
                name: Some("beta".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_code(&err, ErrorCode::AlreadyExists);
    assert_eq!(err.field(), Some("slug"));

    // Renaming to its own name (or a case variant giving the same slug) is allowed.
    let same = fx
        .hub
        .update_project(
            alpha.id,
            ProjectUpdate {
                name: Some("ALPHA two".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(same.slug, "alpha-two");
}

#[tokio::test]
async fn first_port_sets_equal_the_original_hub() {
    let fx = Fixture::new().await;
    for k in 1..=3 {
        let p = fx.create(&format!("P{k}")).await;
        assert_eq!(p.ports, slot(k));
    }
}

#[tokio::test]
async fn ports_of_a_deleted_project_are_reused() {
    let fx = Fixture::new().await;
    let a = fx.create("A").await;
    let b = fx.create("B").await;
    fx.create("C").await;
    fx.hub.delete_project(b.id, false).await.unwrap();
    let d = fx.create("D").await;
    assert_eq!(d.ports, b.ports);
    fx.hub.delete_project(a.id, false).await.unwrap();
    assert_eq!(fx.create("E").await.ports, a.ports);
    assert_eq!(fx.create("F").await.ports, slot(4));
}

#[tokio::test]
async fn port_of_stopped_project_is_never_reused() {
    let fx = Fixture::new().await;
    let a = fx.create("A").await;
    assert_eq!(a.status, ProjectStatus::Stopped);
    // Nothing listens on A's ports (its stack is stopped), yet they stay A's.
    assert!(fx.hub.check_ports(a.id).await.unwrap().is_empty());
    let b = fx.create("B").await;
    let a_ports: HashSet<u16> = a.ports.iter().map(|(_, p)| p).collect();
    assert!(b.ports.iter().all(|(_, p)| !a_ports.contains(&p)));

    // Even explicitly: asking for A's port names A as its holder.
    let err = fx
        .hub
        .create_project(
            NewProject::new("C", fx.folder("c")).with_ports(PortRequest {
                redis: Some(a.ports.redis),
                ..Default::default()
            }),
        )
        .await
        .unwrap_err();
    assert_code(&err, ErrorCode::PortConflict);
    assert_eq!(err.field(), Some("redis_port"));
    assert!(err.to_string().contains("'A'"), "{err}");
    assert!(
        err.to_string().contains(&a.ports.redis.to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn a_port_bound_by_another_process_is_skipped() {
    let fx = Fixture::new().await;
    // Something else on the host listens on slot 1's frontend port.
    let squatter = TcpListener::bind(("0.0.0.0", slot(1).frontend));
    let Ok(_squatter) = squatter else {
        panic!("test needs port {} free", slot(1).frontend)
    };
    let p = fx.create("A").await;
    assert_eq!(p.ports, slot(2));
    // Slot 1 stays available once the port is released.
    drop(_squatter);
    assert_eq!(fx.create("B").await.ports, slot(1));
}

#[tokio::test]
async fn check_ports_reports_busy_ports_with_their_roles() {
    let fx = Fixture::new().await;
    let p = fx.create("A").await;
    let _listener = TcpListener::bind(("127.0.0.1", p.ports.postgres)).unwrap();
    let busy = fx.hub.check_ports(p.id).await.unwrap();
    assert_eq!(busy.len(), 1);
    assert_eq!(busy[0].role, PortRole::Postgres);
    assert_eq!(busy[0].port, p.ports.postgres);
}

#[tokio::test]
async fn explicit_ports_are_honoured_or_refused_with_the_reason() {
    let fx = Fixture::new().await;
    let custom = fx
        .hub
        .create_project(
            NewProject::new("Custom", fx.folder("custom")).with_ports(PortRequest {
                backend: Some(18080),
                frontend: Some(13000),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    assert_eq!(custom.ports.backend, 18080);
    assert_eq!(custom.ports.frontend, 13000);
    // The others come from the lowest free slot.
    assert_eq!(custom.ports.postgres, slot(1).postgres);
    assert_eq!(custom.ports.redis, slot(1).redis);

    // Taken by another project: the holder is named.
    let err = fx
        .hub
        .create_project(
            NewProject::new("Clash", fx.folder("clash")).with_ports(PortRequest {
                frontend: Some(18080),
                ..Default::default()
            }),
        )
        .await
        .unwrap_err();
    assert_code(&err, ErrorCode::PortConflict);
    assert!(err.to_string().contains("Custom"), "{err}");
    // Also while the holder's stack has it bound: the holder is named, not "busy on the host".
    let bound = TcpListener::bind(("0.0.0.0", 18080)).unwrap();
    let err = fx
        .hub
        .create_project(
            NewProject::new("Clash", fx.folder("clash")).with_ports(PortRequest {
                redis: Some(18080),
                ..Default::default()
            }),
        )
        .await
        .unwrap_err();
    assert_code(&err, ErrorCode::PortConflict);
    drop(bound);

    // Out of range, or the same port twice.
    let err = fx
        .hub
        .create_project(
            NewProject::new("Low", fx.folder("low")).with_ports(PortRequest {
                backend: Some(80),
                ..Default::default()
            }),
        )
        .await
        .unwrap_err();
    assert_code(&err, ErrorCode::InvalidInput);
    assert_eq!(err.field(), Some("ports.backend"));
    let err = fx
        .hub
        .create_project(
            NewProject::new("Twice", fx.folder("twice")).with_ports(PortRequest {
                backend: Some(20000),
                redis: Some(20000),
                ..Default::default()
            }),
        )
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("ports.redis"));

    // Bound by another process on the host.
    let _listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let busy = _listener.local_addr().unwrap().port();
    let err = fx
        .hub
        .create_project(
            NewProject::new("Busy", fx.folder("busy")).with_ports(PortRequest {
                postgres: Some(busy),
                ..Default::default()
            }),
        )
        .await
        .unwrap_err();
    assert_code(&err, ErrorCode::PortUnavailable);
    assert!(err.to_string().contains(&busy.to_string()), "{err}");

    assert_eq!(fx.hub.projects().await.unwrap().len(), 1);
}

#[tokio::test]
async fn changing_ports_releases_the_old_ones() {
    let fx = Fixture::new().await;
    let a = fx.create("A").await;
    let moved = fx
        .hub
        .update_project(
            a.id,
            ProjectUpdate {
                ports: PortRequest {
                    backend: Some(19000),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(moved.ports.backend, 19000);
    assert_eq!(moved.ports.frontend, a.ports.frontend);
    // 8010 is free again, but slot 1 as a whole is not (A keeps its other ports).
    let b = fx
        .hub
        .create_project(
            NewProject::new("B", fx.folder("b")).with_ports(PortRequest {
                backend: Some(8010),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    assert_eq!(b.ports.backend, 8010);
    assert_eq!(b.ports.frontend, slot(2).frontend);
}

#[tokio::test]
async fn role_ranges_that_overlap_never_share_a_port() {
    // Frontend slot k+2 lands on backend slot k with this layout.
    let ports = PortConfig {
        bases: PortSet {
            backend: 20020,
            frontend: 20000,
            postgres: 30000,
            redis: 40000,
        },
        ..PortConfig::default()
    };
    let fx = Fixture::with_ports(ports).await;
    let mut seen = HashSet::new();
    for i in 0..6 {
        let p = fx.create(&format!("P{i}")).await;
        for (_, port) in p.ports.iter() {
            assert!(seen.insert(port), "port {port} handed out twice");
        }
    }
}

#[tokio::test]
async fn a_full_range_is_a_clear_error() {
    // Below Linux's ephemeral range (32768–60999): a port there can be any test's outgoing
    // connection at that moment, and the allocator rightly skips a port in use.
    let ports = PortConfig {
        bases: PortSet {
            backend: 24000,
            frontend: 24001,
            postgres: 24002,
            redis: 24003,
        },
        max_port: 24025,
        ..PortConfig::default()
    };
    let fx = Fixture::with_ports(ports).await;
    fx.create("A").await;
    fx.create("B").await;
    let err = fx
        .hub
        .create_project(NewProject::new("C", fx.folder("c")))
        .await
        .unwrap_err();
    assert_code(&err, ErrorCode::PortUnavailable);
    assert!(err.to_string().contains("no free port set"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_creates_get_fifty_distinct_sets() {
    let fx = Fixture::new().await;
    let mut handles = Vec::new();
    for i in 0..50 {
        let hub = fx.hub.clone();
        let path = fx.folder(&format!("p{i}"));
        handles.push(tokio::spawn(async move {
            hub.create_project(NewProject::new(format!("Project {i}"), path))
                .await
        }));
    }
    let mut ports = HashSet::new();
    for handle in handles {
        let project = handle.await.unwrap().unwrap();
        for (_, port) in project.ports.iter() {
            assert!(ports.insert(port), "port {port} handed out twice");
        }
    }
    assert_eq!(ports.len(), 200);
    assert_eq!(fx.hub.stats().await.unwrap().total_projects, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hubs_on_one_file_never_hand_out_the_same_port() {
    // Two hubs (as two processes would) allocate from one database: each has its own in-memory
    // view, so correctness rests on the transaction and the lease table alone.
    let fx = Fixture::new().await;
    let other = fx.reopen().await;
    let mut handles = Vec::new();
    for i in 0..20 {
        let hub = if i % 2 == 0 {
            fx.hub.clone()
        } else {
            other.clone()
        };
        let path = fx.folder(&format!("p{i}"));
        handles.push(tokio::spawn(async move {
            hub.create_project(NewProject::new(format!("Project {i}"), path))
                .await
        }));
    }
    let mut ports = HashSet::new();
    for handle in handles {
        let project = handle.await.unwrap().unwrap();
        for (_, port) in project.ports.iter() {
            assert!(ports.insert(port), "port {port} handed out twice");
        }
    }
    assert_eq!(ports.len(), 80);
}

#[tokio::test]
async fn stats_count_projects_by_status() {
    let fx = Fixture::new().await;
    let a = fx.create("A").await;
    let b = fx.create("B").await;
    fx.create("C").await;
    let registry = fx.hub.registry();
    registry
        .set_status(a.id, ProjectStatus::Running, Health::Healthy, None)
        .await
        .unwrap();
    registry
        .set_status(b.id, ProjectStatus::Error, Health::Unhealthy, Some("boom"))
        .await
        .unwrap();
    let failed = registry.get(b.id).await.unwrap();
    assert_eq!(failed.last_error.as_deref(), Some("boom"));
    let stats = fx.hub.stats().await.unwrap();
    assert_eq!(
        (
            stats.total_projects,
            stats.running,
            stats.stopped,
            stats.errors
        ),
        (3, 1, 1, 1)
    );
    let running = fx.hub.project(a.id).await.unwrap();
    assert!(running.last_started.is_some());
    assert_eq!(running.last_error, None);
}

#[tokio::test]
async fn reopening_the_database_keeps_everything() {
    let fx = Fixture::new().await;
    let a = fx.create("A").await;
    let b = fx.create("B").await;
    fx.hub
        .registry()
        .set_status(
            b.id,
            ProjectStatus::Error,
            Health::Unhealthy,
            Some("crashed"),
        )
        .await
        .unwrap();
    let before = fx.hub.projects().await.unwrap();
    fx.hub.close().await;

    let hub = fx.reopen().await;
    assert_eq!(hub.projects().await.unwrap(), before);
    // The reopened allocator knows the held ports.
    let c = hub
        .create_project(NewProject::new("C", fx.folder("c")))
        .await
        .unwrap();
    assert_eq!(c.ports, slot(3));
    assert_eq!(hub.project(a.id).await.unwrap().ports, slot(1));
}

/// Containers are named after the slug, bind the folder and publish the ports: none of those
/// may change while the stack runs or an operation is in flight. A rename that keeps the slug
/// is fine.
#[tokio::test]
async fn ports_path_and_slug_stay_put_while_a_stack_runs() {
    let fx = Fixture::new().await;
    let p = fx.create("Alpha").await;
    let elsewhere = fx.folder("elsewhere");
    fx.hub
        .registry()
        .set_status(p.id, ProjectStatus::Running, Health::Healthy, None)
        .await
        .unwrap();
    for update in [
        ProjectUpdate {
            ports: PortRequest {
                backend: Some(free_port()),
                ..PortRequest::default()
            },
            ..ProjectUpdate::default()
        },
        ProjectUpdate {
            path: Some(elsewhere.clone()),
            ..ProjectUpdate::default()
        },
        ProjectUpdate {
            name: Some("Beta".into()),
            ..ProjectUpdate::default()
        },
    ] {
        let err = fx.hub.update_project(p.id, update).await.unwrap_err();
        assert_code(&err, ErrorCode::Conflict);
        assert!(err.to_string().contains("stop it"), "{err}");
    }
    assert_eq!(fx.hub.project(p.id).await.unwrap().ports, p.ports);
    let renamed = fx
        .hub
        .update_project(
            p.id,
            ProjectUpdate {
                name: Some("ALPHA".into()),
                ..ProjectUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (renamed.name.as_str(), renamed.slug.as_str()),
        ("ALPHA", "alpha")
    );
}

/// A queued operation (submitted by a client; nothing runs it) holds the project: changing its
/// ports or deleting it is a conflict, decided inside the writing transaction.
#[tokio::test]
async fn a_queued_operation_blocks_changes_and_deletion() {
    let data = TempDir::new().unwrap();
    let projects = TempDir::new().unwrap();
    let config = HubConfig {
        reconcile_on_open: false,
        ..base_config(data.path())
            .await
            .project_roots([projects.path()])
            .mode(hub_core::HubMode::Client)
    };
    let hub = Hub::open(config).await.unwrap();
    let folder = projects.path().join("alpha");
    std::fs::create_dir_all(&folder).unwrap();
    let p = hub
        .create_project(NewProject::new("Alpha", &folder))
        .await
        .unwrap();
    let task = hub.start_project(p.id).await.unwrap();

    let err = hub
        .update_project(
            p.id,
            ProjectUpdate {
                ports: PortRequest {
                    redis: Some(free_port()),
                    ..PortRequest::default()
                },
                ..ProjectUpdate::default()
            },
        )
        .await
        .unwrap_err();
    assert_code(&err, ErrorCode::Conflict);
    assert!(err.to_string().contains(&task.to_string()), "{err}");
    // The registry alone refuses too: the check is in its transaction, not only in the facade.
    let err = hub.registry().delete(p.id).await.unwrap_err();
    assert_code(&err, ErrorCode::Conflict);

    hub.revoke(task, false).await.unwrap();
    hub.registry().delete(p.id).await.unwrap();
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Extra ports (a compose file's published ports beyond the four roles) are leases like the
/// roles': unique across projects, stable across calls, given back when no longer published
/// or when the project goes, and avoided by the role allocator.
#[tokio::test]
async fn extra_ports_are_leased_beside_the_roles() {
    // Extras start where the second slot's backend port lies: the allocator must step over.
    let fx = Fixture::with_ports(PortConfig {
        extra_base: 8020,
        probe_host: false,
        ..PortConfig::default()
    })
    .await;
    let registry = fx.hub.registry();
    let a = fx
        .hub
        .create_project(NewProject::new("a", fx.folder("a")))
        .await
        .unwrap();
    let keys = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let leased = registry
        .lease_extra_ports(&a, &keys(&["web:8025/tcp", "web:1025/tcp"]), false)
        .await
        .unwrap();
    assert_eq!(leased.len(), 2);
    let ports: HashSet<u16> = leased.values().copied().collect();
    assert_eq!(ports, HashSet::from([8020, 8021]));
    // Asking again changes nothing; another project gets other ports.
    assert_eq!(
        registry
            .lease_extra_ports(&a, &keys(&["web:8025/tcp", "web:1025/tcp"]), false)
            .await
            .unwrap(),
        leased
    );
    let b = fx
        .hub
        .create_project(NewProject::new("b", fx.folder("b")))
        .await
        .unwrap();
    assert_ne!(
        b.ports.backend, 8020,
        "the role allocator skips leased extras"
    );
    let b_extra = registry
        .lease_extra_ports(&b, &keys(&["api:9229/tcp"]), false)
        .await
        .unwrap();
    assert!(!ports.contains(&b_extra["api:9229/tcp"]));

    // A port that is no longer published is given back, and a reopened hub agrees.
    let kept = registry
        .lease_extra_ports(&a, &keys(&["web:8025/tcp"]), true)
        .await
        .unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept["web:8025/tcp"], leased["web:8025/tcp"]);
    let reopened = fx.reopen().await;
    assert_eq!(reopened.registry().extra_ports(a.id).await.unwrap(), kept);
    drop(reopened);

    // Changing the role ports keeps the extras; deleting the project frees them for others.
    fx.hub
        .update_project(
            a.id,
            ProjectUpdate {
                ports: PortRequest {
                    backend: Some(18000),
                    ..PortRequest::default()
                },
                ..ProjectUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(registry.extra_ports(a.id).await.unwrap(), kept);
    fx.hub.delete_project(a.id, false).await.unwrap();
    let c = fx
        .hub
        .create_project(NewProject::new("c", fx.folder("c")))
        .await
        .unwrap();
    let c_extra = registry
        .lease_extra_ports(&c, &keys(&["x:1/tcp"]), false)
        .await
        .unwrap();
    assert_eq!(
        c_extra["x:1/tcp"],
        leased["web:8025/tcp"].min(leased["web:1025/tcp"])
    );
}

#[tokio::test]
async fn ports_are_unique_per_docker_host_not_across_hosts() {
    let fx = Fixture::new().await;
    let here = fx.create("Here").await;
    let mut there = NewProject::new("There", fx.folder("there"));
    there.host = Some("gpu-box".into());
    let there = fx.hub.create_project(there).await.unwrap();
    // Different machines publish them: both get the first set.
    assert_eq!((here.ports, there.ports), (slot(1), slot(1)));
    let mut also_there = NewProject::new("Also there", fx.folder("also-there"));
    also_there.host = Some("gpu-box".into());
    let also_there = fx.hub.create_project(also_there).await.unwrap();
    assert_eq!(also_there.ports, slot(2));

    // Moving to a host checks the ports there: `There` keeps none of `Here`'s.
    let moved = fx
        .hub
        .update_project(
            there.id,
            ProjectUpdate {
                host: Some("local".into()),
                ..ProjectUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(moved.host, "local");
    assert_eq!(moved.ports, slot(2));
    // What it held on gpu-box is free there again.
    let mut next = NewProject::new("Next", fx.folder("next"));
    next.host = Some("gpu-box".into());
    assert_eq!(fx.hub.create_project(next).await.unwrap().ports, slot(1));
    // A reopened hub (a second process) sees the same leases.
    let other = fx.reopen().await;
    let mut more = NewProject::new("More", fx.folder("more"));
    more.host = Some("gpu-box".into());
    assert_eq!(other.create_project(more).await.unwrap().ports, slot(3));
}

#[tokio::test]
async fn the_whole_list_reads_past_its_chunks_in_id_order() {
    // The list is read 256 rows at a time: 600 projects, some deleted, cross two boundaries.
    let fx = Fixture::new().await;
    let mut expected = Vec::new();
    for i in 0..600 {
        let project = fx.create(&format!("p{i}")).await;
        expected.push(project.id);
    }
    for id in [expected[0], expected[255], expected[256], expected[599]] {
        fx.hub.delete_project(id, false).await.unwrap();
        expected.retain(|&kept| kept != id);
    }
    let listed = fx.listed_ids().await;
    assert_eq!(listed, expected);
}
