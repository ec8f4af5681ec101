//! HTTPS front end: the certificates of a snapshot, chosen per host name by
//! SNI. The listeners' resolver (`server.rs`) reads the live snapshot's, so a
//! reload also swaps certificates.

use crate::config::raw::RawCert;
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

#[derive(Default)]
pub struct CertStore {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `(".example.com", cert)` for `*.example.com`, longest suffix first.
    wildcard: Vec<(String, Arc<CertifiedKey>)>,
    default: Option<Arc<CertifiedKey>>,
}

impl CertStore {
    pub fn load(certs: &[RawCert], base: &Path) -> Result<CertStore, Vec<String>> {
        let mut store = CertStore::default();
        let mut errors = vec![];
        for (i, c) in certs.iter().enumerate() {
            let at = format!("server.tls.certs[{i}]");
            let ck = match load_pair(&base.join(&c.cert), &base.join(&c.key)) {
                Ok(ck) => Arc::new(ck),
                Err(e) => {
                    errors.push(format!("{at}: {e}"));
                    continue;
                }
            };
            if c.hosts.is_empty() && !c.default {
                errors.push(format!("{at}: needs `hosts` or `default = true`"));
            }
            for h in &c.hosts {
                let h = h.to_ascii_lowercase();
                if let Some(suffix) = h.strip_prefix('*') {
                    if !suffix.starts_with('.') || suffix.len() < 2 {
                        errors.push(format!("{at}: bad wildcard host {h:?}"));
                        continue;
                    }
                    store.wildcard.push((suffix.to_string(), ck.clone()));
                } else if store.exact.insert(h.clone(), ck.clone()).is_some() {
                    errors.push(format!("{at}: host {h:?} has two certificates"));
                }
            }
            if c.default {
                if store.default.is_some() {
                    errors.push(format!("{at}: only one certificate may be the default"));
                }
                store.default = Some(ck);
            }
        }
        store.wildcard.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
        if errors.is_empty() {
            Ok(store)
        } else {
            Err(errors)
        }
    }

    pub fn resolve(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = sni else {
            return self.default.clone();
        };
        let name = name.to_ascii_lowercase();
        if let Some(c) = self.exact.get(&name) {
            return Some(c.clone());
        }
        for (suffix, c) in &self.wildcard {
            // `*.example.com` covers exactly one label before the suffix.
            if let Some(label) = name.strip_suffix(suffix.as_str()) {
                if !label.is_empty() && !label.contains('.') {
                    return Some(c.clone());
                }
            }
        }
        self.default.clone()
    }
}

fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let cert_pem =
        std::fs::read(cert).map_err(|e| format!("cannot read {}: {e}", cert.display()))?;
    let key_pem = std::fs::read(key).map_err(|e| format!("cannot read {}: {e}", key.display()))?;
    let chain: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad certificate PEM {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("no certificate in {}", cert.display()));
    }
    let der = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| format!("bad key PEM {}: {e}", key.display()))?
        .ok_or_else(|| format!("no private key in {}", key.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| format!("unsupported key {}: {e}", key.display()))?;
    let ck = CertifiedKey::new(chain, signing);
    // A key of another certificate would fail every handshake, silently.
    if let Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) =
        ck.keys_match()
    {
        return Err(format!(
            "the key {} does not match the certificate {}",
            key.display(),
            cert.display()
        ));
    }
    Ok(ck)
}
