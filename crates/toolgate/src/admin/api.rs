//! The admin HTTP API, `/admin/api/v1/...` (JSON), for operators and the web UI. Guarded by
//! the admin token (separate from grant tokens: a grant token here is 401) and by the same
//! Host/Origin check as the agent endpoint. Its OpenAPI document is `openapi.json`.
//!
//! Handlers run the store's blocking I/O on blocking threads and rebuild the gateway's grant
//! table after every change, so a revoked token is refused from the next request on.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::{Admin, AdminError};
use crate::gateway::Gateway;

pub const PREFIX: &str = "/admin/api/v1";

pub fn router(gw: Arc<Gateway>) -> Router {
    let guarded = Router::new()
        .route("/servers", get(servers))
        .route("/servers/{server}", get(server))
        .route("/servers/{server}/tools", get(server_tools))
        .route("/servers/{server}/policy", get(policy).put(apply_policy))
        .route("/servers/{server}/policy/versions", get(policy_versions))
        .route(
            "/servers/{server}/policy/versions/{version}",
            get(policy_version),
        )
        .route("/grants", get(grants).post(create_grant))
        .route("/grants/{id}", get(grant))
        .route("/grants/{id}/rotate", post(rotate))
        .route("/grants/{id}/revoke", post(revoke))
        .route("/policies/validate", post(validate))
        .route("/audit", get(audit))
        .route_layer(axum::middleware::from_fn_with_state(
            gw.clone(),
            authenticate,
        ));
    Router::new()
        .route(
            "/openapi.json",
            get(|| async { axum::Json(super::openapi::document()) }),
        )
        .merge(guarded)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint") })
        .layer(axum::middleware::from_fn(json_errors))
        .with_state(gw)
}

/// Every error of the admin API in the documented JSON shape, including the ones axum's
/// extractors produce before a handler runs (a bad query string, a path that is not UTF-8).
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let message = String::from_utf8_lossy(&body).trim().to_string();
    let code = if status.is_client_error() {
        "invalid"
    } else {
        "internal"
    };
    error(
        status,
        code,
        if message.is_empty() {
            "the request was refused"
        } else {
            &message
        },
    )
}

/// An error body: `{"error": {"code", "message", "problems"?}}`.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        match self {
            AdminError::NotFound(_) => error(StatusCode::NOT_FOUND, "not_found", &message),
            AdminError::Invalid(_) => error(StatusCode::BAD_REQUEST, "invalid", &message),
            AdminError::Conflict(_) => error(StatusCode::CONFLICT, "conflict", &message),
            AdminError::Policy(problems) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(json!({"error": {"code": "invalid_policy", "message": "the policy is invalid; nothing was stored", "problems": problems}})),
            )
                .into_response(),
            AdminError::Store(e) => {
                tracing::error!("admin: {e}");
                error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the state store failed; see the gateway's log")
            }
        }
    }
}

async fn authenticate(State(gw): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or(request.uri().authority().map(|a| a.as_str()));
    if !host.is_some_and(|h| gw.hosts.host_allowed(h))
        || headers
            .get(header::ORIGIN)
            .is_some_and(|o| !o.to_str().is_ok_and(|o| gw.hosts.origin_allowed(o)))
    {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Host or Origin not allowed",
        );
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split_once(' ')
                .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
                .map(|(_, t)| t.trim())
        })
        .filter(|t| !t.is_empty())
        .map(crate::grants::digest);
    let ok = match (presented, gw.admin_token.get()) {
        (Some(p), Some(expected)) => bool::from(p.ct_eq(expected)),
        _ => false,
    };
    if !ok {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the admin token is required (Authorization: Bearer ...)",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"toolgate-admin\""),
        );
        return r;
    }
    next.run(request).await
}

/// Runs an operation on a blocking thread, rebuilding the grant table after a change.
async fn run<T, F>(gw: &Arc<Gateway>, changes: bool, op: F) -> Result<T, AdminError>
where
    T: Send + 'static,
    F: FnOnce(&Admin) -> Result<T, AdminError> + Send + 'static,
{
    let gw = gw.clone();
    tokio::task::spawn_blocking(move || {
        let admin = Admin {
            store: gw.state.clone(),
            config: Arc::new(gw.config.clone()),
        };
        let out = op(&admin)?;
        if changes {
            gw.refresh().map_err(AdminError::Store)?;
        }
        Ok(out)
    })
    .await
    .map_err(|e| AdminError::Store(e.to_string()))?
}

fn json<T: Serialize>(status: StatusCode, v: T) -> Response {
    (status, axum::Json(v)).into_response()
}

fn reply<T: Serialize>(status: StatusCode, r: Result<T, AdminError>) -> Response {
    match r {
        Ok(v) => json(status, v),
        Err(e) => e.into_response(),
    }
}

async fn servers(State(gw): State<Arc<Gateway>>) -> Response {
    reply(StatusCode::OK, run(&gw, false, |a| Ok(a.servers())).await)
}

