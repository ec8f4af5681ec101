//! Request routing: host rules, then the environment prefix, then path rules.
//!
//! # Hosts
//! The `Host` (or `:authority`) is compared case-insensitively, without its port
//! (`[v6]:port` understood) and without a trailing dot. Candidates are tried in tiers:
//! services naming the exact host, then services with a `*.suffix` wildcard (longest
//! suffix first; a wildcard matches any depth of sub-domain but not the bare suffix),
//! then services with no hosts. The first tier that yields a match wins.
//!
//! # Environments
//! A service with `environment = "release"` only sees paths equal to `/release` or
//! under `/release/`; the prefix is removed (`/release` alone becomes `/`). Within one
//! host tier, services of the path's environment are tried before services without one.
//! All services sharing a host and an environment form one rule table, so rule priority
//! is global across them (an exact rule of one service beats a prefix of another).
//!
//! # Path rules, in priority order
//! 1. `=/user` — exact.
//! 2. `^~/user` — preferential prefix; the longest wins and regex/template rules are
//!    not consulted when one matches.
//! 3. `~<regex>` (`~*<regex>`: case-insensitive) and templates `/user/{id}`, in
//!    declaration order. A regex is anchored at the start of the path (as in Kong 3),
//!    not at its end (write `$` for that); its named groups `(?P<name>..)` become
//!    parameters. A template matches the whole path; each `{name}` is one whole,
//!    non-empty segment (`[^/]+`); `/user/{id}` matches `/user/7` but neither
//!    `/user/7/x` nor `/user/`.
//! 4. `/user` — raw-string prefix (`/usertest` and `/user/a` match); the longest wins.
//!
//! A rule matches only when the method is allowed too; otherwise lower-priority rules
//! (and shorter prefixes) are tried. Methods are GET POST PUT DELETE PATCH HEAD OPTIONS
//! (case-insensitive) or ANY; an empty list means ANY. HEAD is not implied by GET.
//!
//! # Actions
//! APIs of one table whose rules are written identically may share the rule when
//! they list cloud-API `actions` (see [`action`]): the table keeps one entry for
//! them, and [`RouteMatch::pick`] chooses the API once the action is known. At most
//! one of them may list no actions; it takes the actions the others do not.

use std::fmt;

use http::Method;
use rustc_hash::FxHashMap;

pub mod action;
pub mod front;
mod rule;
mod table;

pub use action::{check_action_pattern, ActionSet, Candidate};

use rule::{
    check_duplicates, compile_service, group_services, parse_rule, CompiledService, RuleKind, Seg,
};
use table::Table;

/// A service as given by the config compiler.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: String,
    /// Exact host names or `*.example.com`; empty = any host.
    pub hosts: Vec<String>,
    /// `release`, `prepub`, `test`...: requests then start with `/<env>/`.
    pub environment: Option<String>,
    pub apis: Vec<ApiSpec>,
}

/// One API's front end as given by the config compiler.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiSpec {
    /// Index into the gateway's API table; returned by [`Router::lookup`].
    pub id: usize,
    pub name: String,
    /// The path rule (see the module documentation).
    pub path: String,
    /// GET POST PUT DELETE PATCH HEAD OPTIONS or ANY; empty = ANY.
    pub methods: Vec<String>,
    /// Cloud-API actions this API takes (exact or trailing-`*`); empty = any.
    pub actions: Vec<String>,
}

/// The result of a successful lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch<'a> {
    /// The `ApiSpec::id` of the matched API.
    pub api: usize,
    /// Captured `(name, value)` pairs (templates and named regex groups), raw.
    pub params: Vec<(&'a str, &'a str)>,
    /// The path after environment removal.
    pub path: &'a str,
    /// Bytes of `path` consumed by the rule: exact/template = all, prefix = prefix
    /// length, regex = end of the match.
    pub matched_len: usize,
    /// The APIs sharing the rule when they are chosen by action (then `api` is only
    /// the first of them; call [`RouteMatch::pick`]); empty otherwise.
    pub candidates: &'a [Candidate],
}

