//! The admin listener (loopback by default): health, readiness, config version,
//! reload, metrics and the read-only views (`/-/routes`, `/-/keys`,
//! `/-/plugins`, `/-/usage?key=ID`; see [`views`] and [`live`]). Kept apart from the proxy
//! listeners so it is never exposed by them.

pub mod client;
pub mod live;
pub mod views;

use crate::body::{full, Body};
use crate::config::watch::Reloader;
use http::header::CONTENT_TYPE;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub async fn serve(
    listener: TcpListener,
    reloader: Arc<Reloader>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.changed() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let reloader = reloader.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let reloader = reloader.clone();
                async move { Ok::<_, Infallible>(route(req, &reloader).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn route(req: Request<Incoming>, reloader: &Arc<Reloader>) -> Response<Body> {
    let state = reloader.state();
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => {
            if state.draining.load(Ordering::Relaxed) {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else {
                text(StatusCode::OK, "ready\n")
            }
        }
        (&Method::GET, "/-/config") | (&Method::GET, "/-/version") => {
            let gw = reloader.live().load();
            json(
                StatusCode::OK,
                serde_json::json!({
                    "hash": gw.version.hash,
                    "loaded_at": httpdate::fmt_http_date(gw.version.loaded_at),
                    "loaded_at_unix": gw.version.loaded_at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
                    "routes": gw.inventory.routes.len(),
                    "keys": gw.inventory.keys.len(),
                    "reloads_ok": state.reloads_ok.load(Ordering::Relaxed),
                    "reloads_failed": state.reloads_failed.load(Ordering::Relaxed),
                }),
            )
        }
        (&Method::POST, "/-/reload") => match reloader.reload_async("admin").await {
            Ok(o) => json(
                StatusCode::OK,
                serde_json::json!({"ok": true, "changed": o.changed, "hash": o.version.hash, "changes": o.changes}),
            ),
            Err(errors) => json(
                StatusCode::UNPROCESSABLE_ENTITY,
                serde_json::json!({"ok": false, "errors": errors.iter().map(|e| e.to_string()).collect::<Vec<_>>()}),
            ),
        },
        (&Method::GET, "/metrics") => {
            let accept = req
                .headers()
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let (body, content_type) = state.metrics.encode_for(accept);
            let mut r = Response::new(full(body));
            r.headers_mut()
                .insert(CONTENT_TYPE, http::HeaderValue::from_static(content_type));
            r
        }
        (&Method::GET, "/-/routes") => {
            let gw = reloader.live().load();
            json(StatusCode::OK, live::routes(&gw))
        }
        (&Method::GET, "/-/keys") => {
            json(StatusCode::OK, reloader.live().load().views.keys().clone())
        }
        (&Method::GET, "/-/plugins") => json(
            StatusCode::OK,
            reloader.live().load().views.plugins().clone(),
        ),
        (&Method::GET, "/-/usage") => {
            let key = req.uri().query().and_then(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "key")
                    .map(|(_, v)| v.into_owned())
            });
            let Some(key) = key else {
                return json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": "usage: /-/usage?key=ID"}),
                );
            };
            match live::usage(&reloader.live().load(), &key, state.cluster.is_some()) {
                Some(v) => json(StatusCode::OK, v),
                None => json(
                    StatusCode::NOT_FOUND,
                    serde_json::json!({"error": "no such key"}),
                ),
            }
        }
        (_, "/-/reload") => text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    r
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<Body> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}