async fn server(State(gw): State<Arc<Gateway>>, Path(name): Path<String>) -> Response {
    reply(
        StatusCode::OK,
        run(&gw, false, move |a| a.server(&name)).await,
    )
}

async fn server_tools(State(gw): State<Arc<Gateway>>, Path(name): Path<String>) -> Response {
    let Some(upstream) = gw.servers.get(&name) else {
        return AdminError::NotFound(format!("no server named {name:?}")).into_response();
    };
    match crate::upstream::probe::list_tool_names(upstream).await {
        Ok(tools) => json(StatusCode::OK, json!({"server": name, "tools": tools})),
        Err(e) => error(
            StatusCode::BAD_GATEWAY,
            "upstream",
            &format!("cannot list the server's tools: {e}"),
        ),
    }
}

#[derive(Deserialize)]
struct GrantQuery {
    grant: Option<String>,
}

async fn policy(
    State(gw): State<Arc<Gateway>>,
    Path(server): Path<String>,
    Query(q): Query<GrantQuery>,
) -> Response {
    reply(
        StatusCode::OK,
        run(&gw, false, move |a| {
            a.policy(&server, q.grant.as_deref(), None)
        })
        .await,
    )
}

async fn apply_policy(
    State(gw): State<Arc<Gateway>>,
    Path(server): Path<String>,
    Query(q): Query<GrantQuery>,
    body: Bytes,
) -> Response {
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "the body must be a UTF-8 JSON policy document",
        );
    };
    reply(
        StatusCode::CREATED,
        run(&gw, true, move |a| {
            a.apply_policy(&server, q.grant.as_deref(), &text)
        })
        .await,
    )
}

async fn policy_versions(
    State(gw): State<Arc<Gateway>>,
    Path(server): Path<String>,
    Query(q): Query<GrantQuery>,
) -> Response {
    reply(
        StatusCode::OK,
        run(&gw, false, move |a| {
            a.policy_versions(&server, q.grant.as_deref())
        })
        .await,
    )
}

async fn policy_version(
    State(gw): State<Arc<Gateway>>,
    Path((server, version)): Path<(String, String)>,
    Query(q): Query<GrantQuery>,
) -> Response {
    let Ok(version) = version.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "a version is a whole number",
        );
    };
    reply(
        StatusCode::OK,
        run(&gw, false, move |a| {
            a.policy(&server, q.grant.as_deref(), Some(version))
        })
        .await,
    )
}

async fn grants(State(gw): State<Arc<Gateway>>) -> Response {
    reply(StatusCode::OK, run(&gw, false, |a| a.grants()).await)
}

async fn grant(State(gw): State<Arc<Gateway>>, Path(id): Path<String>) -> Response {
    reply(StatusCode::OK, run(&gw, false, move |a| a.grant(&id)).await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGrant {
    server: String,
    label: String,
    /// Kept as written: the policy is read strictly by the operation itself (a key written
    /// twice is refused with its pointer, exactly as on the state directory).
    policy: Option<Box<serde_json::value::RawValue>>,
}

async fn create_grant(State(gw): State<Arc<Gateway>>, body: Bytes) -> Response {
    // serde refuses a top-level field written twice (`"server"` twice).
    let new: NewGrant = match serde_json::from_slice(&body) {
        Ok(n) => n,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid",
                &format!("expected {{\"server\", \"label\", \"policy\"?}}: {e}"),
            );
        }
    };
    let policy = new
        .policy
        .map(|p| p.get().to_string())
        .filter(|p| p != "null");
    reply(
        StatusCode::CREATED,
        run(&gw, true, move |a| {
            a.create_grant(&new.server, &new.label, policy.as_deref())
        })
        .await,
    )
}

async fn rotate(State(gw): State<Arc<Gateway>>, Path(id): Path<String>) -> Response {
    reply(StatusCode::OK, run(&gw, true, move |a| a.rotate(&id)).await)
}

async fn revoke(State(gw): State<Arc<Gateway>>, Path(id): Path<String>) -> Response {
    reply(StatusCode::OK, run(&gw, true, move |a| a.revoke(&id)).await)
}

async fn validate(body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body);
    json(StatusCode::OK, Admin::validate(&text))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    grant: Option<String>,
    tool: Option<String>,
    outcome: Option<String>,
    since: Option<String>,
    until: Option<String>,
    after_seq: Option<u64>,
    limit: Option<usize>,
}

/// Records matching the filters, oldest first: the newest `limit` (default 100, at most
/// 10 000), or with `after_seq` the oldest `limit` after it (to page forward).
async fn audit(State(gw): State<Arc<Gateway>>, Query(p): Query<AuditParams>) -> Response {
    let query = crate::audit::Query {
        grant: p.grant,
        tool: p.tool,
        outcome: p.outcome,
        since: p.since,
        until: p.until,
        after_seq: p.after_seq,
        limit: Some(p.limit.unwrap_or(100).min(10_000)),
    };
    reply(
        StatusCode::OK,
        run(&gw, false, move |a| a.audit(&query)).await,
    )
}
