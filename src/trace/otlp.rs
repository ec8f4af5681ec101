//! `[tracing]`: the OTLP/HTTP exporter of request spans, through the
//! OpenTelemetry SDK.
//!
//! Nothing here runs on a request's path but the SDK's span bookkeeping: a
//! finished span is put on the SDK's bounded queue (`try_send`, dropped when
//! full), its batch processor thread encodes batches as protobuf and hands them
//! to [`Collector`], which posts them from a small runtime of its own
//! (`keygate-otlp` thread). A dead or slow collector costs the requests nothing.
//!
//! The exporter starts with the first span, not when the file is compiled, so
//! that `keygate check` and a refused reload start no thread. A reload with the
//! same settings keeps the running exporter ([`Tracers`]); a replaced one is
//! flushed and shut down on a thread of its own once the last snapshot using it
//! is gone.

use crate::config::raw::RawTracing;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

/// Where spans are posted, below the configured base URL.
pub const TRACES_PATH: &str = "/v1/traces";
const MIN_TIMEOUT: Duration = Duration::from_millis(1);
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// `${ENV}` expansion of a header value, given by the config compiler.
pub type Expand<'a> = &'a dyn Fn(&str) -> Result<String, String>;

/// The checked `[tracing]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `<otlp>/v1/traces`.
    pub endpoint: String,
    pub service_name: String,
    pub sample_ratio: f64,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub timeout: Duration,
}

impl Settings {
    /// Every problem of the section, as (field, message).
    pub fn compile(
        raw: &RawTracing,
        expand: Expand<'_>,
    ) -> Result<Settings, Vec<(String, String)>> {
        let mut e: Vec<(String, String)> = vec![];
        let endpoint = match endpoint(&raw.otlp) {
            Ok(u) => u,
            Err(m) => {
                e.push(("tracing.otlp".into(), m));
                String::new()
            }
        };
        if raw.service_name.trim().is_empty() {
            e.push(("tracing.service_name".into(), "must not be empty".into()));
        }
        if !(0.0..=1.0).contains(&raw.sample_ratio) {
            e.push((
                "tracing.sample_ratio".into(),
                format!("{} is not between 0 and 1", raw.sample_ratio),
            ));
        }
        if raw.timeout < MIN_TIMEOUT || raw.timeout > MAX_TIMEOUT {
            e.push((
                "tracing.timeout".into(),
                "must be between 1ms and 60s".into(),
            ));
        }
        let mut headers = vec![];
        for (k, v) in &raw.headers {
            let at = format!("tracing.headers ({k})");
            let Ok(name) = HeaderName::from_bytes(k.as_bytes()) else {
                e.push((at, format!("{k:?} is not a header name")));
                continue;
            };
            let value = expand(v).and_then(|v| {
                HeaderValue::from_str(&v).map_err(|_| "is not a valid header value".into())
            });
            match value {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    headers.push((name, v));
                }
                Err(m) => e.push((at, m)),
            }
        }
        if !e.is_empty() {
            return Err(e);
        }
        Ok(Settings {
            endpoint,
            service_name: raw.service_name.clone(),
            sample_ratio: raw.sample_ratio,
            headers,
            timeout: raw.timeout,
        })
    }

    /// What makes two exporters the same one (header values included: a new
    /// token means a new exporter).
    fn identity(&self) -> String {
        let headers: Vec<(&str, &[u8])> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes()))
            .collect();
        format!(
            "{}|{}|{}|{:?}|{:?}",
            self.endpoint, self.service_name, self.sample_ratio, self.timeout, headers
        )
    }
}

/// `<base>/v1/traces` of an `http://` or `https://` base URL with a host.
fn endpoint(base: &str) -> Result<String, String> {
    let uri: http::Uri = base.parse().map_err(|_| format!("{base:?} is not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{base:?} must be an http:// or https:// URL")),
    }
    match uri.authority() {
        Some(a) if !a.host().is_empty() && !a.as_str().contains('@') => {}
        _ => return Err(format!("{base:?} has no host (or has user info)")),
    }
    if uri.query().is_some() {
        return Err(format!("{base:?} must not have a query"));
    }
    Ok(format!("{}{TRACES_PATH}", base.trim_end_matches('/')))
}

