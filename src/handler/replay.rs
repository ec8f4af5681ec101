//! Step 4c: a signed request is taken once, in this process or, in cluster
//! mode, across the cluster (src/auth/replay.rs, src/cluster/).

use super::Ctx;
use crate::auth::dispatch::Replayable;
use crate::reject::Reject;
use std::time::Instant;

impl Ctx {
    /// Step 4c: remembers the request's token; a token seen before is refused.
    pub(super) async fn check_replay(&self, r: &Replayable) -> Result<(), Reject> {
        let (key, t, replay) = (&r.key, &r.token, &self.state.replay);
        match &self.state.cluster {
            None => replay.check_and_insert(&key.id, &t.token, t.ttl, Instant::now())?,
            Some(c) => {
                c.check_replay(replay, &key.id, &key.secret, &t.token, t.ttl)
                    .await?
            }
        }
        Ok(())
    }
}
