//! The API's routes (axum over the daemon's Unix socket): JSON in, JSON out, every error as
//! `{"message": "..."}` with a status that says whose fault it is (4xx: the request's, 5xx:
//! the machine's). Bodies are parsed by hand so that a bad body also gets that one-line form.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;

use crate::api::{DisconnectRequest, ErrorBody, VersionView, VERSION};
use crate::daemon::engine::EngineError;
use crate::daemon::handle::EngineHandle;
use crate::model::{EndpointSpec, NetworkSpec};

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

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
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

async fn create(State(en): State<EngineHandle>, body: Bytes) -> Result<Response, ApiError> {
    let spec: NetworkSpec = parse(&body)?;
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
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut spec: EndpointSpec = parse(&body)?;
    spec.network = key;
    let e = en.connect(spec).await?;
    Ok((StatusCode::CREATED, Json(e)).into_response())
}

async fn disconnect(
    State(en): State<EngineHandle>,
    Path(key): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let req: DisconnectRequest = parse(&body)?;
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
