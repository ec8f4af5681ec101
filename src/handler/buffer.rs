//! Request bodies read in full before they are forwarded: for a signature that
//! hashes them (identity.rs) or a v1 form that names its action (action.rs).
//! A read stays within its limit, the process-wide budget
//! (`[server] max_buffered_bytes`) and `[server] body_read_timeout`.

use crate::auth::AuthError;
use crate::body::{Body, LimitedBody, RequestBody};
use crate::budget::{BodyBudget, BodyBuffer, Held, HeldBody};
use crate::gateway::Api;
use crate::reject::Reject;
use bytes::Bytes;
use http_body_util::BodyExt;
use std::time::Duration;

/// The request body as authentication receives it.
pub(super) enum ReqBody<B> {
    /// Not read yet.
    Stream(B),
    /// Already read in full (a v1 POST routed by its `Action` parameter), with
    /// its room in the body budget.
    Buffered(Bytes, Held),
}

impl<B: RequestBody> ReqBody<B> {
    /// The body to forward as it is: streamed within the API's limit (counted
    /// into its `bytes_in`), or the bytes read already.
    pub fn forward(self, api: &Api) -> Body {
        match self {
            ReqBody::Stream(body) => {
                let route = api.metrics.clone();
                LimitedBody::new(body, api.max_body)
                    .counted(move |n| route.add_bytes_in(n))
                    .boxed_unsync()
            }
            ReqBody::Buffered(bytes, held) => HeldBody::new(bytes, held).boxed_unsync(),
        }
    }
}

/// [`read_limited`] within `timeout`.
pub(super) async fn read_in_time<B: RequestBody>(
    timeout: Duration,
    body: B,
    limit: usize,
    declared: Option<u64>,
    budget: &BodyBudget,
) -> Result<(Bytes, Held), Reject> {
    tokio::time::timeout(timeout, read_limited(body, limit, declared, budget))
        .await
        .map_err(|_| Reject::BodyTimeout(timeout))?
}

/// Buffers a body of at most `limit` bytes, taking room from `budget` first:
/// the declared length at once, else chunk by chunk. The reservation is
/// returned with the bytes and released when it is dropped.
async fn read_limited<B: RequestBody>(
    mut body: B,
    limit: usize,
    declared: Option<u64>,
    budget: &BodyBudget,
) -> Result<(Bytes, Held), Reject> {
    let mut held = budget.hold();
    if let Some(len) = declared {
        if !budget.reserve(&mut held, len) {
            return Err(AuthError::BufferBudget.into());
        }
    }
    let capacity = declared.map_or(limit, |l| l.min(limit as u64) as usize);
    let mut buf = BodyBuffer::new(capacity);
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|_| Reject::BadRequest("could not read the request body".into()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let total = buf.len() + data.len();
        if total > limit {
            return Err(AuthError::BodyTooLarge.into());
        }
        if !budget.reserve(&mut held, total as u64) {
            return Err(AuthError::BufferBudget.into());
        }
        if !buf.push(&data) {
            return Err(Reject::BadRequest(
                "request body longer than its Content-Length".into(),
            ));
        }
    }
    Ok((buf.freeze(), held))
}
