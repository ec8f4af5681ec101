//! The `concurrency_control` plugin: at most `max_in_flight` requests of an API
//! at once, optionally per app (`max_in_flight_per_app`) and per client IP
//! (`max_in_flight_per_ip`). A request over a limit is refused with
//! `over_limit_status` (429 or 503). An admitted request holds a [`Permit`]
//! until its response body ends or is dropped (a client that aborts).
//!
//! The counts live in [`ConcurrencyState`], outside config snapshots and keyed
//! by plugin name, so that a reload neither forgets in-flight requests nor
//! lets a second batch in beside them.

use crate::body::Body;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConcurrencyControl {
    pub name: String,
    pub max_in_flight: Option<u32>,
    pub max_in_flight_per_app: Option<u32>,
    pub max_in_flight_per_ip: Option<u32>,
    /// 429 (default) or 503.
    pub over_limit_status: Option<u16>,
}

/// In-flight counts of one plugin.
#[derive(Default)]
struct Counts {
    total: u32,
    apps: HashMap<Arc<str>, u32>,
    ips: HashMap<IpAddr, u32>,
}

#[derive(Default)]
pub struct Counters(Mutex<Counts>);

impl Counters {
    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests in flight now (all of them).
    pub fn in_flight(&self) -> u32 {
        self.lock().total
    }
}

/// The counters of every `concurrency_control` plugin, by name.
#[derive(Default)]
pub struct ConcurrencyState(Mutex<HashMap<String, Arc<Counters>>>);

impl ConcurrencyState {
    fn counters(&self, name: &str) -> Arc<Counters> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Plugins no snapshot uses any more (and with nothing in flight) go.
        map.retain(|_, c| Arc::strong_count(c) > 1);
        map.entry(name.to_string()).or_default().clone()
    }
}

pub struct ConcurrencyPolicy {
    name: Arc<str>,
    max: Option<u32>,
    per_app: Option<u32>,
    per_ip: Option<u32>,
    /// Answer 503 rather than 429.
    unavailable: bool,
    counters: Arc<Counters>,
}

/// A refusal: which limit was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverLimit {
    pub message: String,
    /// `over_limit_status = 503`.
    pub unavailable: bool,
}

impl ConcurrencyPolicy {
    pub fn compile(
        raw: &RawConcurrencyControl,
        state: &ConcurrencyState,
    ) -> Result<ConcurrencyPolicy, String> {
        let mut e = vec![];
        if raw.max_in_flight.is_none()
            && raw.max_in_flight_per_app.is_none()
            && raw.max_in_flight_per_ip.is_none()
        {
            e.push(
                "needs max_in_flight, max_in_flight_per_app or max_in_flight_per_ip".to_string(),
            );
        }
        for (field, v) in [
            ("max_in_flight", raw.max_in_flight),
            ("max_in_flight_per_app", raw.max_in_flight_per_app),
            ("max_in_flight_per_ip", raw.max_in_flight_per_ip),
        ] {
            if v == Some(0) {
                e.push(format!("{field} must be positive"));
            }
        }
        let unavailable = match raw.over_limit_status.unwrap_or(429) {
            429 => false,
            503 => true,
            other => {
                e.push(format!("over_limit_status {other} is not 429 or 503"));
                false
            }
        };
        if !e.is_empty() {
            return Err(e.join("; "));
        }
        Ok(ConcurrencyPolicy {
            name: Arc::from(raw.name.as_str()),
            max: raw.max_in_flight,
            per_app: raw.max_in_flight_per_app,
            per_ip: raw.max_in_flight_per_ip,
            unavailable,
            counters: state.counters(&raw.name),
        })
    }

