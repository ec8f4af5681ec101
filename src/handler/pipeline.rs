//! The pipeline of one request, in order. Each step is a small function in the
//! file of its concern; this one only strings them together.

use super::forward::{self, ForwardHead};
use super::identity::{self, auth_refusal};
use super::{admission, limits, route, ConnInfo, Ctx, Flow, Outcome};
use crate::body::{Body, RequestBody};
use crate::gateway::{Backend, Gateway};
use crate::policy::ip::client_ip;
use crate::policy::limits::LimitRequest;
use crate::reject::Reject;
use http::{Request, Response};
use std::time::Instant;

impl Ctx {
    pub(super) async fn pipeline<B: RequestBody>(
        &self,
        gw: &Gateway,
        req: Request<B>,
        conn: ConnInfo,
        request_id: &str,
        out: &mut Outcome,
    ) -> Result<Response<Body>, Reject> {
        let (mut parts, body) = req.into_parts();

        // 1. Route, on the one authority and the one canonical path; `parts.uri`
        //    stays the client's for the signature schemes.
        let budget = &self.state.body_budget;
        let (routed, body) = match route::route(gw, &mut parts, body, conn, budget, out).await? {
            Flow::Next(r) => r,
            Flow::Answer(r) => return Ok(r),
        };
        let api = &gw.apis[routed.api];

        // 2. CORS preflight: answered here, before auth, never forwarded.
        if let Some(r) = admission::preflight(api, &parts, out) {
            return Ok(r);
        }

        // 3. IP control.
        let ip = client_ip(conn.peer.ip(), &parts.headers, &gw.trusted);
        out.client_ip = Some(ip);
        admission::check_ip(api, ip)?;

        // 4. Authentication.
        //    4a. An external authorization service is asked first
        //    (src/auth/external.rs); the body is never sent to it.
        let admitted = match identity::ask_external(api, &mut parts, &routed, ip, out).await? {
            Flow::Next(a) => a,
            Flow::Answer(r) => return Ok(r),
        };
        //    4b. The API's scheme (src/auth/dispatch.rs), which may read the
        //    body; the external service's caller, when it named one.
        let (caller, body) = self
            .authenticate(gw, api, &parts, body, routed.declared_len, &mut out.extra)
            .await
            .map_err(|r| auth_refusal(api, r))?;
        let caller =
            identity::or_admitted(gw, caller, admitted).map_err(|r| auth_refusal(api, r))?;
        //    4c. Replay: a signed request is taken once.
        if let Some(r) = caller.as_ref().and_then(|c| c.replay.as_ref()) {
            self.check_replay(r)
                .await
                .map_err(|r| auth_refusal(api, r))?;
        }
        //    4d, 4e. The usage plan, then the API's access list.
        out.identity = identity::with_plan(api, caller).map_err(|r| auth_refusal(api, r))?;
        let who = out.identity.as_ref();
        identity::check_acl(api, who).map_err(|r| auth_refusal(api, r))?;

        // 5. Limits: usage plan QPS and quota, service, API, traffic plugins.
        let req = LimitRequest {
            key_id: who.map(|i| i.key_id.as_str()),
            app: who.map(|i| i.app.as_str()),
            plan: who.and_then(|i| i.plan.as_deref()),
            client_ip: ip,
            method: &parts.method,
            path: routed.limit_path(&parts.uri),
            headers: &parts.headers,
            query: parts.uri.query(),
        };
        self.check_limits(api, &req, &mut out.extra).await?;
        //    5b. Concurrency: the permit is held until the response body ends.
        let permit = limits::acquire(api, who.map(|i| i.app.as_str()), ip)?;

        // 6. Forward (or the mock back end's answer).
        let mut resp = match &api.backend {
            Backend::Mock(m) => forward::mock_response(m),
            Backend::Http(b) => {
                let head = ForwardHead {
                    gw,
                    api,
                    backend: b,
                    conn,
                    client_ip: ip,
                    request_id,
                    identity: who,
                };
                head.prepare(&mut parts, routed.backend_path)?;
                let sent = Instant::now();
                routed.inputs.apply(&mut parts.uri, &mut parts.headers)?;
                let resp = forward::send(api, b, parts, body).await?;
                out.upstream_latency = Some(sent.elapsed());
                out.upstream_status = Some(resp.status().as_u16());
                resp
            }
        };
        out.forwarded = true;
        if let Some(p) = permit {
            resp = resp.map(|b| p.hold(b));
        }

        // 7. Decoration, of this answer and of refusals alike: `Ctx::handle`
        //    (decorate.rs).
        Ok(resp)
    }
}
