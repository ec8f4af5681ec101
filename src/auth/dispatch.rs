//! Which scheme an API authenticates with, and the one place that calls the
//! schemes: how much body a scheme may buffer, the verification itself, the
//! caller it names, and the credentials stripped before forwarding. The handler
//! asks `AuthMode` and never names a scheme, so a new scheme is a file in this
//! folder, a variant here and its name in the config compiler.

use super::external::{Admitted, ExternalAuth};
use super::hmac::HmacSettings;
use super::jwt::JwtProvider;
use super::key::{KeyIndex, KeySource};
use super::replay::{ReplayMode, ReplayToken};
use super::tc1::Tc1Settings;
use super::tc3::Tc3Settings;
use super::{AuthError, Key, Keys, RequestParts, Verified};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Method;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// An API's `auth` setting, compiled.
pub enum AuthMode {
    None,
    /// `settings`: this API's `[auth.hmac]` when it overrides `enforce_headers`.
    Hmac {
        settings: Option<Arc<HmacSettings>>,
    },
    Tc3 {
        service: Option<String>,
        require_signed_payload: bool,
    },
    Tc1,
    Jwt(Arc<JwtProvider>),
    OpenApi,
    /// A plain API key read from this header / query parameter.
    Key(Arc<KeySource>),
    /// An external authorization service decides (`[services.apis.external_auth]`).
    External(Arc<ExternalAuth>),
}

/// The `[auth]` section, compiled: what every API's scheme shares.
pub struct AuthSettings {
    pub replay: ReplayMode,
    pub strip_credentials: bool,
    pub hmac: HmacSettings,
    pub tc3: Tc3Settings,
    pub tc1: Tc1Settings,
    pub jwt_leeway: Duration,
    /// SHA-256(secret) -> key, for `auth = "key"`.
    pub key_index: KeyIndex,
}

/// The caller a scheme (or the external service) named.
pub struct Caller {
    pub key_id: String,
    /// Flow-control "application".
    pub app: String,
    /// Headers the scheme adds to the forwarded request (JWT `claims_to_headers`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The signed request, when `[auth] replay` checks its kind of token.
    pub replay: Option<Replayable>,
}

/// A signed request the replay cache must not see twice: its token, kept under
/// its key (the cluster store keys it with the secret too).
pub struct Replayable {
    pub key: Arc<Key>,
    pub token: ReplayToken,
}

impl Caller {
    fn signed(v: Verified, mode: ReplayMode) -> Caller {
        let Verified { key, replay } = v;
        Caller {
            key_id: key.id.clone(),
            app: key.app.clone(),
            headers: vec![],
            replay: replay
                .filter(|r| mode.checks(r.kind))
                .map(|token| Replayable { key, token }),
        }
    }

    /// The caller an external authorization service named: a key id must name an
    /// enabled key (401 otherwise); an app alone identifies the caller as that app.
    pub fn admitted(keys: &Keys, a: Admitted) -> Result<Option<Caller>, AuthError> {
        let (key_id, app) = match (a.key_id, a.app) {
            (None, None) => return Ok(None),
            (Some(id), app) => {
                let k = super::lookup_key(keys, &id)?;
                (k.id.clone(), app.unwrap_or_else(|| k.app.clone()))
            }
            (None, Some(app)) => (app.clone(), app),
        };
        Ok(Some(Caller {
            key_id,
            app,
            headers: vec![],
            replay: None,
        }))
    }
}

