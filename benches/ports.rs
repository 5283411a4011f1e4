//! Port allocation with 1,000 projects already registered (target: under 1 ms per allocation).
//!
//! `allocate_at_1000_projects` measures the allocator alone (search, re-check in the database,
//! host probes). The `create_and_delete` benches register one more project — validation,
//! allocation, the transaction that stores it and its four leases — and delete it again so the
//! registry stays at 1,000.

#![allow(clippy::expect_used)] // a benchmark aborts on setup failure

use criterion::{Criterion, criterion_group, criterion_main};
use hub_core::{Hub, HubConfig, NewProject, PortConfig, PortRequest};

fn allocation_with_1000_projects(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let scratch = tempfile::TempDir::new().expect("temp dir");
    let folder = scratch.path().join("projects");
    std::fs::create_dir_all(&folder).expect("project folder");

    let (hub, next_folder) = runtime.block_on(async {
        let config =
            HubConfig::with_data_dir(scratch.path().join("state")).project_roots([&folder]);
        let hub = Hub::open(config).await.expect("open hub");
        for i in 0..1000 {
            let path = folder.join(format!("p{i}"));
            std::fs::create_dir_all(&path).expect("folder");
            hub.create_project(NewProject::new(format!("project {i}"), path))
                .await
                .expect("register");
        }
        let next = folder.join("next");
        std::fs::create_dir_all(&next).expect("folder");
        (hub, next)
    });

    let mut group = c.benchmark_group("ports");
    // Allocation alone: search, re-check against the leases, host probes; nothing stored.
    group.bench_function("allocate_at_1000_projects", |b| {
        b.to_async(&runtime).iter(|| async {
            hub.registry()
                .preview_ports(PortRequest::default())
                .await
                .expect("allocate")
        });
    });
    group.bench_function("create_and_delete_at_1000_projects", |b| {
        b.to_async(&runtime).iter(|| async {
            let project = hub
                .create_project(NewProject::new("next", &next_folder))
                .await
                .expect("register");
            hub.registry().delete(project.id).await.expect("delete");
        });
    });
    group.finish();

    // The allocator's search alone, without probing the host: how the in-memory view scales.
    let quiet = runtime.block_on(async {
        let config = HubConfig::with_data_dir(scratch.path().join("state"))
            .project_roots([&folder])
            .ports(PortConfig {
                probe_host: false,
                ..PortConfig::default()
            });
        Hub::open(config).await.expect("reopen hub")
    });
    c.bench_function(
        "ports/create_and_delete_at_1000_projects_no_host_probe",
        |b| {
            b.to_async(&runtime).iter(|| async {
                let project = quiet
                    .create_project(NewProject::new("next", &next_folder))
                    .await
                    .expect("register");
                quiet.registry().delete(project.id).await.expect("delete");
            });
        },
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = allocation_with_1000_projects
}
criterion_main!(benches);
