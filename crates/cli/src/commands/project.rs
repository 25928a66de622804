//! `byok project create|list|return-urls`

use std::process::ExitCode;

use byok_config::Settings;
use byok_store::Project;
use serde_json::json;

use crate::cli::{CreateProject, ListProjects, ReturnUrls};
use crate::table::{Table, when};

/// Creates a project and prints its id alone on stdout.
#[allow(clippy::print_stdout)]
pub async fn create(settings: &Settings, args: &CreateProject) -> anyhow::Result<ExitCode> {
    let store = byok_app::parts::open_store(settings).await?;
    let created = store.projects().create(&args.name).await;
    store.close().await;
    let project = created?;
    println!("{}", project.id);
    eprintln!(
        "created project {}; give its producers tokens with `byok token create --project {}`",
        project.name, project.name
    );
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout)]
pub async fn list(settings: &Settings, args: &ListProjects) -> anyhow::Result<ExitCode> {
    let store = byok_app::parts::open_store(settings).await?;
    let projects = store.projects().list().await;
    store.close().await;
    let projects = projects?;
    if args.json {
        let rows: Vec<_> = projects.iter().map(project_json).collect();
        println!("{}", json!({ "projects": rows }));
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(["ID", "NAME", "CREATED"]);
    for p in &projects {
        table.row(vec![
            p.id.to_string(),
            p.name.clone(),
            when(Some(p.created_at)),
        ]);
    }
    print!("{}", table.render());
    Ok(ExitCode::SUCCESS)
}

fn project_json(p: &Project) -> serde_json::Value {
    json!({ "id": p.id, "name": p.name, "created_at": p.created_at })
}

/// Prints the project's return URLs, or replaces them (each an absolute http(s) URL with a
/// host, no user, query or fragment).
#[allow(clippy::print_stdout)]
pub async fn return_urls(settings: &Settings, args: &ReturnUrls) -> anyhow::Result<ExitCode> {
    for url in &args.urls {
        if !byok_config::is_base_url(url) {
            anyhow::bail!(
                "`{url}` is not an absolute http(s) URL with a host and no user, query or fragment"
            );
        }
    }
    let store = byok_app::parts::open_store(settings).await?;
    let done = async {
        let project = super::project_flag(&store, Some(&args.project))
            .await?
            .ok_or_else(|| anyhow::anyhow!("--project is required"))?;
        let repo = store.connect_links();
        if args.clear || !args.urls.is_empty() {
            repo.set_return_urls(project, &args.urls).await?;
        }
        anyhow::Ok(repo.return_urls(project).await?)
    }
    .await;
    store.close().await;
    for url in done? {
        println!("{url}");
    }
    Ok(ExitCode::SUCCESS)
}
