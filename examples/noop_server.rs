//! The reference for the HTTP benchmark (`scripts/bench-http.sh`): an axum server that answers
//! every GET with a constant JSON body — the most an HTTP answer can cost here.
//!
//! `cargo run --release --example noop_server -- 127.0.0.1:39900`

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;

async fn constant() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok","task_id":"00000000-0000-0000-0000-000000000000","progress":100}"#,
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bind = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:39900".to_owned());
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    axum::serve(listener, Router::new().fallback(constant)).await?;
    Ok(())
}