/// The exporters in use, by settings, so that a reload that keeps `[tracing]`
/// keeps its exporter (and what it has queued).
#[derive(Default)]
pub struct Tracers {
    live: Mutex<HashMap<String, Weak<Tracer>>>,
}

impl Tracers {
    /// The exporter for `raw`, `None` without a `[tracing]` section.
    pub fn compile(
        &self,
        raw: Option<&RawTracing>,
        expand: Expand<'_>,
    ) -> Result<Option<Arc<Tracer>>, Vec<(String, String)>> {
        let Some(raw) = raw else { return Ok(None) };
        let settings = Settings::compile(raw, expand)?;
        let id = settings.identity();
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = live.get(&id).and_then(Weak::upgrade) {
            return Ok(Some(t));
        }
        let t = Arc::new(Tracer::new(settings));
        live.retain(|_, w| w.strong_count() > 0);
        live.insert(id, Arc::downgrade(&t));
        Ok(Some(t))
    }
}

/// One exporter: the settings and, from the first span on, the SDK pipeline.
pub struct Tracer {
    settings: Settings,
    /// `None` inside when the pipeline could not start (logged once).
    pipeline: OnceLock<Option<Pipeline>>,
}

struct Pipeline {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    /// Ends the collector runtime's thread when dropped.
    _io: tokio::sync::oneshot::Sender<()>,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("endpoint", &self.settings.endpoint)
            .field("started", &self.pipeline.get().is_some())
            .finish()
    }
}

impl Tracer {
    pub fn new(settings: Settings) -> Tracer {
        Tracer {
            settings,
            pipeline: OnceLock::new(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The SDK tracer, starting the pipeline on first use.
    pub(crate) fn sdk(&self) -> Option<&SdkTracer> {
        self.pipeline
            .get_or_init(|| match Pipeline::start(&self.settings) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::error!(error = %e, "OTLP span export could not start; no spans are exported");
                    None
                }
            })
            .as_ref()
            .map(|p| &p.tracer)
    }

    /// Export what is queued now (blocks up to the export timeout); false when
    /// the collector did not take it.
    pub fn flush(&self) -> bool {
        match self.pipeline.get() {
            Some(Some(p)) => p.provider.force_flush().is_ok(),
            _ => true,
        }
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        // Shutting down waits for the last export: never on a request's thread.
        if let Some(Some(p)) = self.pipeline.take() {
            let stopped = std::thread::Builder::new()
                .name("keygate-otlp-stop".into())
                .spawn(move || {
                    let _ = p.provider.shutdown();
                    drop(p);
                });
            if let Err(e) = stopped {
                tracing::warn!(error = %e, "OTLP exporter stopped without a final flush");
            }
        }
    }
}

impl Pipeline {
    fn start(s: &Settings) -> Result<Pipeline, String> {
        let (io, stop) = io_runtime().map_err(|e| format!("runtime: {e}"))?;
        let collector = Collector::new(io, s)?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(collector)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(s.endpoint.clone())
            .with_timeout(s.timeout)
            .build()
            .map_err(|e| e.to_string())?;
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BatchSpanProcessor::builder(exporter).build())
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                s.sample_ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(s.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("keygate");
        Ok(Pipeline {
            provider,
            tracer,
            _io: stop,
        })
    }
}

/// A current-thread runtime on its own thread for the collector's connections,
/// running until the returned sender is dropped.
fn io_runtime() -> std::io::Result<(tokio::runtime::Handle, tokio::sync::oneshot::Sender<()>)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("keygate-otlp".into())
        .spawn(move || {
            rt.block_on(async move {
                let _ = stopped.await;
            })
        })?;
    Ok((handle, stop))
}

