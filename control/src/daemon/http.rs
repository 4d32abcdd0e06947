//! The API's routes (axum over the daemon's Unix socket): JSON in, JSON out, every error as
//! `{"message": "..."}` with a status that says whose fault it is (4xx: the request's, 5xx:
//! the machine's). Bodies are read by [`JsonBody`] so that a bad body (too large, malformed, with
//! an unknown field) also gets that one-line form.

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use crate::api::{DisconnectRequest, ErrorBody, VersionView, VERSION};
use crate::daemon::engine::EngineError;
use crate::daemon::handle::EngineHandle;
use crate::model::{EndpointSpec, NetworkSpec, Placement};
use crate::validate::{sandbox_exists, Invalid};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad_request(message: String) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message,
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        ApiError {
            status: StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: e.to_string(),
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        ApiError {
            status: StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
            message: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                message: self.message,
            }),
        )
            .into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// A JSON request body of type `T`; every way it can be wrong (too large: 413, unreadable,
/// malformed or with an unknown field: 400) is answered as an [`ApiError`].
pub struct JsonBody<T>(pub T);

/// The largest request body the API takes (axum's default limit).
pub const MAX_BODY: usize = 2 << 20;

/// How much of a too-large body is still read (and dropped) before the 413 is sent: a client
/// that is still writing when the answer comes would otherwise see a broken pipe instead of it.
const DRAIN_LIMIT: usize = 64 << 20;

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let mut body = req.into_body();
        let mut bytes = Vec::new();
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ApiError::bad_request(format!("request body: {e}")))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            seen = seen.saturating_add(data.len());
            if seen <= MAX_BODY {
                bytes.extend_from_slice(&data);
            } else if seen > DRAIN_LIMIT {
                break;
            }
        }
        if seen > MAX_BODY {
            return Err(ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: format!("request body: length limit exceeded ({MAX_BODY} bytes)"),
            });
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
    }
}

/// The router for `/v1/...`.
pub fn router(engine: EngineHandle) -> Router {
    let v = |p: &str| format!("/{VERSION}{p}");
    Router::new()
        .route(&v("/version"), get(version))
        .route(&v("/networks"), get(list).post(create))
        .route(&v("/networks/prune"), post(prune))
        .route(&v("/networks/{key}"), get(inspect).delete(remove))
        .route(&v("/networks/{key}/connect"), post(connect))
        .route(&v("/networks/{key}/disconnect"), post(disconnect))
        .route(&v("/endpoints"), get(endpoints))
        .route(&v("/stats"), get(stats))
        .route(&v("/conntrack"), get(conntrack))
        .route(&v("/fdb"), get(fdb))
        .fallback(not_found)
        .with_state(engine)
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!("no such API route (this daemon speaks /{VERSION}/...)"),
    }
}

async fn version() -> Json<VersionView> {
    Json(VersionView {
        version: env!("CARGO_PKG_VERSION").to_string(),
        api_version: VERSION.to_string(),
    })
}

async fn list(State(en): State<EngineHandle>) -> ApiResult<Vec<crate::model::NetworkInspect>> {
    Ok(Json(en.list().await?))
}

async fn create(
    State(en): State<EngineHandle>,
    JsonBody(spec): JsonBody<NetworkSpec>,
) -> Result<Response, ApiError> {
    let n = en.create_network(spec).await?;
    Ok((StatusCode::CREATED, Json(n)).into_response())
}

async fn prune(State(en): State<EngineHandle>) -> ApiResult<crate::api::PruneReport> {
    Ok(Json(en.prune().await?))
}

async fn inspect(
    State(en): State<EngineHandle>,
    Path(key): Path<String>,
) -> ApiResult<crate::model::NetworkInspect> {
    Ok(Json(en.inspect(key).await?))
}

