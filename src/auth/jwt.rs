//! `jwt` authentication (SPEC §3.4): `Authorization: Bearer <jwt>` (or the
//! documented `Bearer id_token="<jwt>"`), else the `token_cookie` cookie, else
//! the `token_query` parameter; verified against a configured JWK, JWKS file,
//! PEM public key or a JWKS fetched from `jwks_url` (see `super::jwks`).
//!
//! `jsonwebtoken` loads the keys (`DecodingKey::from_jwk`, `from_*_pem`) and
//! decodes tokens (`decode` with one `Validation` per key: signature, the key's
//! algorithm and family, base64url and JSON). What stays ours:
//! - The algorithm of every key is pinned when it is loaded (`keys`): a JWK's
//!   declared `alg`, else for RSA keys the provider's `algorithm` (default
//!   RS256), EC P-256 → ES256, P-384 → ES384, Ed25519 → EdDSA. A token is only
//!   checked against keys pinned to its own `alg`: `none`, `HS*` and algorithm
//!   confusion (an RSA public key used as an HMAC secret) cannot happen.
//! - Tokens with a `crit` header are refused (`token`). Tokens over 16 KiB are
//!   refused before any parsing.
//! - Key choice: a token with a `kid` is checked against the keys with that `kid`
//!   (or, failing those, keys that have no `kid`); a token without `kid` is tried
//!   against every key of its algorithm.
//! - In a JWKS, keys this module cannot use (other key types or curves, `use`
//!   other than `sig`, an `alg` that does not suit the key) are skipped; malformed
//!   keys are config errors, and so is a set without one usable key. A fetched
//!   set that fails to parse is logged and the last good set kept.
//! - RSA keys must have 2048 to 8192 bit moduli (checked when a JWK is loaded;
//!   the verifier refuses other PEM keys).
//! - The claims (`claims`): `exp`/`nbf` against the request's clock with the
//!   leeway, fractional values compared exactly; `max_lifetime`,
//!   `required_claims`, issuer and audiences; the subject and
//!   `claims_to_headers`. Callers should remove client-sent copies of those
//!   headers ([`JwtProvider::header_names`]) before adding the verified ones.

use super::AuthError;
use crate::config::raw::{RawJwtProvider, RsaAlgorithm};
use arc_swap::ArcSwap;
use claims::{ClaimRules, Claims};
use http::{HeaderMap, HeaderName, HeaderValue};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::Algorithm;
use keys::{candidates, parse_jwk, parse_jwks, parse_pem, ProviderKey};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use token::{bearer_token, checked_len, cookie, invalid, TokenHeader};

mod claims;
mod keys;
mod token;

pub use keys::JwksCache;
pub use token::strip_cookie;

/// The verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtIdentity {
    /// Value of the provider's `key_claim` (default `sub`).
    pub subject: String,
    /// `claims_to_headers` results, ready to add to the upstream request.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

type KeySet = ArcSwap<Vec<ProviderKey>>;

/// A compiled `[[jwt_providers]]` entry.
pub struct JwtProvider {
    name: String,
    /// Swapped whole by the `jwks_url` refresher.
    keys: Arc<KeySet>,
    remote: Option<Arc<Remote>>,
    claims: ClaimRules,
    token_cookie: Option<String>,
    token_query: Option<String>,
}

/// A `jwks_url` and its refresh settings.
struct Remote {
    url: http::Uri,
    refresh: Duration,
    timeout: Duration,
    algorithm: Option<Algorithm>,
    /// Where each fetched set is remembered for the next snapshot.
    cache: JwksCache,
    /// `true` once the first fetch has ended (well or not).
    tried: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for JwtProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtProvider")
            .field("name", &self.name)
            .field("keys", &self.keys.load().len())
            .field("jwks_url", &self.remote.as_ref().map(|r| r.url.to_string()))
            .field("claims", &self.claims)
            .finish()
    }
}

impl JwtProvider {
    /// Compiles a provider on its own: a `jwks_url` starts without keys and its
    /// sets are remembered nowhere else. See [`Self::from_raw_in`].
    pub fn from_raw(raw: &RawJwtProvider, base_dir: &Path) -> Result<JwtProvider, String> {
        JwtProvider::from_raw_in(raw, base_dir, &JwksCache::default())
    }