/// The OTLP exporter's HTTP client: the SDK's batch thread awaits a request
/// that runs on the collector runtime, through the same hyper and rustls as
/// the back ends (webpki roots for `https://`).
struct Collector {
    io: tokio::runtime::Handle,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    headers: Arc<Vec<(HeaderName, HeaderValue)>>,
    timeout: Duration,
    /// The last export failed: the next failure is not logged again.
    failing: Arc<AtomicBool>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Collector {
    fn new(io: tokio::runtime::Handle, s: &Settings) -> Result<Collector, String> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(s.timeout));
        let tls = crate::upstream::tls::client_tls(None)?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Collector {
            io,
            client: Client::builder(TokioExecutor::new()).build(https),
            headers: Arc::new(s.headers.clone()),
            timeout: s.timeout,
            failing: Arc::new(AtomicBool::new(false)),
        })
    }
}

#[async_trait::async_trait]
impl HttpClient for Collector {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (client, headers, timeout) = (self.client.clone(), self.headers.clone(), self.timeout);
        let endpoint = request.uri().to_string();
        let job = self.io.spawn(async move {
            let mut request = request.map(Full::new);
            for (k, v) in headers.iter() {
                request.headers_mut().insert(k.clone(), v.clone());
            }
            let exchange = async {
                let resp = client.request(request).await?;
                let (parts, body) = resp.into_parts();
                let body = body.collect().await?.to_bytes();
                Ok::<_, HttpError>(Response::from_parts(parts, body))
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {timeout:?}").into()),
            }
        });
        let result = match job.await {
            Ok(r) => r,
            Err(e) => Err(Box::new(e) as HttpError),
        };
        let failed = match &result {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("status {}", r.status())),
            Err(e) => Some(e.to_string()),
        };
        match failed {
            Some(error) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%endpoint, %error, "OTLP span export failed; spans are dropped until the collector answers");
                }
            }
            None => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(%endpoint, "OTLP span export works again");
                }
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Result<String, String> {
        Ok(s.to_string())
    }

    fn raw(otlp: &str) -> RawTracing {
        RawTracing {
            otlp: otlp.into(),
            service_name: "keygate".into(),
            sample_ratio: 1.0,
            headers: Default::default(),
            timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn endpoint_is_the_base_url_and_v1_traces() {
        for (base, want) in [
            ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
            ("https://otel.example/", "https://otel.example/v1/traces"),
            ("http://c:4318/prefix", "http://c:4318/prefix/v1/traces"),
        ] {
            let s = Settings::compile(&raw(base), &ok).expect("valid");
            assert_eq!(s.endpoint, want);
        }
    }

    #[test]
    fn each_bad_value_is_one_problem() {
        for bad in [
            "grpc://c:4317",
            "127.0.0.1:4318",
            "http://",
            "http://u:p@c:4318",
            "http://c/?x=1",
            "",
        ] {
            let e = Settings::compile(&raw(bad), &ok).expect_err(bad);
            assert_eq!(e.len(), 1, "{bad}: {e:?}");
            assert_eq!(e[0].0, "tracing.otlp");
        }
        let mut r = raw("http://c:4318");
        r.sample_ratio = 1.5;
        r.service_name = " ".into();
        r.headers.insert("bad name".into(), "v".into());
        r.headers.insert("x-ok".into(), "line\nbreak".into());
        r.timeout = Duration::from_secs(600);
        let e = Settings::compile(&r, &ok).expect_err("bad");
        let fields: Vec<&str> = e.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "tracing.service_name",
                "tracing.sample_ratio",
                "tracing.timeout",
                "tracing.headers (bad name)",
                "tracing.headers (x-ok)"
            ]
        );
    }

    #[test]
    fn same_settings_share_one_exporter() {
        let tracers = Tracers::default();
        let a = tracers
            .compile(Some(&raw("http://c:4318")), &ok)
            .expect("ok");
        let b = tracers
            .compile(Some(&raw("http://c:4318/")), &ok)
            .expect("ok");
        let c = tracers
            .compile(Some(&raw("http://d:4318")), &ok)
            .expect("ok");
        let (a, b, c) = (a.expect("on"), b.expect("on"), c.expect("on"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(tracers.compile(None, &ok).expect("ok").is_none());
        // Not started by compiling.
        assert!(a.pipeline.get().is_none());
    }
}
