//! The request handler. [`Ctx::handle`] takes one request on one snapshot; its
//! pipeline (pipeline.rs) is a straight line of steps, each a small function
//! in the file of its concern:
//!
//! | step | file |
//! |---|---|
//! | route (action groups: action.rs), front protocol, inputs | route.rs |
//! | CORS preflight, IP control | admission.rs |
//! | authentication and identity, usage plan, access list | identity.rs (bodies buffered for a signature: buffer.rs) |
//! | replay check | replay.rs |
//! | limits, concurrency | limits.rs |
//! | forward to the back end, or the mock's answer | forward.rs |
//! | decorate the answer, write a refusal | decorate.rs |
//! | metrics and the access log | record.rs |
//!
//! Any refusal is a `Reject`, written in the API's error style by one function.
//! The handler takes any body of bytes ([`RequestBody`]): hyper's `Incoming`
//! from the listeners, `Full<Bytes>` in the in-process tests and benches.

mod action;
mod admission;
mod buffer;
mod decorate;
mod forward;
mod identity;
mod limits;
mod pipeline;
mod record;
mod replay;
mod route;

pub use forward::{APP_HEADER, KEY_ID_HEADER, PLAN_HEADER};

use crate::body::{Body, RequestBody};
use crate::gateway::Gateway;
use crate::header_list::HeaderList;
use crate::state::State;
use arc_swap::ArcSwap;
use http::header::HeaderName;
use http::{Request, Response};
use identity::Identity;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub struct Ctx {
    pub live: Arc<ArcSwap<Gateway>>,
    pub state: Arc<State>,
}

#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// What the access log, the metrics and the decoration of the answer need to
/// know about a request, filled in as the pipeline goes.
#[derive(Default)]
struct Outcome {
    api: Option<usize>,
    /// The caller, once authenticated.
    identity: Option<Identity>,
    client_ip: Option<IpAddr>,
    upstream_status: Option<u16>,
    /// From sending the request to the back end to its response head.
    upstream_latency: Option<Duration>,
    /// The answer is the back end's (or the mock's): the API's response rules
    /// apply to it.
    forwarded: bool,
    /// A CORS preflight answer: final, not decorated again.
    preflight: bool,
    /// Headers added to the response whatever it is (rate-limit headers).
    extra: HeaderList,
    /// The metrics reason of a refusal that is not counted by its `Reject`'s:
    /// an external authorization service's refusal or failure is `auth`.
    refused: Option<&'static str>,
}

/// A step's result when it may answer the request itself (a redirect, an
/// external authorization service's answer) instead of passing it on.
enum Flow<T> {
    Next(T),
    Answer(Response<Body>),
}

impl Ctx {
    /// A handler on `gw`, e.g. compiled from a config text; the listeners build
    /// theirs around the live snapshot.
    pub fn new(gw: Gateway, state: Arc<State>) -> Ctx {
        Ctx {
            live: Arc::new(ArcSwap::from_pointee(gw)),
            state,
        }
    }

    pub async fn handle<B: RequestBody>(
        &self,
        mut req: Request<B>,
        conn: ConnInfo,
    ) -> Response<Body> {
        let start = Instant::now();
        let gw = self.live.load_full();
        let span = crate::trace::span::begin(gw.tracing.as_deref(), &mut req, conn.tls);
        let request_id = record::request_id(req.headers());
        let seen = record::Seen::of(&gw, &req);
        let origin = crate::policy::cors::single_origin(req.headers()).cloned();
        let mut out = Outcome::default();
        let (mut resp, refusal) = match self.pipeline(&gw, req, conn, &request_id, &mut out).await {
            Ok(r) => (r, None),
            Err(reject) => {
                let resp = decorate::refusal(&gw, out.api, &reject, &request_id);
                (resp, Some(record::Refusal::of(&reject)))
            }
        };
        let extra = std::mem::take(&mut out.extra);
        decorate::answer(&gw, &out, extra, origin.as_ref(), &request_id, &mut resp);
        let done = record::Done {
            conn,
            request_id: &request_id,
            latency: start.elapsed(),
            refusal,
            span,
        };
        record::record(&self.state, &gw, &out, seen, done, resp)
    }
}
