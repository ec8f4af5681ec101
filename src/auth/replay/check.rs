//! The replay check in one call for both modes (`ReplayCache::check`): this
//! instance's cache, or Redis in cluster mode with the cache as the `on_error =
//! local` fall-back. Kept apart from the cache itself, which the config's
//! `[auth] replay` parsing uses, so that the cache does not depend on the
//! cluster client.

use super::{ReplayCache, ReplayToken};
use crate::auth::AuthError;
use crate::cluster::{Cluster, OnError};
use crate::reject::Reject;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::time::Instant;

impl ReplayCache {
    /// The replay check of a verified request (SPEC §8): refuses `token` when
    /// `key_id` sent it before, inside its time to live. With a `cluster`, Redis
    /// decides (the key an HMAC by the key's `secret`, never the token itself);
    /// when it cannot answer, `on_error` does: this cache, admit, or 503.
    pub async fn check(
        &self,
        cluster: Option<&Cluster>,
        key_id: &str,
        secret: &str,
        token: &ReplayToken,
    ) -> Result<(), Reject> {
        let ttl = token.ttl;
        let Some(cluster) = cluster else {
            return Ok(self.check_and_insert(key_id, &token.token, ttl, Instant::now())?);
        };
        let key = format!("replay:{}", replay_digest(key_id, secret, &token.token));
        match cluster.insert_once(&key, ttl).await {
            Ok(true) => {
                // Mirrored so that the fall-back still knows it; the local answer
                // does not matter while Redis decides.
                let _ = self.check_and_insert(key_id, &token.token, ttl, Instant::now());
                Ok(())
            }
            Ok(false) => Err(AuthError::Replay.into()),
            Err(OnError::Local) => {
                Ok(self.check_and_insert(key_id, &token.token, ttl, Instant::now())?)
            }
            Err(OnError::Allow) => Ok(()),
            Err(OnError::Deny) => Err(Reject::ClusterUnavailable),
        }
    }
}

/// The replay key in a shared store: HMAC-SHA256 by the key's secret over the
/// key id and the token, so that Redis (and whoever reads it) never sees a
/// signature or a nonce, and all instances (same secret) derive the same key.
fn replay_digest(key_id: &str, secret: &str, token: &str) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC takes keys of any length; unreachable, but no panic on a request path.
        Err(_) => return hex::encode(Sha256::digest([key_id, "\0", token].concat())),
    };
    mac.update(&(key_id.len() as u64).to_be_bytes());
    mac.update(key_id.as_bytes());
    mac.update(token.as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn replay_keys_hide_the_token_and_separate_keys() {
        let a = replay_digest("k", "secret", "sig");
        assert_eq!(a.len(), 32);
        assert!(!a.contains("sig"));
        assert_eq!(a, replay_digest("k", "secret", "sig"));
        assert_ne!(a, replay_digest("ks", "secret", "ig"));
        assert_ne!(a, replay_digest("k", "other", "sig"));
    }

    #[tokio::test]
    async fn without_a_cluster_the_check_is_this_cache() {
        let c = ReplayCache::new(10);
        let tok = ReplayToken::nonce(b"n1", 10 * S);
        c.check(None, "k", "secret", &tok).await.unwrap();
        assert!(matches!(
            c.check(None, "k", "secret", &tok).await,
            Err(Reject::Auth(AuthError::Replay))
        ));
        c.check(None, "k2", "secret", &tok).await.unwrap();
    }
}