async fn remove(
    State(en): State<EngineHandle>,
    Path(key): Path<String>,
) -> Result<StatusCode, ApiError> {
    en.remove_network(key).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn connect(
    State(en): State<EngineHandle>,
    Path(key): Path<String>,
    JsonBody(mut spec): JsonBody<EndpointSpec>,
) -> Result<Response, ApiError> {
    spec.network = key;
    if spec.placement == Placement::Sandbox {
        sandbox_exists(&spec.sandbox)?;
    }
    let e = en.connect(spec).await?;
    Ok((StatusCode::CREATED, Json(e)).into_response())
}

async fn disconnect(
    State(en): State<EngineHandle>,
    Path(key): Path<String>,
    JsonBody(req): JsonBody<DisconnectRequest>,
) -> Result<StatusCode, ApiError> {
    en.disconnect(key, req.endpoint).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn endpoints(State(en): State<EngineHandle>) -> ApiResult<Vec<crate::api::EndpointView>> {
    Ok(Json(en.endpoints().await?))
}

async fn stats(State(en): State<EngineHandle>) -> ApiResult<crate::api::StatsView> {
    Ok(Json(en.stats().await?))
}

async fn conntrack(State(en): State<EngineHandle>) -> ApiResult<Vec<crate::api::ConntrackView>> {
    Ok(Json(en.conntrack().await?))
}

async fn fdb(State(en): State<EngineHandle>) -> ApiResult<Vec<crate::api::FdbView>> {
    Ok(Json(en.fdb().await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::engine::tests::block;
    use crate::daemon::handle;
    use crate::model::Sandbox;
    use crate::store::tests::TempDb;
    use axum::body::Bytes;
    use futures::StreamExt;

    fn body_of<T: DeserializeOwned>(bytes: Vec<u8>) -> Result<T, ApiError> {
        let req = Request::builder()
            .method("POST")
            .uri("/v1/networks")
            .body(axum::body::Body::from(bytes))
            .unwrap();
        block(JsonBody::<T>::from_request(req, &())).map(|JsonBody(t)| t)
    }

    /// The status and the `message` of an error answer, which must be the JSON error shape.
    fn answer(e: ApiError) -> (u16, String) {
        let r = e.into_response();
        let status = r.status().as_u16();
        let bytes = block(axum::body::to_bytes(r.into_body(), usize::MAX)).unwrap();
        let b: ErrorBody = serde_json::from_slice(&bytes).unwrap();
        (status, b.message)
    }

    #[test]
    fn a_too_large_body_is_read_to_its_end_before_the_413() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        const CHUNK: usize = 64 << 10;
        let chunks = 3 * MAX_BODY / CHUNK;
        let pulled = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&pulled);
        let stream = futures::stream::iter(0..chunks).map(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok::<_, std::io::Error>(Bytes::from(vec![b' '; CHUNK]))
        });
        let req = Request::builder()
            .method("POST")
            .uri("/v1/networks")
            .body(axum::body::Body::from_stream(stream))
            .unwrap();
        let e = block(JsonBody::<NetworkSpec>::from_request(req, &()))
            .err()
            .unwrap();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        // The client writing it gets the answer, not a broken pipe.
        assert_eq!(pulled.load(Ordering::Relaxed), chunks);
    }

    #[test]
    fn oversize_bodies_get_413_in_the_json_error_shape() {
        let big = vec![b' '; 3 << 20];
        let (status, message) = answer(body_of::<NetworkSpec>(big).unwrap_err());
        assert_eq!(status, 413);
        assert!(message.contains("length limit"), "{message}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let (status, message) = answer(
            body_of::<NetworkSpec>(br#"{"name": "a", "subnets": "10.0.0.0/24"}"#.to_vec())
                .unwrap_err(),
        );
        assert_eq!(status, 400);
        assert!(message.contains("unknown field `subnets`"), "{message}");
        for bad in [
            r#"{"name": "a", "options": {"mtu": 1400, "nope": 1}}"#,
            r#"{"name": "a", "uplink": {"name": "u", "ip": {"addr": "1.2.3.4", "prefix": 24}, "x": 1}}"#,
        ] {
            assert!(body_of::<NetworkSpec>(bad.into()).is_err(), "{bad}");
        }
        let ep = r#"{"sandbox": {"pid": 1}, "name": "w", "names": {"hostname": "h", "dnss": []}}"#;
        assert!(body_of::<EndpointSpec>(ep.into()).is_err());
        assert!(
            body_of::<DisconnectRequest>(br#"{"endpoint": "w", "force": true}"#.to_vec()).is_err()
        );
        let ok = r#"{"sandbox": {"pid": 1}, "name": "w"}"#;
        assert!(
            body_of::<EndpointSpec>(ok.into()).is_ok(),
            "the network comes from the path"
        );
    }

    /// Every JSON example of docs/API.md is a body the server accepts.
    #[test]
    fn the_api_documents_examples_parse() {
        let doc = include_str!("../../../docs/API.md");
        let section = |title: &str| {
            let at = doc.find(title).unwrap_or_else(|| panic!("no {title}"));
            let rest = &doc[at..];
            let start = rest.find("```json\n").unwrap() + 8;
            let end = rest[start..].find("```").unwrap();
            rest[start..start + end].to_string()
        };
        let n = section("## NetworkSpec (create)");
        let spec: NetworkSpec = serde_json::from_str(&n).unwrap_or_else(|e| panic!("{e}: {n}"));
        assert_eq!(crate::validate::network_spec(&spec), Ok(()));
        let u = section("own uplink: its NAPT");
        serde_json::from_str::<crate::model::UplinkSpec>(&u).unwrap_or_else(|e| panic!("{e}: {u}"));
        let e = section("## EndpointSpec (connect)");
        let spec: EndpointSpec =
            serde_json::from_str(&e).unwrap_or_else(|err| panic!("{err}: {e}"));
        assert_eq!(crate::validate::endpoint_spec(&spec), Ok(()));
    }

    #[test]
    fn a_missing_sandbox_is_404() {
        let db = TempDb::new("http-sandbox");
        let en = handle::spawn_fake(db.0.clone());
        let spec = EndpointSpec {
            sandbox: Sandbox::Netns("/run/netns/sluice-no-such-namespace".into()),
            ..crate::state::tests::ep("", "w", 1)
        };
        let r = block(connect(
            State(en.clone()),
            Path("bridge".into()),
            JsonBody(spec.clone()),
        ));
        let (status, message) = answer(r.unwrap_err());
        assert_eq!(status, 404);
        assert!(message.contains("does not exist"), "{message}");
        let pid = EndpointSpec {
            sandbox: Sandbox::Pid(u32::MAX),
            ..spec
        };
        let r = block(connect(State(en), Path("bridge".into()), JsonBody(pid)));
        assert_eq!(answer(r.unwrap_err()).0, 404);
    }
}