impl AuthMode {
    pub fn name(&self) -> &'static str {
        match self {
            AuthMode::None => "none",
            AuthMode::Hmac { .. } => "hmac",
            AuthMode::Tc3 { .. } => "tc3",
            AuthMode::Tc1 => "tc1",
            AuthMode::Jwt(_) => "jwt",
            AuthMode::OpenApi => "openapi",
            AuthMode::Key(_) => "key",
            AuthMode::External(_) => "external",
        }
    }

    /// The most body bytes the scheme may buffer to hash them for this request
    /// (`max_body`: the API's limit); `None` when it never reads the body.
    pub fn body_limit(&self, method: &Method, headers: &HeaderMap, max_body: u64) -> Option<usize> {
        match self {
            AuthMode::Hmac { .. } => super::hmac::needs_body(headers).then_some(max_body as usize),
            AuthMode::Tc3 { .. } => super::tc3::body_limit(method, headers),
            AuthMode::Tc1 => super::tc1::body_limit(method),
            AuthMode::OpenApi => super::openapi::body_limit(method),
            AuthMode::None | AuthMode::Jwt(_) | AuthMode::Key(_) | AuthMode::External(_) => None,
        }
    }

    /// Waits until the scheme can verify: a JWT provider's first key fetch
    /// (bounded by its timeout). Other schemes are always ready.
    pub async fn ready(&self) {
        if let AuthMode::Jwt(p) = self {
            p.ready().await;
        }
    }

    /// Verifies `rp` and names the caller. `Ok(None)`: nobody is authenticated
    /// here (`none`, or `external`, whose service decided before). A signature
    /// scheme answers `NeedBody` when the head passed and only the body is left
    /// to check: verify again with `rp.body` set.
    pub fn verify(
        &self,
        s: &AuthSettings,
        keys: &Keys,
        rp: &RequestParts<'_>,
        now: SystemTime,
    ) -> Result<Option<Caller>, AuthError> {
        let verified = match self {
            AuthMode::None | AuthMode::External(_) => return Ok(None),
            AuthMode::Jwt(p) => return jwt_caller(p, s, keys, rp, now).map(Some),
            AuthMode::Hmac { settings } => {
                let hs = settings.as_deref().unwrap_or(&s.hmac);
                super::hmac::verify(hs, rp, keys, now)
            }
            AuthMode::Tc3 {
                service,
                require_signed_payload,
            } => super::tc3::verify(
                &s.tc3,
                service.as_deref(),
                *require_signed_payload,
                rp,
                keys,
                now,
            ),
            AuthMode::Tc1 => super::tc1::verify(&s.tc1, rp, keys, now),
            AuthMode::OpenApi => super::openapi::verify(rp, keys),
            AuthMode::Key(source) => super::key::verify(source, &s.key_index, rp),
        }?;
        Ok(Some(Caller::signed(verified, s.replay)))
    }

    /// The query without the credential parameter this scheme reads.
    pub fn strip_query<'q>(&self, query: &'q str) -> Cow<'q, str> {
        let name = match self {
            AuthMode::Key(k) => k.query.as_deref(),
            AuthMode::Jwt(p) => p.token_query(),
            _ => None,
        };
        match name {
            Some(name) => super::key::strip_query(query, name),
            None => Cow::Borrowed(query),
        }
    }

    /// Removes the credential headers this scheme reads (and any
    /// `Authorization`, on an API that authenticates at all).
    pub fn strip_headers(&self, h: &mut HeaderMap) {
        if matches!(self, AuthMode::None) {
            return;
        }
        h.remove(header::AUTHORIZATION);
        h.remove(header::PROXY_AUTHORIZATION);
        match self {
            AuthMode::Key(k) => {
                h.remove(&k.header);
            }
            AuthMode::Jwt(p) => {
                if let Some(c) = p.token_cookie() {
                    super::jwt::strip_cookie(h, c);
                }
            }
            _ => {}
        }
    }
}

/// A JWT's subject: a configured key when one has that id (refused when
/// disabled), else a caller of its own, its app named after it.
fn jwt_caller(
    p: &JwtProvider,
    s: &AuthSettings,
    keys: &Keys,
    rp: &RequestParts<'_>,
    now: SystemTime,
) -> Result<Caller, AuthError> {
    let id = p.verify_request(rp.headers, rp.uri.query(), s.jwt_leeway, now)?;
    let (key_id, app) = match keys.get(&id.subject) {
        Some(k) if !k.enabled => return Err(AuthError::DisabledKey),
        Some(k) => (k.id.clone(), k.app.clone()),
        None => (id.subject.clone(), id.subject),
    };
    Ok(Caller {
        key_id,
        app,
        headers: id.headers,
        replay: None,
    })
}