    /// Admit one request of `app` (when authenticated) from `ip`, or refuse it.
    pub fn acquire(&self, app: Option<&str>, ip: IpAddr) -> Result<Permit, OverLimit> {
        let mut c = self.counters.lock();
        let over = |what: &str| OverLimit {
            message: format!("too many requests in flight ({what}, plugin {})", self.name),
            unavailable: self.unavailable,
        };
        if self.max.is_some_and(|m| c.total >= m) {
            return Err(over("API-wide"));
        }
        let app = app.filter(|_| self.per_app.is_some());
        if let (Some(app), Some(m)) = (app, self.per_app) {
            if c.apps.get(app).copied().unwrap_or(0) >= m {
                return Err(over("per app"));
            }
        }
        let ip = self.per_ip.map(|_| ip);
        if let (Some(ip), Some(m)) = (ip, self.per_ip) {
            if c.ips.get(&ip).copied().unwrap_or(0) >= m {
                return Err(over("per client IP"));
            }
        }
        c.total += 1;
        let app: Option<Arc<str>> = app.map(|a| {
            let key = c
                .apps
                .get_key_value(a)
                .map(|(k, _)| k.clone())
                .unwrap_or_else(|| Arc::from(a));
            *c.apps.entry(key.clone()).or_insert(0) += 1;
            key
        });
        if let Some(ip) = ip {
            *c.ips.entry(ip).or_insert(0) += 1;
        }
        Ok(Permit {
            counters: self.counters.clone(),
            app,
            ip,
        })
    }

    /// Requests of this plugin in flight now.
    pub fn in_flight(&self) -> u32 {
        self.counters.in_flight()
    }
}

/// One admitted request; dropping it releases its place.
pub struct Permit {
    counters: Arc<Counters>,
    app: Option<Arc<str>>,
    ip: Option<IpAddr>,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("app", &self.app)
            .field("ip", &self.ip)
            .finish_non_exhaustive()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = self.counters.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(app) = &self.app {
            if let Some(n) = c.apps.get_mut(app) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    c.apps.remove(app);
                }
            }
        }
        if let Some(ip) = &self.ip {
            if let Some(n) = c.ips.get_mut(ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    c.ips.remove(ip);
                }
            }
        }
    }
}

impl Permit {
    /// The response body, holding the permit until it ends or is dropped.
    pub fn hold(self, body: Body) -> Body {
        let mut permit = Some(self);
        crate::body::inspect(body, move |p| {
            if matches!(p, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
                drop(permit.take());
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(max: Option<u32>, app: Option<u32>, ip: Option<u32>) -> RawConcurrencyControl {
        RawConcurrencyControl {
            name: "cc".into(),
            max_in_flight: max,
            max_in_flight_per_app: app,
            max_in_flight_per_ip: ip,
            over_limit_status: None,
        }
    }

    #[test]
    fn limits_are_counted_and_released() {
        let state = ConcurrencyState::default();
        let p = ConcurrencyPolicy::compile(&raw(Some(3), Some(2), Some(1)), &state).unwrap();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        let d: IpAddr = "10.0.0.4".parse().unwrap();
        let p1 = p.acquire(Some("x"), a).unwrap();
        assert!(p.acquire(None, a).is_err(), "per IP");
        let p2 = p.acquire(Some("x"), b).unwrap();
        assert!(p.acquire(Some("x"), c).is_err(), "per app");
        let p3 = p.acquire(Some("y"), c).unwrap();
        let e = p.acquire(Some("z"), d).unwrap_err();
        assert!(e.message.contains("API-wide"), "{e:?}");
        assert_eq!(p.in_flight(), 3);
        drop((p1, p2, p3));
        assert_eq!(p.in_flight(), 0);
        // A reload with the same name shares the counts.
        let _held = p.acquire(Some("x"), a).unwrap();
        let again = ConcurrencyPolicy::compile(&raw(Some(1), None, None), &state).unwrap();
        assert_eq!(again.in_flight(), 1);
        assert!(again.acquire(None, b).is_err());
    }

    #[test]
    fn bad_settings_are_refused() {
        let state = ConcurrencyState::default();
        assert!(ConcurrencyPolicy::compile(&raw(None, None, None), &state).is_err());
        assert!(ConcurrencyPolicy::compile(&raw(Some(0), None, None), &state).is_err());
        let mut r = raw(Some(1), None, None);
        r.over_limit_status = Some(500);
        let e = ConcurrencyPolicy::compile(&r, &state).err().unwrap();
        assert!(e.contains("429 or 503"), "{e}");
        r.over_limit_status = Some(503);
        let p = ConcurrencyPolicy::compile(&r, &state).unwrap();
        let _a = p.acquire(None, "::1".parse().unwrap()).unwrap();
        assert!(
            p.acquire(None, "::1".parse().unwrap())
                .unwrap_err()
                .unavailable
        );
    }
}
