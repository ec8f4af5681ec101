//! `[auth]` and its scheme tables, `[[keys]]` and `[[jwt_providers]]`.

use crate::auth::hmac::HmacSettings;
use crate::auth::jwt::JwtProvider;
use crate::auth::key::{KeyIndex, KeySource};
use crate::auth::tc1::Tc1Settings;
use crate::auth::tc3::Tc3Settings;
use crate::auth::{Key, Keys};
use crate::config::error::{err, ConfigError};
use crate::config::raw::{AuthKind, RawConfig, RawKey};
use crate::config::source::{expand_env, read_secret_file};
use crate::gateway::fingerprint;
use crate::reserved::ReservedHeaders;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

pub(super) struct Auth {
    /// `None` when the section has a problem (reported at `auth.<scheme>`).
    pub hmac: Option<HmacSettings>,
    pub tc3: Option<Tc3Settings>,
    pub tc1: Option<Tc1Settings>,
    pub keys: Keys,
    /// Fingerprints of the keys (over a hash of their secret), to log what a
    /// reload changed.
    pub key_prints: BTreeMap<String, u64>,
    pub jwt: HashMap<String, Arc<JwtProvider>>,
    pub key_index: KeyIndex,
    pub reserved: ReservedHeaders,
}

pub(super) fn compile(
    raw: &RawConfig,
    base: &Path,
    jwks: &crate::auth::jwt::JwksCache,
    e: &mut Vec<ConfigError>,
) -> Auth {
    for a in &raw.auth.hmac.algorithms {
        a.check("auth.hmac", "algorithms", e);
    }
    let hmac = HmacSettings::from_raw(&raw.auth.hmac)
        .map_err(|m| e.push(err("auth.hmac", m)))
        .ok();
    let tc3 = Tc3Settings::from_raw(&raw.auth.tc3)
        .map_err(|m| e.push(err("auth.tc3", m)))
        .ok();
    let tc1 = Tc1Settings::from_raw(&raw.auth.tc1)
        .map_err(|m| e.push(err("auth.tc1", m)))
        .ok();
    let (keys, key_prints) = keys(raw, base, e);
    let jwt = jwt_providers(raw, base, jwks, e);
    let reserved = ReservedHeaders::new(jwt.values().flat_map(|p| p.header_names()));
    let key_index = KeyIndex::new(&keys);
    if let Err(m) = KeySource::new(
        raw.auth.key.key_header.as_deref(),
        raw.auth.key.key_query.as_deref(),
    ) {
        e.push(err("auth.key", m));
    }
    let key_auth = raw
        .services
        .iter()
        .flat_map(|s| &s.apis)
        .any(|a| a.auth.get() == Some(AuthKind::Key));
    if key_auth {
        for (a, b) in KeyIndex::shared_secrets(&keys) {
            e.push(err(
                format!("keys ({b})"),
                format!("same secret as key {a:?}: with auth = \"key\" the secret names the key"),
            ));
        }
    }
    Auth {
        hmac,
        tc3,
        tc1,
        keys,
        key_prints,
        jwt,
        key_index,
        reserved,
    }
}

fn keys(raw: &RawConfig, base: &Path, e: &mut Vec<ConfigError>) -> (Keys, BTreeMap<String, u64>) {
    let mut keys: Keys = HashMap::new();
    let mut prints = BTreeMap::new();
    for (i, k) in raw.keys.iter().enumerate() {
        let at = format!("keys[{i}] ({})", k.id);
        if k.id.is_empty()
            || k.id.len() > 128
            || !k.id.bytes().all(|b| b.is_ascii_graphic() && b != b'"')
        {
            e.push(err(
                &at,
                "id must be 1-128 visible characters without quotes",
            ));
            continue;
        }
        match secret(k, base) {
            Ok(s) if s.is_empty() => e.push(err(&at, "secret is empty")),
            Ok(s) => {
                let print = (&k.id, &k.app, k.enabled, Sha256::digest(s.as_bytes()));
                prints.insert(k.id.clone(), fingerprint(&print));
                let key = Key::new(k.id.clone(), s, k.app.clone(), k.enabled);
                if keys.insert(k.id.clone(), Arc::new(key)).is_some() {
                    e.push(err(&at, "duplicate key id"));
                }
            }
            Err(m) => e.push(err(&at, m)),
        }
    }
    (keys, prints)
}

/// A key's secret, from exactly one of `secret` (`${ENV}` expanded) and `secret_file`.
fn secret(k: &RawKey, base: &Path) -> Result<String, String> {
    match (&k.secret, &k.secret_file) {
        (Some(s), None) => expand_env(s),
        (None, Some(f)) => read_secret_file(base, f),
        _ => Err("exactly one of secret and secret_file is needed".into()),
    }
}

fn jwt_providers(
    raw: &RawConfig,
    base: &Path,
    jwks: &crate::auth::jwt::JwksCache,
    e: &mut Vec<ConfigError>,
) -> HashMap<String, Arc<JwtProvider>> {
    let mut jwt = HashMap::new();
    for p in &raw.jwt_providers {
        let at = format!("jwt_providers ({})", p.name);
        // A wrong name is reported here; the provider is still built (with
        // the default pin) so that its other problems show too.
        if let Some(a) = &p.algorithm {
            a.check(&at, "algorithm", e);
        }
        match JwtProvider::from_raw_in(p, base, jwks) {
            Ok(j) => {
                if jwt.insert(p.name.clone(), Arc::new(j)).is_some() {
                    e.push(err(&at, "duplicate name"));
                }
            }
            Err(m) => e.push(err(&at, m)),
        }
    }
    jwt
}
