//! Embeds the hub in a plain Rust program: registers three projects on a temporary SQLite file,
//! prints their port sets, deletes one, registers another and shows its ports being reused.
//!
//! Run with `cargo run --example embed`.

#![allow(clippy::print_stdout)] // an example talks to its reader

use hub_core::{Hub, HubConfig, NewProject, Project};

fn show(project: &Project) {
    let p = &project.ports;
    println!(
        "  #{:<3} {:<10} backend {:>5}  frontend {:>5}  postgres {:>5}  redis {:>5}",
        project.id, project.slug, p.backend, p.frontend, p.postgres, p.redis
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let scratch = std::env::temp_dir().join(format!("hub-embed-{}", std::process::id()));
    let projects_dir = scratch.join("projects");
    std::fs::create_dir_all(&projects_dir)?;
    // Project folders must lie inside the project roots (the home folder by default).
    let config = HubConfig::with_data_dir(scratch.join("state")).project_roots([&projects_dir]);
    println!("registry: {}", config.effective_database_url());
    let hub = Hub::open(config).await?;

    let mut projects = Vec::new();
    for name in ["Alpha", "Beta", "Gamma"] {
        let folder = scratch.join("projects").join(name.to_lowercase());
        std::fs::create_dir_all(&folder)?;
        projects.push(hub.create_project(NewProject::new(name, folder)).await?);
    }
    println!("registered three projects:");
    projects.iter().for_each(show);

    let beta = hub.delete_project("beta", false).await?;
    println!("deleted '{}', releasing its ports", beta.name);

    let folder = scratch.join("projects").join("delta");
    std::fs::create_dir_all(&folder)?;
    let delta = hub.create_project(NewProject::new("Delta", folder)).await?;
    println!("registered 'Delta':");
    show(&delta);
    println!(
        "Delta reuses Beta's ports: {}",
        if delta.ports == beta.ports {
            "yes"
        } else {
            "no"
        }
    );

    let stats = hub.stats().await?;
    println!("{} projects registered", stats.total_projects);
    hub.close().await;
    std::fs::remove_dir_all(&scratch)?;
    Ok(())
}
