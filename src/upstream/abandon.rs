//! The access line of a request whose client left before its back end answered.

use http::HeaderValue;

/// Armed while a request waits for its back end: if the client goes away
/// meanwhile (hyper drops the request's future: a reset h2 stream, a closed
/// connection), nothing else will log it, so the drop writes a `keygate::access`
/// line with status 499, nginx's "client closed request". No target is blamed.
pub struct AbandonGuard {
    request_id: Option<HeaderValue>,
    armed: bool,
}

impl AbandonGuard {
    pub fn new(request_id: Option<HeaderValue>) -> Self {
        AbandonGuard {
            request_id,
            armed: true,
        }
    }

    /// The request was answered (or refused): nothing to log on drop.
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        if self.armed {
            tracing::info!(
                target: "keygate::access",
                request_id = self
                    .request_id
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-"),
                status = 499u16,
                upstream_status = 0u16,
                "client went away before the back end answered",
            );
        }
    }
}
