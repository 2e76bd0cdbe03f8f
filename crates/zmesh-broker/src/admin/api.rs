//! HTTP handlers of the admin port.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::json;
use sha2::Digest as _;
use tokio::sync::oneshot;

use super::{AdminCommand, AdminState, Snapshot};

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The dashboard: one page, no build step, fed by `/api/events`.
pub const DASHBOARD: &str = include_str!("dashboard.html");

fn snapshot(s: &AdminState) -> Snapshot {
    s.snapshot.read().unwrap_or_else(|p| p.into_inner()).clone()
}

fn error(status: StatusCode, reason: &str) -> Response {
    (status, axum::Json(json!({ "error": reason }))).into_response()
}

/// Refuse unless the request carries the admin token: the refusal's status and reason.
fn authorize(s: &AdminState, headers: &HeaderMap) -> Result<(), (StatusCode, &'static str)> {
    let Some(token) = &s.token else {
        return Err((
            StatusCode::FORBIDDEN,
            "changes are disabled: the broker has no admin token (--admin-token)",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    // Compare digests, every byte: neither the token's length nor where a
    // guess goes wrong shows in the time taken.
    let digest = |t: &str| sha2::Sha256::digest(t.as_bytes());
    let ok = given.is_some_and(|g| {
        digest(g)
            .iter()
            .zip(digest(token).iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    });
    if ok {
        Ok(())
    } else {
        Err((StatusCode::UNAUTHORIZED, "missing or wrong admin token"))
    }
}

/// Whether a `Host` header names this port in a way no other site can: an IP
/// address, `localhost`, or a name the operator allowed. A page from an
/// attacker's domain that re-resolves to 127.0.0.1 (DNS rebinding) still sends
/// its own name, so it is refused before any handler runs.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        // "[v6]" or "[v6]:port": an address literal.
        Some(rest) => return rest.contains(']'),
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || allowed.contains(&name)
}

async fn check_host(
    State(s): State<AdminState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // No Host at all is not a browser (they always send one).
    let host = req
        .headers()
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or("\u{fffd}"));
    match host {
        Some(h) if !host_allowed(h, &s.allowed_hosts) => error(
            StatusCode::FORBIDDEN,
            "this Host is not allowed: the admin port answers IP addresses, localhost and the names given with --admin-host",
        ),
        _ => next.run(req).await,
    }
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/", get(|| async { axum::response::Html(DASHBOARD) }))
        .route("/api/events", get(events))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route(
            "/api/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .route(
            "/api/version",
            get(|| async { axum::Json(json!({ "version": env!("CARGO_PKG_VERSION") })) }),
        )
        .route("/api/overview", get(overview))
        .route(
            "/api/services",
            get(|State(s): State<AdminState>| async move { axum::Json(snapshot(&s).services) }),
        )
        .route(
            "/api/queues",
            get(|State(s): State<AdminState>| async move { axum::Json(snapshot(&s).queues) }),
        )
        .route(
            "/api/streams",
            get(|State(s): State<AdminState>| async move { axum::Json(snapshot(&s).streams) }),
        )
        .route(
            "/api/connections",
            get(|State(s): State<AdminState>| async move { axum::Json(snapshot(&s).connections) }),
        )
        .route("/api/queues/{name}/purge", post(purge))
        .route("/api/routes/{service}", put(set_routes))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            check_host,
        ))
        .with_state(state)
}

/// Server-sent events: the snapshot once a second, for the dashboard.
async fn events(State(s): State<AdminState>) -> impl IntoResponse {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let stream = futures::stream::unfold((s, true), |(s, first)| async move {
        if !first {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        let data = serde_json::to_string(&snapshot(&s)).expect("snapshot serializes");
        Some((
            Ok::<_, std::convert::Infallible>(Event::default().data(data)),
            (s, false),
        ))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// The OpenAPI document's name pattern, exactly: what it allows is accepted.
fn is_name(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b))
}

/// The OpenAPI document's routes pattern, exactly.
fn is_routes(s: &str) -> bool {
    s.split(',').enumerate().all(|(i, part)| {
        let Some((target, weight)) = part.split_once(':') else {
            return false;
        };
        is_name(target, 100)
            && !target.starts_with("mmi.")
            && (1..=9).contains(&weight.len())
            && weight.bytes().all(|b| b.is_ascii_digit())
            && (i > 0 || !weight.starts_with('0'))
    })
}

async fn ready(State(s): State<AdminState>) -> Response {
    let snap = snapshot(&s);
    if snap.updated_ms == 0 {
        error(StatusCode::SERVICE_UNAVAILABLE, "starting")
    } else if snap.draining {
        error(StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else {
        "ready".into_response()
    }
}

async fn metrics(State(s): State<AdminState>) -> Response {
    let body = super::metrics::render(&snapshot(&s), &s.histograms);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn overview(State(s): State<AdminState>) -> Response {
    axum::Json(snapshot(&s)).into_response()
}

async fn purge(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err((status, reason)) = authorize(&s, &headers) {
        return error(status, reason);
    }
    let (reply, rx) = oneshot::channel();
    if s.commands
        .send(AdminCommand::Purge { queue: name, reply })
        .await
        .is_err()
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the broker is stopping");
    }
    match rx.await {
        Ok(Ok(n)) => axum::Json(json!({ "purged": n })).into_response(),
        Ok(Err(e)) if e.contains("no queue") => error(StatusCode::NOT_FOUND, &e),
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, &e),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the broker is stopping"),
    }
}

async fn set_routes(
    State(s): State<AdminState>,
    Path(service): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if let Err((status, reason)) = authorize(&s, &headers) {
        return error(status, reason);
    }
    if !is_name(&service, 100) {
        return error(
            StatusCode::BAD_REQUEST,
            "service names are 1-100 of A-Z a-z 0-9 . _ @ -",
        );
    }
    if !is_routes(&body) {
        return error(
            StatusCode::BAD_REQUEST,
            "routes are target:weight pairs separated by commas, targets outside mmi., the first weight above zero",
        );
    }
    let (reply, rx) = oneshot::channel();
    let cmd = AdminCommand::SetRoutes {
        service,
        spec: body,
        reply,
    };
    if s.commands.send(cmd).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the broker is stopping");
    }
    match rx.await {
        Ok(Ok(())) => axum::Json(json!({ "ok": true })).into_response(),
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, &e),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the broker is stopping"),
    }
}

#[cfg(test)]
mod tests {
    use super::host_allowed;

    #[test]
    fn hosts_an_attacker_cannot_name_are_allowed_and_others_refused() {
        let allowed = vec!["broker.internal".to_owned()];
        for ok in [
            "127.0.0.1:8222",
            "10.1.2.3",
            "[::1]:8222",
            "[fe80::1]",
            "localhost:8222",
            "LOCALHOST",
            "app.localhost",
            "broker.internal:8222",
            "Broker.Internal.",
        ] {
            assert!(host_allowed(ok, &allowed), "{ok} should be allowed");
        }
        for bad in [
            "evil.example",
            "evil.example:8222",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "broker.internal.evil.example",
            "",
        ] {
            assert!(!host_allowed(bad, &allowed), "{bad} should be refused");
        }
    }
}