impl RouteMatch<'_> {
    /// Whether the API must be chosen by action with [`RouteMatch::pick`].
    #[inline]
    pub fn by_action(&self) -> bool {
        !self.candidates.is_empty()
    }

    /// The API taking the request: `api` for a plain rule; for an action group the
    /// first candidate allowing `method` whose actions take `action_of(api)` (the
    /// action as that API's scheme carries it), or `None`.
    pub fn pick<'s>(
        &self,
        method: &Method,
        action_of: impl FnMut(usize) -> Option<&'s str>,
    ) -> Option<usize> {
        if self.candidates.is_empty() {
            return Some(self.api);
        }
        action::pick(self.candidates, method, action_of)
    }

    /// The first API of the match allowing `method`, whatever the action (a CORS
    /// preflight names none).
    pub fn first_allowing(&self, method: &Method) -> usize {
        let bit = method_bit(method);
        self.candidates
            .iter()
            .find(|c| c.methods & bit != 0)
            .map_or(self.api, |c| c.api)
    }
}

/// Host + path router compiled from the services of one configuration.
pub struct Router {
    exact_hosts: FxHashMap<Box<str>, HostEntry>,
    /// Keyed by the suffix including its leading dot: `.example.com`.
    wild_hosts: FxHashMap<Box<str>, HostEntry>,
    any_host: HostEntry,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("exact_hosts", &self.exact_hosts.len())
            .field("wildcard_hosts", &self.wild_hosts.len())
            .finish_non_exhaustive()
    }
}

impl Router {
    /// Compiles the services; every problem is reported, each naming its service, API
    /// and path.
    pub fn build(services: &[ServiceSpec]) -> Result<Router, Vec<String>> {
        let mut errors = Vec::new();
        let compiled: Vec<CompiledService> = services
            .iter()
            .map(|s| compile_service(s, &mut errors))
            .collect();
        for svc in &compiled {
            check_duplicates(&[svc], &mut errors);
        }
        let mut router = Router {
            exact_hosts: FxHashMap::default(),
            wild_hosts: FxHashMap::default(),
            any_host: HostEntry::default(),
        };
        for ((host, env), members) in group_services(&compiled) {
            let members: Vec<&CompiledService> = members.iter().map(|&i| &compiled[i]).collect();
            check_duplicates(&members, &mut errors);
            let mut table = Table::default();
            add_rules(&mut table, &members);
            let entry = match host {
                HostKey::Exact(h) => router.exact_hosts.entry(h.into()).or_default(),
                HostKey::Wild(h) => router.wild_hosts.entry(h.into()).or_default(),
                HostKey::Any => &mut router.any_host,
            };
            match env {
                Some(env) => entry.envs.push((env.into(), table)),
                None => entry.plain = Some(table),
            }
        }
        if errors.is_empty() {
            Ok(router)
        } else {
            let mut seen = std::collections::HashSet::new();
            errors.retain(|e| seen.insert(e.clone()));
            Err(errors)
        }
    }

    /// Finds the API for a request. `host` is the `Host` header or authority (port and
    /// case do not matter); `path` is the request path without its query string.
    pub fn lookup<'a>(
        &'a self,
        host: Option<&str>,
        path: &'a str,
        method: &Method,
    ) -> Option<RouteMatch<'a>> {
        let bit = method_bit(method);
        let mut buf = [0u8; 256];
        let host = host.filter(|_| !self.exact_hosts.is_empty() || !self.wild_hosts.is_empty());
        if let Some(h) = host.and_then(|h| normalize_host_into(h, &mut buf)) {
            if let Some(entry) = self.exact_hosts.get(h) {
                if let Some(m) = entry.lookup(path, bit) {
                    return Some(m);
                }
            }
            if !self.wild_hosts.is_empty() {
                // Dots from the left: longest suffix first.
                for (i, b) in h.bytes().enumerate().skip(1) {
                    if b != b'.' {
                        continue;
                    }
                    if let Some(entry) = self.wild_hosts.get(&h[i..]) {
                        if let Some(m) = entry.lookup(path, bit) {
                            return Some(m);
                        }
                    }
                }
            }
        }
        self.any_host.lookup(path, bit)
    }
}

