//! The CLI's side of the API: HTTP/1.1 over the daemon's Unix socket (hyper), JSON bodies,
//! and the daemon's one-line errors passed through as they are.

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;

use crate::api::{ErrorBody, VERSION};

/// Why a request got no answer or a refusal.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached.
    #[error("cannot reach sluiced at {socket}: {source} (is the daemon running? start it with `sluiced`, or pass --socket)")]
    Connect {
        /// The socket path.
        socket: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The daemon refused the request; `message` is its one-line reason.
    #[error("{message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The daemon's message.
        message: String,
    },
    /// The HTTP exchange failed midway.
    #[error("talking to sluiced: {0}")]
    Http(String),
    /// The answer was not what this CLI version expects.
    #[error("unexpected answer from sluiced: {0}")]
    Decode(String),
}

/// A client of one daemon socket.
#[derive(Clone, Debug)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// A client for the daemon listening on `socket`.
    pub fn new(socket: impl AsRef<Path>) -> Client {
        Client {
            socket: socket.as_ref().to_path_buf(),
        }
    }

    /// Sends `method /v1{path}` with an optional JSON body; returns the answer's JSON body
    /// (`null` for an empty one).
    pub async fn call<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<serde_json::Value, ClientError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(conn);
        let bytes = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| ClientError::Decode(e.to_string()))?,
            None => Vec::new(),
        };
        let req = Request::builder()
            .method(method)
            .uri(format!("/{VERSION}{path}"))
            .header("host", "sluiced")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&body)
                .map(|e| e.message)
                .unwrap_or_else(|_| format!("{status}: {}", String::from_utf8_lossy(&body)));
            return Err(ClientError::Refused {
                status: status.as_u16(),
                message,
            });
        }
        if body.is_empty() || status == StatusCode::NO_CONTENT {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// `GET` decoded into `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let v = self.call::<()>(Method::GET, path, None).await?;
        serde_json::from_value(v).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// `POST` with a body, the answer as JSON.
    pub async fn post<B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<serde_json::Value, ClientError> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// `DELETE`.
    pub async fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.call::<()>(Method::DELETE, path, None).await.map(drop)
    }
}
