//! The control API: HTTP JSON on loopback, every route but `/v1/healthz` behind the bearer
//! token. The CLI is a client of exactly these routes.
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | `/v1/healthz` | liveness, no token |
//! | GET | `/v1/status?app=&env=` | aliases, traffic, versions, instances, rollouts |
//! | POST | `/v1/deploy` | `{app, env, artifact, label?, vars?}` → 202 with the rollout id |
//! | GET | `/v1/rollouts/{id}` | one rollout with its events |
//! | POST | `/v1/rollback` | `{app, env}`: live back to blue (or cancel the running rollout) |
//! | POST | `/v1/promote`, `/v1/pause`, `/v1/resume`, `/v1/abort` | `{app, env}`: operator commands to the running rollout |
//! | POST | `/v1/retry` | `{app, env}`: a new rollout of the version whose last rollout failed |
//! | GET | `/v1/history?app=&env=&limit=` | rollouts with events, newest first |
//! | GET | `/v1/logs?app=&env=&version=&lines=` | instance log tails |
//! | GET | `/v1/audit?app=&env=&limit=` | audit entries, newest first |
//! | … | `/v1/secrets…`, `/v1/master-key/rotate` | secrets: see [`crate::secrets::routes`] |

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rollgate_store::Filter;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use rollgate_core::config::Permission;

use crate::controller::{Command, Controller, DeployRequest, rfc3339};
use crate::error::ApiError;

#[derive(Clone)]
struct AppState {
    controller: Arc<Controller>,
    tokens: Arc<ApiTokens>,
}

/// The tokens the API accepts: the data directory's token may do everything; the tokens of
/// `server.tokens` only what they list.
pub struct ApiTokens {
    pub admin: String,
    /// (name, token, permissions).
    pub limited: Vec<(String, String, Vec<Permission>)>,
}

impl ApiTokens {
    /// Who presents `token`: `Some(None)` for the admin token, `Some(Some(i))` for a limited
    /// one, `None` for no valid token. Every candidate is compared in constant time, and all
    /// of them always, so the time taken says nothing about which one came close.
    fn identify(&self, token: &str) -> Option<Option<usize>> {
        let mut found = None;
        if bool::from(token.as_bytes().ct_eq(self.admin.as_bytes())) {
            found = Some(None);
        }
        for (i, (_, t, _)) in self.limited.iter().enumerate() {
            if bool::from(token.as_bytes().ct_eq(t.as_bytes())) && found.is_none() {
                found = Some(Some(i));
            }
        }
        found
    }
}

/// The permission a request needs.
fn required(method: &axum::http::Method, path: &str) -> Permission {
    use axum::http::Method;
    let secrets = path.starts_with("/v1/secrets") || path.starts_with("/v1/master-key");
    match (method, path) {
        (&Method::GET, p) if secrets && p.ends_with("/value") => Permission::SecretsRead,
        (&Method::GET, _) => Permission::Read,
        _ if secrets => Permission::SecretsWrite,
        (_, "/v1/deploy" | "/v1/retry") => Permission::Deploy,
        _ => Permission::Operate,
    }
}

/// Lets route modules outside this file (e.g. `crate::secrets`) take the controller as
/// their state.
impl axum::extract::FromRef<AppState> for Arc<Controller> {
    fn from_ref(state: &AppState) -> Arc<Controller> {
        Arc::clone(&state.controller)
    }
}