/// Adds the rules of one table's services in declaration order; rules sharing a key
/// with a rule that lists actions become one action-group entry, placed where the
/// first of them was declared.
fn add_rules(table: &mut Table, members: &[&CompiledService]) {
    let rules = || members.iter().flat_map(|s| s.rules.iter());
    let grouped: std::collections::HashSet<&str> = rules()
        .filter(|r| !r.actions.is_any())
        .map(|r| r.key.as_str())
        .collect();
    let mut done = std::collections::HashSet::new();
    for rule in rules() {
        if !grouped.contains(rule.key.as_str()) {
            table.add(rule);
            continue;
        }
        if !done.insert(rule.key.as_str()) {
            continue;
        }
        let same = || rules().filter(|r| r.key == rule.key);
        let mut candidates: Vec<Candidate> = same()
            .filter(|r| !r.actions.is_any())
            .chain(same().filter(|r| r.actions.is_any()))
            .map(|r| Candidate {
                api: r.api,
                methods: r.methods,
                actions: r.actions.clone(),
            })
            .collect();
        candidates.dedup_by_key(|c| c.api);
        let first = same().find(|r| !r.actions.is_any()).unwrap_or(rule);
        table.add_group(first, candidates);
    }
}

/// Builds the path sent upstream (SPEC §2). An empty `backend_path` forwards
/// `m.path` unchanged; otherwise the matched part of the path is replaced by
/// `backend_path`, whose `{name}` placeholders are replaced by captured values (an
/// unknown name stays as written). The join never produces `//`, and a slash that
/// ended the matched part is kept (`/apia/` → `/endpoint` gives `/endpoint/rest`).
pub fn compose_backend_path(backend_path: &str, m: &RouteMatch) -> String {
    if backend_path.is_empty() {
        return m.path.to_owned();
    }
    let rest = m.path.get(m.matched_len..).unwrap_or("");
    let mut out = String::with_capacity(backend_path.len() + rest.len() + 16);
    substitute_params(backend_path, &m.params, &mut out);
    if !rest.is_empty() {
        let out_slash = out.ends_with('/');
        let rest_slash = rest.starts_with('/');
        let matched_slash =
            m.matched_len > 0 && m.path.as_bytes().get(m.matched_len - 1) == Some(&b'/');
        if out_slash && rest_slash {
            out.push_str(&rest[1..]);
        } else {
            if !out_slash && !rest_slash && matched_slash {
                out.push('/');
            }
            out.push_str(rest);
        }
    }
    if !out.starts_with('/') {
        out.insert(0, '/');
    }
    out
}

/// Checks that every `{name}` of a back-end path is captured by the front path rule
/// `front` (for the config compiler).
pub fn check_backend_path(front: &str, backend: &str) -> Result<(), String> {
    check_backend_path_with(front, backend, &[])
}

/// [`check_backend_path`], where `extra` names are provided too (declared
/// parameters sent to the back-end path).
pub fn check_backend_path_with(front: &str, backend: &str, extra: &[&str]) -> Result<(), String> {
    let mut captured = param_names(front)?;
    captured.extend(extra.iter().map(|s| s.to_string()));
    let mut rest = backend;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return Err(format!("back-end path {backend:?}: unmatched '}}'"));
        }
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("back-end path {backend:?}: unclosed '{{'"))?;
        let name = &rest[open + 1..open + close];
        if !captured.iter().any(|c| c == name) {
            return Err(format!(
                "back-end path {backend:?}: parameter {{{name}}} is not captured by the front path {front:?}"
            ));
        }
        rest = &rest[open + close + 1..];
    }
    Ok(())
}

/// Names of the parameters a front path rule captures.
pub fn param_names(rule: &str) -> Result<Vec<String>, String> {
    Ok(match parse_rule(rule)? {
        RuleKind::Regex { re, .. } => re.capture_names().flatten().map(str::to_owned).collect(),
        RuleKind::Template(segs) => segs
            .iter()
            .filter_map(|s| match s {
                Seg::Param(n) => Some(n.to_string()),
                Seg::Lit(_) => None,
            })
            .collect(),
        _ => Vec::new(),
    })
}