    /// Compiles a provider; files are read relative to `base_dir` (the config's
    /// directory). A `jwks_url` provider starts from the set `cache` last holds
    /// for it (a reload keeps the keys of the previous snapshot) and records
    /// every set it fetches there.
    pub fn from_raw_in(
        raw: &RawJwtProvider,
        base_dir: &Path,
        cache: &JwksCache,
    ) -> Result<JwtProvider, String> {
        let ctx = |e: String| format!("jwt provider {:?}: {e}", raw.name);
        let sources = [&raw.jwk, &raw.jwks_file, &raw.pem_file, &raw.jwks_url];
        if sources.iter().filter(|s| s.is_some()).count() != 1 {
            return Err(ctx(
                "give exactly one of jwk, jwks_file, pem_file, jwks_url".into(),
            ));
        }
        // A wrong `algorithm` is reported by the config compiler (which then
        // refuses the file); the default pin stands in meanwhile.
        let algorithm = raw.algorithm.as_ref().and_then(|a| a.get()).map(pinned);
        let (keys, remote) = load_keys(raw, base_dir, algorithm, cache)?;
        if (raw.jwks_refresh.is_some() || raw.jwks_timeout.is_some()) && remote.is_none() {
            return Err(ctx("jwks_refresh and jwks_timeout need jwks_url".into()));
        }
        for (what, name) in [
            ("token_cookie", &raw.token_cookie),
            ("token_query", &raw.token_query),
        ] {
            if let Some(n) = name {
                if n.is_empty()
                    || !n
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && !b"=;,&#\"".contains(&b))
                {
                    return Err(ctx(format!(
                        "{what} {n:?} is not a cookie / parameter name"
                    )));
                }
            }
        }
        let provider = JwtProvider {
            name: raw.name.clone(),
            keys: Arc::new(ArcSwap::from_pointee(keys)),
            remote,
            claims: ClaimRules::from_raw(raw).map_err(ctx)?,
            token_cookie: raw.token_cookie.clone(),
            token_query: raw.token_query.clone(),
        };
        provider.start_refresh();
        Ok(provider)
    }

    /// With `jwks_url` and inside a runtime (not `keygate check`): fetch the set
    /// now and every `jwks_refresh`, for as long as this provider lives.
    fn start_refresh(&self) {
        let (Some(remote), Ok(rt)) = (&self.remote, tokio::runtime::Handle::try_current()) else {
            return;
        };
        let keys = Arc::downgrade(&self.keys);
        let remote = remote.clone();
        let name = self.name.clone();
        rt.spawn(async move {
            loop {
                let got = super::jwks::fetch(&remote.url, remote.timeout)
                    .await
                    .and_then(|t| parse_jwks(&t, remote.algorithm));
                let Some(set) = keys.upgrade() else { return };
                match got {
                    Ok(k) => {
                        remote.cache.remember(&remote.url, remote.algorithm, &k);
                        set.store(Arc::new(k));
                    }
                    Err(e) => tracing::warn!(
                        provider = %name,
                        url = %remote.url,
                        error = %e,
                        "JWKS fetch failed; keeping the last good key set"
                    ),
                }
                drop(set);
                remote.tried.send_replace(true);
                tokio::time::sleep(remote.refresh).await;
            }
        });
    }

    /// Waits (at most `jwks_timeout`) for the first JWKS fetch of a
    /// `jwks_url` provider; returns at once otherwise.
    pub async fn ready(&self) {
        let Some(remote) = &self.remote else { return };
        let mut rx = remote.tried.subscribe();
        let _ = tokio::time::timeout(remote.timeout, rx.wait_for(|tried| *tried)).await;
    }

    /// The cookie / query parameter that may carry the token, to strip them.
    pub fn token_cookie(&self) -> Option<&str> {
        self.token_cookie.as_deref()
    }
    pub fn token_query(&self) -> Option<&str> {
        self.token_query.as_deref()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether a token without `exp` is refused (default: yes).
    pub fn set_require_exp(&mut self, require: bool) {
        self.claims.require_exp = require;
    }

    /// Upstream headers this provider fills from claims.
    pub fn header_names(&self) -> impl Iterator<Item = &HeaderName> {
        self.claims.header_names()
    }

    /// Verifies the bearer token of a request at time `now`.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        leeway: Duration,
        now: SystemTime,
    ) -> Result<JwtIdentity, AuthError> {
        self.verify_request(headers, None, leeway, now)
    }

    /// Like [`Self::verify`], also reading `token_cookie` and `token_query`
    /// (from `query`) when there is no `Authorization: Bearer`.
    pub fn verify_request(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        leeway: Duration,
        now: SystemTime,
    ) -> Result<JwtIdentity, AuthError> {
        let token = self.token(headers, query)?;
        let claims = self.verified_claims(&token)?;
        self.claims.check(&claims, leeway, now)?;
        Ok(JwtIdentity {
            subject: self.claims.subject(&claims)?,
            headers: self.claims.headers(&claims),
        })
    }

    /// The token: `Authorization: Bearer`, else the cookie, else the query parameter.
    fn token<'a>(
        &self,
        headers: &'a HeaderMap,
        query: Option<&str>,
    ) -> Result<std::borrow::Cow<'a, str>, AuthError> {
        let missing = match bearer_token(headers) {
            Ok(t) => return Ok(t.into()),
            Err(AuthError::Missing(m)) => m,
            Err(e) => return Err(e),
        };
        if let Some(name) = &self.token_cookie {
            if let Some(t) = cookie(headers, name)? {
                return checked_len(t).map(Into::into);
            }
        }
        if let (Some(name), Some(q)) = (&self.token_query, query) {
            let mut found = None;
            for (k, v) in super::form_pairs(q.as_bytes()) {
                if k == name.as_bytes() {
                    if found.is_some() {
                        return Err(invalid(format!("several {name} query parameters")));
                    }
                    found = Some(v);
                }
            }
            if let Some(v) = found {
                let t = String::from_utf8(v).map_err(|_| invalid("token is not text"))?;
                checked_len(&t)?;
                return Ok(t.into());
            }
        }
        let mut also = String::new();
        if let Some(c) = &self.token_cookie {
            also.push_str(&format!(", no {c} cookie"));
        }
        if let Some(q) = &self.token_query {
            also.push_str(&format!(", no {q} query parameter"));
        }
        Err(AuthError::Missing(format!("{missing}{also}")))
    }

    /// Checks the header, picks the keys and lets the crate verify the
    /// signature with each; returns the claims object.
    fn verified_claims(&self, token: &str) -> Result<Claims, AuthError> {
        let header = TokenHeader::parse(token)?;
        let keys = self.keys.load();
        if keys.is_empty() {
            return Err(invalid(
                "the provider's signing keys are not loaded (JWKS unavailable)",
            ));
        }
        for key in candidates(&keys, header.kid.as_deref(), header.alg)? {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &key.validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => {}
                Err(e) => return Err(invalid(decode_error(e.kind()))),
            }
        }
        Err(invalid("bad signature"))
    }
}

