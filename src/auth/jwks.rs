//! Fetching a JWKS document over HTTP(S) for `[[jwt_providers]] jwks_url`:
//! one GET with a bounded timeout and a bounded body (the caller parses it and
//! keeps its last good key set when this fails).

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::Duration;

/// Largest accepted JWKS document.
const MAX_BYTES: usize = 1024 * 1024;

/// Checks a `jwks_url` at config time: an absolute `http` or `https` URL.
pub fn check_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|_| format!("jwks_url {url:?} is not a URL"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(h)) if !h.is_empty() => Ok(uri),
        _ => Err(format!(
            "jwks_url {url:?} must be an http:// or https:// URL"
        )),
    }
}

/// GETs `url`; the whole exchange is bounded by `timeout`.
pub async fn fetch(url: &Uri, timeout: Duration) -> Result<String, String> {
    tokio::time::timeout(timeout, get(url))
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

async fn get(url: &Uri) -> Result<String, String> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let req = Request::get(url.clone())
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    if resp.status() != StatusCode::OK {
        return Err(format!("answered {}", resp.status()));
    }
    let body = Limited::new(resp.into_body(), MAX_BYTES)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| "body is not UTF-8".into())
}