fn substitute_params(template: &str, params: &[(&str, &str)], out: &mut String) {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let name = &rest[open + 1..open + close];
        out.push_str(&rest[..open]);
        match params.iter().find(|(n, _)| *n == name) {
            Some((_, v)) => out.push_str(v),
            None => out.push_str(&rest[open..=open + close]),
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
}

// ---------------------------------------------------------------------------------
// Methods

const OTHER_METHOD: u16 = 1 << 7;
pub(crate) const ANY_METHOD: u16 = u16::MAX;
const METHOD_NAMES: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];

#[inline]
fn method_bit(m: &Method) -> u16 {
    const METHODS: [Method; 7] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::HEAD,
        Method::OPTIONS,
    ];
    METHODS
        .iter()
        .position(|k| k == m)
        .map_or(OTHER_METHOD, |i| 1 << i)
}

pub(crate) fn parse_methods(methods: &[String]) -> Result<u16, String> {
    let mut bits = 0u16;
    for m in methods {
        let m = m.trim();
        if m.eq_ignore_ascii_case("ANY") {
            bits = ANY_METHOD;
        } else if let Some(i) = METHOD_NAMES.iter().position(|k| k.eq_ignore_ascii_case(m)) {
            bits |= 1 << i;
        } else {
            return Err(format!(
                "unknown method {m:?} (expected GET, POST, PUT, DELETE, PATCH, HEAD, OPTIONS or ANY)"
            ));
        }
    }
    Ok(if bits == 0 { ANY_METHOD } else { bits })
}

// ---------------------------------------------------------------------------------
// Hosts and environments

/// Lower-cases `host` into `buf` without its port, brackets and trailing dot.
fn normalize_host_into<'b>(host: &str, buf: &'b mut [u8; 256]) -> Option<&'b str> {
    let h = strip_port(host.trim());
    if h.is_empty() || h.len() > buf.len() {
        return None;
    }
    let out = &mut buf[..h.len()];
    out.copy_from_slice(h.as_bytes());
    out.make_ascii_lowercase();
    std::str::from_utf8(out).ok()
}

fn strip_port(h: &str) -> &str {
    let h = if let Some(v6) = h.strip_prefix('[') {
        v6.split(']').next().unwrap_or(v6)
    } else if h.bytes().filter(|&b| b == b':').count() == 1 {
        h.split(':').next().unwrap_or(h)
    } else {
        h // no port, or a bare IPv6 address
    };
    h.strip_suffix('.').unwrap_or(h)
}

pub(crate) fn normalize_host(host: &str) -> Result<HostKey, String> {
    let h = strip_port(host.trim()).to_ascii_lowercase();
    let (wild, name) = match h.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, h.as_str()),
    };
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':');
    if name.is_empty() || name.starts_with('.') || !name.chars().all(ok_char) {
        return Err(format!(
            "host {host:?}: expected a host name or \"*.suffix\" (an empty list means any host)"
        ));
    }
    Ok(if wild {
        HostKey::Wild(format!(".{name}"))
    } else {
        HostKey::Exact(name.to_owned())
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum HostKey {
    Exact(String),
    Wild(String),
    Any,
}

#[derive(Default)]
struct HostEntry {
    envs: Vec<(Box<str>, Table)>,
    plain: Option<Table>,
}

impl HostEntry {
    #[inline]
    fn lookup<'a>(&'a self, path: &'a str, bit: u16) -> Option<RouteMatch<'a>> {
        if !self.envs.is_empty() {
            if let Some((env, stripped)) = split_env(path) {
                if let Some((_, t)) = self.envs.iter().find(|(e, _)| **e == *env) {
                    if let Some(m) = t.lookup(stripped, bit) {
                        return Some(m);
                    }
                }
            }
        }
        self.plain.as_ref()?.lookup(path, bit)
    }
}

/// `/release/a/b` → (`release`, `/a/b`); `/release` → (`release`, `/`).
fn split_env(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    match rest.find('/') {
        Some(i) => Some((&rest[..i], &rest[i..])),
        None => Some((rest, "/")),
    }
}

#[cfg(test)]
mod tests;
