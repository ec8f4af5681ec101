//! Step 4c: a signed request is taken once, in this process or, in cluster
//! mode, across the cluster (src/auth/replay.rs, src/cluster/).

use super::Ctx;
use crate::auth::dispatch::Replayable;
use crate::reject::Reject;

impl Ctx {
    /// Step 4c: remembers the request's token; a token seen before is refused.
    pub(super) async fn check_replay(&self, r: &Replayable) -> Result<(), Reject> {
        let cluster = self.state.cluster.as_ref();
        self.state
            .replay
            .check(cluster, &r.key.id, &r.key.secret, &r.token)
            .await?;
        Ok(())
    }
}