/// The router of the control API.
pub fn router(controller: Arc<Controller>, tokens: ApiTokens) -> Router {
    let state = AppState {
        controller,
        tokens: Arc::new(tokens),
    };
    let protected = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/deploy", post(deploy))
        .route("/v1/rollouts/{id}", get(rollout))
        .route("/v1/rollback", post(rollback))
        .route(
            "/v1/promote",
            post(|s, h, b| operator(s, h, b, Command::Promote)),
        )
        .route(
            "/v1/pause",
            post(|s, h, b| operator(s, h, b, Command::Pause)),
        )
        .route(
            "/v1/resume",
            post(|s, h, b| operator(s, h, b, Command::Resume)),
        )
        .route(
            "/v1/abort",
            post(|s, h, b| operator(s, h, b, Command::Cancel)),
        )
        .route("/v1/retry", post(retry))
        .route("/v1/history", get(history))
        .route("/v1/logs", get(logs))
        .route("/v1/audit", get(audit))
        .route("/v1/metrics", get(metrics))
        // Secrets (crate::secrets, docs/secrets.md), behind the same token.
        .merge(crate::secrets::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route(
            "/v1/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .merge(protected)
        .fallback(|| async { ApiError::NotFound("no such API route".to_string()) })
        .with_state(state)
}

async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Constant-time: the comparison must not tell how much of a guess was right.
    match state.tokens.identify(presented) {
        None => ApiError::Unauthorized.into_response(),
        Some(None) => next.run(req).await,
        Some(Some(i)) => {
            let need = required(req.method(), req.uri().path());
            let (name, _, may) = &state.tokens.limited[i];
            if may.contains(&need) {
                next.run(req).await
            } else {
                ApiError::Forbidden(format!("token {name:?} may not {}", need.as_str()))
                    .into_response()
            }
        }
    }
}

/// Who is acting: the CLI sends its user in `X-Rollgate-Actor`.
pub(crate) fn actor(headers: &HeaderMap) -> String {
    headers
        .get("x-rollgate-actor")
        .and_then(|v| v.to_str().ok())
        .map(|s| {
            s.chars()
                .filter(|c| c.is_ascii_graphic())
                .take(64)
                .collect::<String>()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "api".to_string())
}

#[derive(Deserialize)]
struct AppEnvQuery {
    app: Option<String>,
    env: Option<String>,
    limit: Option<u32>,
}

async fn status(
    State(s): State<AppState>,
    Query(q): Query<AppEnvQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(
        s.controller.status(q.app.as_deref(), q.env.as_deref())?,
    ))
}

/// Prometheus text exposition of the gateways' counters (docs/cli-and-api.md).
async fn metrics(State(s): State<AppState>) -> Response {
    let body = prometheus_text(s.controller.gateways());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// The counters of every environment's gateway in Prometheus' text format: edge decisions per
/// rule and action, and access-log lines dropped.
fn prometheus_text(
    gateways: &std::collections::BTreeMap<String, crate::controller::EnvGateway>,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    out.push_str(
        "# HELP rollgate_edge_requests_total Requests an edge rule blocked (action=\"block\") \
         or matched in count mode and let through (action=\"count\"), since the gateway started.\n\
         # TYPE rollgate_edge_requests_total counter\n",
    );
    for (env, gw) in gateways {
        for (rule, counts) in gw.metrics.edge_counters() {
            for (action, n) in [("block", counts.blocked), ("count", counts.counted)] {
                let _ = writeln!(
                    out,
                    "rollgate_edge_requests_total{{env=\"{}\",rule=\"{}\",action=\"{action}\"}} {n}",
                    label(env),
                    label(&rule)
                );
            }
        }
    }
    out.push_str(
        "# HELP rollgate_access_log_dropped_total Access-log lines dropped because the writer \
         fell behind.\n# TYPE rollgate_access_log_dropped_total counter\n",
    );
    for (env, gw) in gateways {
        let _ = writeln!(
            out,
            "rollgate_access_log_dropped_total{{env=\"{}\"}} {}",
            label(env),
            gw.metrics.access_log_dropped()
        );
    }
    out.push_str(
        "# HELP rollgate_gateway_open_connections Client connections open on each serving \
         thread of the gateway.\n# TYPE rollgate_gateway_open_connections gauge\n",
    );
    for (env, gw) in gateways {
        for (worker, open) in gw.metrics.open_connections().into_iter().enumerate() {
            let _ = writeln!(
                out,
                "rollgate_gateway_open_connections{{env=\"{}\",worker=\"{worker}\"}} {open}",
                label(env)
            );
        }
    }
    out
}

/// A label value as Prometheus' text format escapes it.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

async fn deploy(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<DeployRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let Json(req) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let accepted = s.controller.deploy(req, &actor(&headers)).await?;
    Ok((StatusCode::ACCEPTED, Json(json!(accepted))))
}

async fn rollout(
    State(s): State<AppState>,
    Path(id): Path<u64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(s.controller.rollout_detail(id)?))
}

#[derive(Deserialize)]
struct RollbackRequest {
    app: String,
    env: String,
}

async fn rollback(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<RollbackRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(req) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    Ok(Json(
        s.controller
            .rollback(&req.app, &req.env, &actor(&headers))
            .await?,
    ))
}

async fn history(
    State(s): State<AppState>,
    Query(q): Query<AppEnvQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let filter = Filter {
        app: q.app,
        env: q.env,
        limit: q.limit,
    };
    Ok(Json(s.controller.history(&filter)?))
}

#[derive(Deserialize)]
struct LogsQuery {
    app: String,
    env: String,
    version: Option<u64>,
    lines: Option<usize>,
}

async fn logs(
    State(s): State<AppState>,
    Query(q): Query<LogsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(s.controller.logs(
        &q.app,
        &q.env,
        q.version,
        q.lines.unwrap_or(100).min(10_000),
    )?))
}