/// Why the crate refused a token other than its signature not matching.
fn decode_error(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => "payload is not a JSON object".into(),
        ErrorKind::Base64(_) => "malformed signature or payload (not base64url)".into(),
        ErrorKind::InvalidAlgorithm => "the key does not suit the token's algorithm".into(),
        other => format!("malformed signature ({other:?})"),
    }
}

/// A provider's `algorithm`: one of the RSA family's (it pins PEM and JWK RSA
/// keys that declare none).
/// The algorithm an RSA key without `alg` is pinned to.
fn pinned(a: RsaAlgorithm) -> Algorithm {
    match a {
        RsaAlgorithm::RS256 => Algorithm::RS256,
        RsaAlgorithm::RS384 => Algorithm::RS384,
        RsaAlgorithm::RS512 => Algorithm::RS512,
        RsaAlgorithm::PS256 => Algorithm::PS256,
        RsaAlgorithm::PS384 => Algorithm::PS384,
        RsaAlgorithm::PS512 => Algorithm::PS512,
    }
}

/// The keys of `raw`'s one source, and for a `jwks_url` its refresh settings.
fn load_keys(
    raw: &RawJwtProvider,
    base_dir: &Path,
    algorithm: Option<Algorithm>,
    cache: &JwksCache,
) -> Result<(Vec<ProviderKey>, Option<Arc<Remote>>), String> {
    let ctx = |e: String| format!("jwt provider {:?}: {e}", raw.name);
    if let Some(jwk) = &raw.jwk {
        let v: Value =
            serde_json::from_str(jwk).map_err(|e| ctx(format!("jwk is not JSON: {e}")))?;
        return match parse_jwk(&v, algorithm) {
            Ok(k) => Ok((vec![k], None)),
            Err(keys::JwkError::Unsupported(e) | keys::JwkError::Invalid(e)) => Err(ctx(e)),
        };
    }
    if let Some(file) = &raw.jwks_file {
        let text = read(base_dir, file).map_err(ctx)?;
        let keys =
            parse_jwks(&text, algorithm).map_err(|e| ctx(format!("jwks_file {file:?}: {e}")))?;
        return Ok((keys, None));
    }
    if let Some(file) = &raw.pem_file {
        let text = read(base_dir, file).map_err(ctx)?;
        let key =
            parse_pem(&text, algorithm).map_err(|e| ctx(format!("pem_file {file:?}: {e}")))?;
        return Ok((vec![key], None));
    }
    let Some(url) = &raw.jwks_url else {
        return Ok((Vec::new(), None));
    };
    let url = super::jwks::check_url(url).map_err(ctx)?;
    let refresh = raw.jwks_refresh.unwrap_or(Duration::from_secs(300));
    let timeout = raw.jwks_timeout.unwrap_or(Duration::from_secs(5));
    if refresh < Duration::from_secs(1) {
        return Err(ctx("jwks_refresh must be at least 1s".into()));
    }
    if timeout.is_zero() || timeout > Duration::from_secs(30) {
        return Err(ctx("jwks_timeout must be between 1ms and 30s".into()));
    }
    // A reload starts from the set the previous snapshot last fetched.
    let cached = cache.last_good(&url, algorithm);
    let remote = Remote {
        url,
        refresh,
        timeout,
        algorithm,
        cache: cache.clone(),
        tried: tokio::sync::watch::Sender::new(cached.is_some()),
    };
    Ok((cached.unwrap_or_default(), Some(Arc::new(remote))))
}

fn read(base_dir: &Path, file: &str) -> Result<String, String> {
    let path = base_dir.join(file);
    std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

#[cfg(test)]
mod tests;
