//! Listening: the API on a Unix socket (mode 0660, a stale socket of a dead daemon replaced,
//! a live daemon's refused) and the optional Prometheus listener, until `shutdown` resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use axum::routing::get;
use axum::Router;
use tokio::net::{TcpListener, UnixListener, UnixStream};

use crate::daemon::handle::EngineHandle;
use crate::daemon::{http, metrics};

/// Why the daemon could not listen.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Another daemon answers on the socket.
    #[error("another sluiced is already listening on {0}")]
    InUse(String),
    /// Creating, binding or chmod-ing failed.
    #[error("cannot listen on {what}: {source}")]
    Io {
        /// The socket or address.
        what: String,
        /// Why.
        source: std::io::Error,
    },
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> ListenError {
    let what = what.to_string();
    move |source| ListenError::Io { what, source }
}

/// Binds the API socket, replacing a stale one.
pub async fn bind_api(path: &Path) -> Result<UnixListener, ListenError> {
    let shown = path.display().to_string();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(ListenError::InUse(shown));
        }
        std::fs::remove_file(path).map_err(io(&shown))?;
    }
    let l = UnixListener::bind(path).map_err(io(&shown))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io(&shown))?;
    Ok(l)
}

/// Binds the metrics listener.
pub async fn bind_metrics(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    TcpListener::bind(addr).await.map_err(io(addr))
}

fn metrics_router(engine: EngineHandle) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let en = engine.clone();
            async move {
                match en.stats().await {
                    Ok(s) => (
                        [("content-type", metrics::CONTENT_TYPE)],
                        metrics::render(&s),
                    ),
                    Err(e) => ([("content-type", "text/plain")], format!("# {e}\n")),
                }
            }
        }),
    )
}

/// Serves the API (and metrics, if a listener is given) until `shutdown` resolves; removes
/// the socket file afterwards.
pub async fn serve(
    api: UnixListener,
    api_path: &Path,
    metrics: Option<TcpListener>,
    engine: EngineHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let metrics_task = metrics.map(|l| {
        let mut rx = stop_rx;
        let app = metrics_router(engine.clone());
        tokio::spawn(async move {
            axum::serve(l, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.changed().await;
                })
                .await
        })
    });
    let result = axum::serve(api, http::router(engine))
        .with_graceful_shutdown(shutdown)
        .await;
    let _ = stop_tx.send(true);
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    let _ = std::fs::remove_file(api_path);
    result
}
