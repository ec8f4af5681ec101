//! Step 5: the API's limits for this caller (src/policy/limits.rs; in cluster
//! mode through the shared store), then its concurrency control.

use super::Ctx;
use crate::gateway::Api;
use crate::header_list::HeaderList;
use crate::policy::concurrency::Permit;
use crate::policy::limits::exec::Executor;
use crate::policy::limits::{LimitRequest, PolicyKind, Timestamp};
use crate::reject::Reject;
use std::net::IpAddr;

impl Ctx {
    /// Step 5: usage plan QPS and quota, service, API, traffic plugins,
    /// decided at once. Their headers go into `extra`, passed or refused.
    pub(super) async fn check_limits(
        &self,
        api: &Api,
        req: &LimitRequest<'_>,
        extra: &mut HeaderList,
    ) -> Result<(), Reject> {
        if api.limits.is_empty() {
            return Ok(());
        }
        let report = Executor::new(self.state.cluster.as_ref())
            .check(&api.limits, req, Timestamp::now())
            .await?;
        report.write_headers(extra);
        if !report.refused {
            return Ok(());
        }
        let reject = Reject::RateLimited {
            message: report.message(),
            quota: report.is_quota(),
        };
        Err(match (&api.refusals.traffic, report.policy()) {
            (Some(r), Some(p)) if is_plugin_limit(p.kind) => r.apply(reject),
            _ => reject,
        })
    }
}

/// Step 5b: a permit of the API's `concurrency_control` plugin, held until the
/// response body ends.
pub(super) fn acquire(api: &Api, app: Option<&str>, ip: IpAddr) -> Result<Option<Permit>, Reject> {
    let Some(c) = &api.concurrency else {
        return Ok(None);
    };
    c.acquire(app, ip)
        .map(Some)
        .map_err(|o| match o.unavailable {
            true => Reject::Overloaded(o.message),
            false => Reject::RateLimited {
                message: o.message,
                quota: false,
            },
        })
}

/// A refusal by a traffic-control plugin (rather than a plan or a `qps`).
fn is_plugin_limit(kind: PolicyKind) -> bool {
    use PolicyKind as K;
    matches!(
        kind,
        K::TrafficApi | K::TrafficApp | K::TrafficIp | K::ParamDefault | K::ParamStrategy
    )
}
