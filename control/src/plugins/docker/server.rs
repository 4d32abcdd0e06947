//! The plugin's HTTP side: every libnetwork call is a POST whose path names it; bodies are
//! parsed by hand (docker's content type is `application/vnd.docker.plugins.v1.2+json`, which
//! a JSON extractor would refuse), answers carry that content type, and an error is
//! `{"Err": "..."}` with status 500 (404 for a path that is no call), which docker's plugin
//! client turns into the message it shows.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::UnixListener;

use super::driver::{DockerPlugin, PluginError};
use super::protocol::{Call, ErrorResponse, CONTENT_TYPE};

fn answer(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    (status, [(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

async fn dispatch(
    State(plugin): State<Arc<DockerPlugin>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let result = match Call::from_path(path) {
        Some(call) if method == Method::POST => plugin.call(call, &body).await,
        _ => Err(PluginError::UnknownCall(format!("{method} {path}"))),
    };
    match result {
        Ok(v) => answer(StatusCode::OK, &v),
        Err(e) => {
            let status = if matches!(e, PluginError::UnknownCall(_)) {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            tracing::warn!("docker plugin {path}: {e}");
            answer(status, &ErrorResponse { err: e.to_string() })
        }
    }
}

/// The plugin's routes: every path goes to one dispatcher.
pub fn router(plugin: Arc<DockerPlugin>) -> Router {
    Router::new().fallback(dispatch).with_state(plugin)
}

/// Serves the plugin on `listener` until `shutdown` resolves, then removes the socket file
/// (so that dockerd stops finding a driver that no longer answers).
pub async fn serve(
    listener: UnixListener,
    path: &Path,
    plugin: Arc<DockerPlugin>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let result = axum::serve(listener, router(plugin))
        .with_graceful_shutdown(shutdown)
        .await;
    let _ = std::fs::remove_file(path);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::handle;
    use crate::plugins::docker::ipam::DockerIpam;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One request over a fresh connection, as raw HTTP/1.1: (status, content type, body).
    async fn send(sock: &Path, path: &str, body: &str) -> (u16, String, serde_json::Value) {
        let mut c = tokio::net::UnixStream::connect(sock).await.unwrap();
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: plugin\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        c.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let ct = head
            .lines()
            .find_map(|l| l.strip_prefix("content-type: "))
            .unwrap_or_default()
            .to_string();
        (status, ct, serde_json::from_str(body).unwrap())
    }

    #[test]
    fn docker_content_type_in_and_out_errors_as_err() {
        let dir = std::env::temp_dir().join(format!("sluice-docker-srv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("db");
        let en = handle::spawn_fake(db);
        let plugin = Arc::new(DockerPlugin::new(en, DockerIpam::in_memory()));
        let sock = dir.join("sluice.sock");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = UnixListener::bind(&sock).unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn({
                let sock = sock.clone();
                async move {
                    serve(listener, &sock, plugin, async {
                        let _ = stopped.await;
                    })
                    .await
                }
            });
            let (s, ct, v) = send(&sock, "/Plugin.Activate", "").await;
            assert_eq!((s, ct.as_str()), (200, CONTENT_TYPE));
            assert_eq!(v["Implements"][1], "IpamDriver");
            let (s, _, v) = send(&sock, "/NetworkDriver.DeleteNetwork", "{\"NetworkID\": 1}").await;
            assert_eq!(s, 500);
            assert!(
                v["Err"].as_str().unwrap().contains("invalid DeleteNetwork"),
                "{v}"
            );
            let (s, _, v) = send(&sock, "/NetworkDriver.Frobnicate", "{}").await;
            assert_eq!(s, 404);
            assert!(
                v["Err"].as_str().unwrap().contains("unknown plugin call"),
                "{v}"
            );
            stop.send(()).unwrap();
            server.await.unwrap().unwrap();
        });
        assert!(!sock.exists(), "the socket is removed on shutdown");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