async fn audit(
    State(s): State<AppState>,
    Query(q): Query<AppEnvQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let filter = Filter {
        app: q.app,
        env: q.env,
        limit: q.limit,
    };
    let entries: Vec<_> = s
        .controller
        .store()
        .audit(&filter)?
        .into_iter()
        .map(|a| json!({ "at": rfc3339(a.at), "actor": a.actor, "action": a.action, "app": a.app, "env": a.env, "detail": a.detail }))
        .collect();
    Ok(Json(json!({ "audit": entries })))
}

type AppBody = Result<Json<RollbackRequest>, axum::extract::rejection::JsonRejection>;

/// An operator command (promote, pause, resume, abort) to the rollout of `{app, env}`.
async fn operator(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: AppBody,
    command: Command,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(req) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    Ok(Json(
        s.controller
            .command(&req.app, &req.env, command, &actor(&headers))
            .await?,
    ))
}

async fn retry(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<RollbackRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let Json(req) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let accepted = s
        .controller
        .retry(&req.app, &req.env, &actor(&headers))
        .await?;
    Ok((StatusCode::ACCEPTED, Json(json!(accepted))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_prometheus_text_with_escaped_labels() {
        let mut gateways = std::collections::BTreeMap::new();
        gateways.insert(
            "prod".to_string(),
            crate::controller::EnvGateway {
                addr: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
                routes: rollgate_gateway::RouteHandle::default(),
                metrics: rollgate_gateway::Metrics::new(),
            },
        );
        let text = prometheus_text(&gateways);
        assert!(
            text.starts_with("# HELP rollgate_edge_requests_total "),
            "{text}"
        );
        assert!(text.contains("# TYPE rollgate_edge_requests_total counter\n"));
        assert!(text.contains(
            "rollgate_edge_requests_total{env=\"prod\",rule=\"waf.sqli\",action=\"block\"} 0\n"
        ));
        assert!(text.contains(
            "rollgate_edge_requests_total{env=\"prod\",rule=\"rate_limit\",action=\"count\"} 0\n"
        ));
        assert!(text.contains("rollgate_access_log_dropped_total{env=\"prod\"} 0\n"));
        assert!(text.contains("# TYPE rollgate_gateway_open_connections gauge\n"));
        // Every sample line is `name{labels} value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<u64>().is_ok(), "{line}");
        }
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
