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

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use http::Method;
use regex::{Regex, RegexBuilder};

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
}

/// Host + path router compiled from the services of one configuration.
pub struct Router {
    exact_hosts: FxMap<Box<str>, HostEntry>,
    /// Keyed by the suffix including its leading dot: `.example.com`.
    wild_hosts: FxMap<Box<str>, HostEntry>,
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
            exact_hosts: FxMap::default(),
            wild_hosts: FxMap::default(),
            any_host: HostEntry::default(),
        };
        for ((host, env), members) in group_services(&compiled) {
            let members: Vec<&CompiledService> = members.iter().map(|&i| &compiled[i]).collect();
            check_duplicates(&members, &mut errors);
            let mut table = Table::default();
            for svc in &members {
                for rule in &svc.rules {
                    table.add(rule);
                }
            }
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
    let captured = param_names(front)?;
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
// Hashing: keys come from the configuration, so a fast non-keyed hash is safe here.

#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl FxHasher {
    #[inline]
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let r = chunks.remainder();
        if !r.is_empty() {
            let mut buf = [0u8; 8];
            buf[..r.len()].copy_from_slice(r);
            self.add(u64::from_le_bytes(buf));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

// ---------------------------------------------------------------------------------
// Methods

const OTHER_METHOD: u16 = 1 << 7;
const ANY_METHOD: u16 = u16::MAX;
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

fn parse_methods(methods: &[String]) -> Result<u16, String> {
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

fn normalize_host(host: &str) -> Result<HostKey, String> {
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
enum HostKey {
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

// ---------------------------------------------------------------------------------
// Rules

enum RuleKind {
    Exact(String),
    Pref(String),
    Regex { re: Regex, ci: bool },
    Template(Vec<Seg>),
    Prefix(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Lit(Box<str>),
    Param(Box<str>),
}

struct CompiledRule {
    api: usize,
    api_name: String,
    path: String,
    methods: u16,
    kind: RuleKind,
    /// Identity for duplicate detection (kind marker + normalized text).
    key: String,
    /// Literal text every matching path starts with (regex and template rules).
    literal: String,
}

struct CompiledService {
    name: String,
    hosts: Vec<HostKey>,
    env: Option<String>,
    rules: Vec<CompiledRule>,
}

fn compile_service(s: &ServiceSpec, errors: &mut Vec<String>) -> CompiledService {
    let mut hosts = Vec::new();
    for h in &s.hosts {
        match normalize_host(h) {
            Ok(k) if !hosts.contains(&k) => hosts.push(k),
            Ok(_) => {}
            Err(e) => errors.push(format!("service {}: {e}", s.name)),
        }
    }
    let env = s.environment.as_deref().map(str::trim).filter(|e| {
        let ok = !e.is_empty()
            && e.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            errors.push(format!(
                "service {}: environment {e:?} must be a non-empty name of letters, digits, '-', '_' or '.'",
                s.name
            ));
        }
        ok
    });
    let mut rules = Vec::new();
    for api in &s.apis {
        let ctx = || {
            format!(
                "service {} / api {} / path {:?}",
                s.name, api.name, api.path
            )
        };
        let methods =
            parse_methods(&api.methods).map_err(|e| errors.push(format!("{}: {e}", ctx())));
        let kind = parse_rule(&api.path).map_err(|e| errors.push(format!("{}: {e}", ctx())));
        if let (Ok(methods), Ok(kind)) = (methods, kind) {
            let (key, literal) = rule_key(&kind);
            rules.push(CompiledRule {
                api: api.id,
                api_name: api.name.clone(),
                path: api.path.clone(),
                methods,
                kind,
                key,
                literal,
            });
        }
    }
    CompiledService {
        name: s.name.clone(),
        hosts: if hosts.is_empty() {
            vec![HostKey::Any]
        } else {
            hosts
        },
        env: env.map(str::to_owned),
        rules,
    }
}

fn parse_rule(path: &str) -> Result<RuleKind, String> {
    if path.is_empty() {
        return Err("empty path".into());
    }
    if let Some(p) = path.strip_prefix('=') {
        return plain_path(p, "'='").map(|p| RuleKind::Exact(p.to_owned()));
    }
    if let Some(p) = path.strip_prefix("^~") {
        return plain_path(p, "'^~'").map(|p| RuleKind::Pref(p.to_owned()));
    }
    if let Some(p) = path.strip_prefix('~') {
        let (ci, p) = match p.strip_prefix('*') {
            Some(p) => (true, p),
            None => (false, p),
        };
        if p.is_empty() {
            return Err("empty regular expression".into());
        }
        return RegexBuilder::new(&format!("^(?:{p})"))
            .case_insensitive(ci)
            .build()
            .map(|re| RuleKind::Regex { re, ci })
            .map_err(|e| format!("bad regular expression: {e}"));
    }
    if !path.starts_with('/') {
        return Err("a path must start with '/', '=/', '^~/' or '~' (regex)".into());
    }
    if path.contains(['{', '}']) {
        return parse_template(path).map(RuleKind::Template);
    }
    plain_path(path, "a path").map(|p| RuleKind::Prefix(p.to_owned()))
}

fn plain_path<'p>(p: &'p str, what: &str) -> Result<&'p str, String> {
    if !p.starts_with('/') {
        return Err(format!(
            "{what} must be followed by a path starting with '/'"
        ));
    }
    if p.contains(['{', '}']) {
        return Err("{param} segments are only allowed in plain template paths".into());
    }
    check_path_chars(p)?;
    Ok(p)
}

fn check_path_chars(p: &str) -> Result<(), String> {
    match p
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#'))
    {
        Some(c) => Err(format!("character {c:?} is not allowed in a path")),
        None => Ok(()),
    }
}

fn parse_template(path: &str) -> Result<Vec<Seg>, String> {
    check_path_chars(path)?;
    let mut segs = Vec::new();
    for seg in path.split('/') {
        if !seg.contains(['{', '}']) {
            segs.push(Seg::Lit(seg.into()));
            continue;
        }
        let name = seg
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .ok_or_else(|| format!("segment {seg:?}: a {{param}} must be a whole segment"))?;
        let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "segment {seg:?}: a parameter name is a letter or '_' followed by letters, digits or '_'"
            ));
        }
        if segs
            .iter()
            .any(|s| matches!(s, Seg::Param(n) if &**n == name))
        {
            return Err(format!("parameter {{{name}}} appears twice"));
        }
        segs.push(Seg::Param(name.into()));
    }
    Ok(segs)
}

/// (duplicate-detection key, literal prefix of every match).
fn rule_key(kind: &RuleKind) -> (String, String) {
    match kind {
        RuleKind::Exact(p) => (format!("={p}"), p.clone()),
        RuleKind::Pref(p) => (format!("^~{p}"), p.clone()),
        RuleKind::Prefix(p) => (p.clone(), p.clone()),
        RuleKind::Regex { re, ci } => {
            let src = re.as_str();
            // `^(?:` + pattern + `)`; case-insensitive regexes have no usable literal.
            let inner = &src[4..src.len() - 1];
            let literal = if *ci {
                String::new()
            } else {
                regex_literal_prefix(inner)
            };
            (format!("{}{src}", if *ci { "~*" } else { "~" }), literal)
        }
        RuleKind::Template(segs) => {
            let mut shape = String::from("{}");
            let mut literal = String::new();
            let mut open = true;
            for (i, s) in segs.iter().enumerate() {
                if i > 0 {
                    shape.push('/');
                    if open {
                        literal.push('/');
                    }
                }
                match s {
                    Seg::Lit(l) => {
                        shape.push_str(l);
                        if open {
                            literal.push_str(l);
                        }
                    }
                    Seg::Param(_) => {
                        shape.push_str("{}");
                        open = false;
                    }
                }
            }
            (shape, literal)
        }
    }
}

/// The literal text every match of a start-anchored regex begins with (conservative:
/// empty when in doubt).
fn regex_literal_prefix(p: &str) -> String {
    if p.contains('|') {
        return String::new();
    }
    let s = p.strip_prefix('^').unwrap_or(p);
    let end = s
        .find(|c: char| "\\.+*?()[]{}^$|#".contains(c) || c.is_whitespace())
        .unwrap_or(s.len());
    let mut lit = &s[..end];
    if matches!(s[end..].chars().next(), Some('?' | '*' | '{')) {
        // The last literal character is optional.
        lit = lit.char_indices().last().map_or(lit, |(i, _)| &lit[..i]);
    }
    lit.to_owned()
}

fn check_duplicates(members: &[&CompiledService], errors: &mut Vec<String>) {
    let mut seen: HashMap<&str, Vec<(&CompiledService, &CompiledRule)>> = HashMap::new();
    for svc in members {
        for rule in &svc.rules {
            let list = seen.entry(rule.key.as_str()).or_default();
            for (other_svc, other) in list.iter() {
                if other.methods & rule.methods != 0 {
                    errors.push(format!(
                        "service {} / api {} / path {:?}: same rule and method as service {} / api {} (it could never match)",
                        svc.name, rule.api_name, rule.path, other_svc.name, other.api_name
                    ));
                }
            }
            list.push((svc, rule));
        }
    }
}

type GroupKey = (HostKey, Option<String>);

/// Services sharing a host key and an environment, in declaration order.
fn group_services(services: &[CompiledService]) -> Vec<(GroupKey, Vec<usize>)> {
    let mut groups: Vec<(GroupKey, Vec<usize>)> = Vec::new();
    let mut index: HashMap<GroupKey, usize> = HashMap::new();
    for (i, svc) in services.iter().enumerate() {
        for h in &svc.hosts {
            let key = (h.clone(), svc.env.clone());
            let g = *index.entry(key.clone()).or_insert_with(|| {
                groups.push((key, Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push(i);
        }
    }
    groups
}

// ---------------------------------------------------------------------------------
// The rule table of one (host, environment) group

#[derive(Default)]
struct Table {
    exact: FxMap<Box<str>, Vec<Entry>>,
    pref: PrefixTree<Entry>,
    /// Regex and template rules in declaration order.
    patterns: Vec<Pattern>,
    /// Pattern indices keyed by the literal text every match of the pattern starts
    /// with: only patterns whose literal is a prefix of the path are tried.
    pattern_index: PrefixTree<u32>,
    prefix: PrefixTree<Entry>,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    api: usize,
    methods: u16,
}

struct Pattern {
    api: usize,
    methods: u16,
    matcher: Matcher,
}

enum Matcher {
    Regex { re: Regex, named: bool },
    Template { segs: Box<[Seg]>, params: usize },
}

impl Table {
    fn add(&mut self, r: &CompiledRule) {
        let e = Entry {
            api: r.api,
            methods: r.methods,
        };
        match &r.kind {
            RuleKind::Exact(p) => self.exact.entry(p.as_str().into()).or_default().push(e),
            RuleKind::Pref(p) => self.pref.insert(p.as_bytes(), e),
            RuleKind::Prefix(p) => self.prefix.insert(p.as_bytes(), e),
            RuleKind::Regex { re, .. } => {
                let named = re.capture_names().flatten().next().is_some();
                let re = re.clone();
                self.add_pattern(r, Matcher::Regex { re, named });
            }
            RuleKind::Template(segs) => {
                let params = segs.iter().filter(|s| matches!(s, Seg::Param(_))).count();
                let segs = segs.clone().into();
                self.add_pattern(r, Matcher::Template { segs, params });
            }
        }
    }

    fn add_pattern(&mut self, r: &CompiledRule, matcher: Matcher) {
        let idx = u32::try_from(self.patterns.len()).expect("fewer than 2^32 rules");
        self.patterns.push(Pattern {
            api: r.api,
            methods: r.methods,
            matcher,
        });
        self.pattern_index.insert(r.literal.as_bytes(), idx);
    }

    #[inline]
    fn lookup<'a>(&'a self, path: &'a str, bit: u16) -> Option<RouteMatch<'a>> {
        let hit = |api, matched_len| {
            Some(RouteMatch {
                api,
                params: Vec::new(),
                path,
                matched_len,
            })
        };
        if !self.exact.is_empty() {
            if let Some(es) = self.exact.get(path) {
                if let Some(e) = es.iter().find(|e| e.methods & bit != 0) {
                    return hit(e.api, path.len());
                }
            }
        }
        if let Some((api, len)) = self.pref.longest(path, bit) {
            return hit(api, len);
        }
        if !self.patterns.is_empty() {
            if let Some(m) = self.match_patterns(path, bit) {
                return Some(m);
            }
        }
        let (api, len) = self.prefix.longest(path, bit)?;
        hit(api, len)
    }

    /// Tries, in declaration order, the patterns whose literal is a prefix of `path`.
    fn match_patterns<'a>(&'a self, path: &'a str, bit: u16) -> Option<RouteMatch<'a>> {
        const K: usize = 16;
        let mut lists: [&[u32]; K] = [&[]; K];
        let mut n = 0;
        let mut overflow = false;
        self.pattern_index.visit(path.as_bytes(), |l| {
            if n < K {
                lists[n] = l;
                n += 1;
            } else {
                overflow = true;
            }
        });
        if overflow {
            // More than K nested literals along one path: rare, so allocate.
            let mut all = Vec::new();
            self.pattern_index
                .visit(path.as_bytes(), |l| all.extend_from_slice(l));
            all.sort_unstable();
            return all.iter().find_map(|&i| self.try_pattern(i, path, bit));
        }
        let mut pos = [0usize; K];
        loop {
            // k-way merge of the (sorted) lists by declaration index.
            let mut best: Option<(usize, u32)> = None;
            for (k, list) in lists[..n].iter().enumerate() {
                if let Some(&v) = list.get(pos[k]) {
                    if best.is_none_or(|(_, b)| v < b) {
                        best = Some((k, v));
                    }
                }
            }
            let (k, idx) = best?;
            pos[k] += 1;
            if let Some(m) = self.try_pattern(idx, path, bit) {
                return Some(m);
            }
        }
    }

    #[inline]
    fn try_pattern<'a>(&'a self, idx: u32, path: &'a str, bit: u16) -> Option<RouteMatch<'a>> {
        let p = &self.patterns[idx as usize];
        if p.methods & bit == 0 {
            return None;
        }
        p.try_match(path)
    }
}

impl Pattern {
    fn try_match<'a>(&'a self, path: &'a str) -> Option<RouteMatch<'a>> {
        let (params, matched_len) = match &self.matcher {
            Matcher::Regex { re, named: false } => (Vec::new(), re.find(path)?.end()),
            Matcher::Regex { re, named: true } => {
                let caps = re.captures(path)?;
                let params = re
                    .capture_names()
                    .zip(caps.iter())
                    .filter_map(|(n, m)| Some((n?, m?.as_str())))
                    .collect();
                (params, caps.get(0)?.end())
            }
            Matcher::Template { segs, params } => {
                if !template_matches(segs, path) {
                    return None;
                }
                let mut out = Vec::with_capacity(*params);
                for (s, v) in segs.iter().zip(Segments(Some(path))) {
                    if let Seg::Param(n) = s {
                        out.push((&**n, v));
                    }
                }
                (out, path.len())
            }
        };
        Some(RouteMatch {
            api: self.api,
            params,
            path,
            matched_len,
        })
    }
}

#[inline]
fn template_matches(segs: &[Seg], path: &str) -> bool {
    let mut parts = Segments(Some(path));
    for s in segs {
        match (s, parts.next()) {
            (Seg::Lit(l), Some(p)) if **l == *p => {}
            (Seg::Param(_), Some(p)) if !p.is_empty() => {}
            _ => return false,
        }
    }
    parts.next().is_none()
}

/// `str::split('/')` with a plain byte loop (path segments are short).
struct Segments<'a>(Option<&'a str>);

impl<'a> Iterator for Segments<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        let rest = self.0?;
        match rest.bytes().position(|b| b == b'/') {
            Some(i) => {
                self.0 = Some(&rest[i + 1..]);
                Some(&rest[..i])
            }
            None => {
                self.0 = None;
                Some(rest)
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Longest-prefix matching: a byte radix tree

struct PrefixTree<E> {
    root: Node<E>,
}

struct Node<E> {
    label: Box<[u8]>,
    entries: Vec<E>,
    /// Sorted by the first byte of their label (labels are never empty).
    children: Vec<Node<E>>,
}

impl<E> Default for PrefixTree<E> {
    fn default() -> Self {
        PrefixTree {
            root: Node {
                label: Box::default(),
                entries: Vec::new(),
                children: Vec::new(),
            },
        }
    }
}

impl<E> PrefixTree<E> {
    fn insert(&mut self, key: &[u8], entry: E) {
        let mut node = &mut self.root;
        let mut key = key;
        loop {
            if key.is_empty() {
                node.entries.push(entry);
                return;
            }
            match node.children.binary_search_by_key(&key[0], |c| c.label[0]) {
                Err(pos) => {
                    let leaf = Node {
                        label: key.into(),
                        entries: vec![entry],
                        children: Vec::new(),
                    };
                    node.children.insert(pos, leaf);
                    return;
                }
                Ok(pos) => {
                    let child = &mut node.children[pos];
                    let common = child
                        .label
                        .iter()
                        .zip(key)
                        .take_while(|(a, b)| a == b)
                        .count();
                    if common < child.label.len() {
                        let head = Node {
                            label: child.label[..common].into(),
                            entries: Vec::new(),
                            children: Vec::new(),
                        };
                        let mut tail = std::mem::replace(child, head);
                        tail.label = tail.label[common..].into();
                        child.children.push(tail);
                    }
                    key = &key[common..];
                    node = child;
                }
            }
        }
    }

    /// Calls `f` with the entries of every key that is a prefix of `path`, shortest
    /// first.
    #[inline]
    fn visit<'t>(&'t self, path: &[u8], mut f: impl FnMut(&'t [E])) {
        let mut node = &self.root;
        let mut rest = path;
        loop {
            if !node.entries.is_empty() {
                f(&node.entries);
            }
            let Some(&b) = rest.first() else {
                return;
            };
            let Ok(i) = node.children.binary_search_by_key(&b, |c| c.label[0]) else {
                return;
            };
            node = &node.children[i];
            match rest.strip_prefix(&*node.label) {
                Some(r) => rest = r,
                None => return,
            }
        }
    }
}

impl PrefixTree<Entry> {
    /// The deepest prefix of `path` with an entry allowing `bit`: (api, prefix length).
    #[inline]
    fn longest(&self, path: &str, bit: u16) -> Option<(usize, usize)> {
        if self.root.children.is_empty() {
            return None;
        }
        Self::walk(&self.root, path.as_bytes(), 0, bit)
    }

    fn walk(node: &Node<Entry>, path: &[u8], depth: usize, bit: u16) -> Option<(usize, usize)> {
        let rest = &path[depth..];
        if let Some(&b) = rest.first() {
            if let Ok(i) = node.children.binary_search_by_key(&b, |c| c.label[0]) {
                let child = &node.children[i];
                if rest.starts_with(&child.label) {
                    if let Some(hit) = Self::walk(child, path, depth + child.label.len(), bit) {
                        return Some(hit);
                    }
                }
            }
        }
        node.entries
            .iter()
            .find(|e| e.methods & bit != 0)
            .map(|e| (e.api, depth))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(id, path, "GET,POST")`; an empty method string means ANY.
    fn service(
        name: &str,
        hosts: &[&str],
        env: Option<&str>,
        apis: &[(usize, &str, &str)],
    ) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            environment: env.map(str::to_owned),
            apis: apis
                .iter()
                .map(|&(id, path, methods)| ApiSpec {
                    id,
                    name: format!("api{id}"),
                    path: path.into(),
                    methods: methods
                        .split(',')
                        .filter(|m| !m.is_empty())
                        .map(str::to_owned)
                        .collect(),
                })
                .collect(),
        }
    }

    fn router(apis: &[(usize, &str, &str)]) -> Router {
        Router::build(&[service("s", &[], None, apis)]).expect("valid")
    }

    fn hit(r: &Router, host: Option<&str>, path: &str, method: Method) -> Option<usize> {
        r.lookup(host, path, &method).map(|m| m.api)
    }

    fn get(r: &Router, path: &str) -> Option<usize> {
        hit(r, None, path, Method::GET)
    }

    fn build_errors(services: &[ServiceSpec]) -> Vec<String> {
        Router::build(services).expect_err("should fail")
    }

    #[test]
    fn exact_rule() {
        let r = router(&[(1, "=/user", "")]);
        let m = r.lookup(None, "/user", &Method::GET).unwrap();
        assert_eq!((m.api, m.matched_len, m.path), (1, 5, "/user"));
        assert_eq!(get(&r, "/user/"), None);
        assert_eq!(get(&r, "/users"), None);
        assert_eq!(get(&r, "/"), None);
    }

    #[test]
    fn plain_prefix_is_raw_string_and_longest_wins() {
        let r = router(&[(1, "/user", ""), (2, "/user/test", ""), (3, "/", "")]);
        assert_eq!(get(&r, "/user"), Some(1));
        assert_eq!(get(&r, "/usertest"), Some(1));
        assert_eq!(get(&r, "/user/test/a"), Some(2));
        assert_eq!(get(&r, "/user/tes"), Some(1));
        assert_eq!(get(&r, "/other"), Some(3));
        let m = r.lookup(None, "/user/test/a", &Method::GET).unwrap();
        assert_eq!(m.matched_len, "/user/test".len());
    }

    #[test]
    fn prefix_tree_splits_and_shares_nodes() {
        let r = router(&[
            (1, "/abc", ""),
            (2, "/abd", ""),
            (3, "/ab", ""),
            (4, "/abcdef", ""),
        ]);
        assert_eq!(get(&r, "/abcde"), Some(1));
        assert_eq!(get(&r, "/abcdefg"), Some(4));
        assert_eq!(get(&r, "/abd/x"), Some(2));
        assert_eq!(get(&r, "/abx"), Some(3));
        assert_eq!(get(&r, "/a"), None);
    }

    #[test]
    fn priority_exact_then_preferential_then_pattern_then_prefix() {
        let r = router(&[
            (1, "/user", ""),
            (2, "/user/{id}", ""),
            (3, "~^/user/[0-9]+$", ""),
            (4, "^~/user/4", ""),
            (5, "=/user/5", ""),
        ]);
        assert_eq!(get(&r, "/user/5"), Some(5)); // exact beats everything
        assert_eq!(get(&r, "/user/42"), Some(4)); // ^~ beats template and regex
        assert_eq!(get(&r, "/user/7"), Some(2)); // template declared before regex
        assert_eq!(get(&r, "/user/7/x"), Some(1)); // template is whole-path: prefix
        assert_eq!(get(&r, "/user"), Some(1));
    }

    #[test]
    fn preferential_longest_wins_and_beats_longer_plain_prefix() {
        let r = router(&[
            (1, "^~/static", ""),
            (2, "^~/static/img", ""),
            (3, "/static/img/big", ""),
        ]);
        assert_eq!(get(&r, "/static/css/a.css"), Some(1));
        assert_eq!(get(&r, "/static/img/a.png"), Some(2));
        assert_eq!(get(&r, "/static/img/big/a.png"), Some(2));
    }

    #[test]
    fn regex_and_templates_in_declaration_order() {
        let r = router(&[(1, "~^/v[0-9]+/", ""), (2, "/v1/{res}", "")]);
        assert_eq!(get(&r, "/v1/users"), Some(1));
        let r = router(&[(2, "/v1/{res}", ""), (1, "~^/v[0-9]+/", "")]);
        assert_eq!(get(&r, "/v1/users"), Some(2));
        assert_eq!(get(&r, "/v2/users"), Some(1));
    }

    #[test]
    fn regex_is_anchored_at_start_only_and_captures_named_groups() {
        let r = router(&[
            (1, "~/v(?P<ver>[0-9]+)/users", ""),
            (2, "~*^/CaseLess$", ""),
        ]);
        let m = r.lookup(None, "/v12/users/7", &Method::GET).unwrap();
        assert_eq!(m.api, 1);
        assert_eq!(m.params, vec![("ver", "12")]);
        assert_eq!(m.matched_len, "/v12/users".len());
        assert_eq!(get(&r, "/x/v12/users"), None); // anchored at the start
        assert_eq!(get(&r, "/caseless"), Some(2));
        assert_eq!(get(&r, "/caseless/x"), None);
    }

    #[test]
    fn regex_without_usable_literal_is_still_found() {
        let r = router(&[
            (1, "~^/(a|b)/x", ""),
            (2, "~^/ab?c", ""),
            (3, "~/item\\.json", ""),
            (4, "~^/users/(?P<id>\\d+)", ""),
        ]);
        assert_eq!(get(&r, "/b/x"), Some(1));
        assert_eq!(get(&r, "/ac"), Some(2));
        assert_eq!(get(&r, "/abc"), Some(2));
        assert_eq!(get(&r, "/item.json"), Some(3));
        assert_eq!(get(&r, "/users/9"), Some(4));
        assert_eq!(regex_literal_prefix("^/users/(?P<id>\\d+)"), "/users/");
        assert_eq!(regex_literal_prefix("^/ab?c"), "/a");
        assert_eq!(regex_literal_prefix("/a|/b"), "");
    }

    #[test]
    fn patterns_under_nested_literals_keep_declaration_order() {
        let r = router(&[
            (1, "/a/b/{x}", "POST"),
            (2, "~^/a/", ""),
            (3, "/a/b/{x}", "GET"),
            (4, "~*^/A/B", ""),
        ]);
        assert_eq!(hit(&r, None, "/a/b/c", Method::POST), Some(1));
        assert_eq!(hit(&r, None, "/a/b/c", Method::GET), Some(2));
        assert_eq!(hit(&r, None, "/A/b/c", Method::GET), Some(4));
        // More nested literals along one path than the merge keeps on the stack.
        let paths: Vec<String> = (1..=20).map(|n| format!("~^{}$", "/n".repeat(n))).collect();
        let mut apis: Vec<(usize, &str, &str)> = paths
            .iter()
            .enumerate()
            .map(|(i, p)| (i, p.as_str(), ""))
            .collect();
        apis.push((99, "~^/n", ""));
        let r = router(&apis);
        assert_eq!(get(&r, &"/n".repeat(18)), Some(17));
        assert_eq!(get(&r, &"/n".repeat(25)), Some(99));
    }

    #[test]
    fn template_params_and_whole_path_semantics() {
        let r = router(&[(1, "/pet/{petid}/photo/{n}", ""), (2, "/pet/{petid}", "")]);
        let m = r.lookup(None, "/pet/42/photo/3", &Method::GET).unwrap();
        assert_eq!(m.api, 1);
        assert_eq!(m.params, vec![("petid", "42"), ("n", "3")]);
        assert_eq!(m.matched_len, m.path.len());
        let m = r.lookup(None, "/pet/abc%2F1", &Method::GET).unwrap();
        assert_eq!((m.api, m.params.clone()), (2, vec![("petid", "abc%2F1")]));
        assert_eq!(get(&r, "/pet/"), None); // empty segment
        assert_eq!(get(&r, "/pet/1/"), None); // trailing slash is another path
        assert_eq!(get(&r, "/pet/1/photo"), None);
        let r = router(&[(3, "/{any}/", "")]);
        assert_eq!(get(&r, "/zoo/"), Some(3));
        assert_eq!(get(&r, "/pet/1/"), None);
        assert_eq!(get(&r, "//"), None);
    }

    #[test]
    fn non_param_matches_do_not_allocate_params() {
        let r = router(&[(1, "=/a", ""), (2, "/b", ""), (3, "/c/{x}", "")]);
        for p in ["/a", "/bb"] {
            assert_eq!(
                r.lookup(None, p, &Method::GET).unwrap().params.capacity(),
                0
            );
        }
    }

    #[test]
    fn method_mismatch_falls_through_to_lower_priority() {
        let r = router(&[
            (1, "=/user", "POST"),
            (2, "^~/user", "PUT"),
            (3, "/user/{id}", "DELETE"),
            (4, "/user/", "PATCH"),
            (5, "/user", "GET,HEAD"),
            (6, "=/user", "get"),
        ]);
        assert_eq!(hit(&r, None, "/user", Method::POST), Some(1));
        assert_eq!(hit(&r, None, "/user", Method::GET), Some(6));
        assert_eq!(hit(&r, None, "/user/1", Method::PUT), Some(2));
        assert_eq!(hit(&r, None, "/user/1", Method::DELETE), Some(3));
        assert_eq!(hit(&r, None, "/user/1", Method::PATCH), Some(4));
        assert_eq!(hit(&r, None, "/user/1", Method::HEAD), Some(5)); // shorter prefix
        assert_eq!(hit(&r, None, "/user/1", Method::OPTIONS), None);
        assert_eq!(hit(&r, None, "/other", Method::GET), None);
    }

    #[test]
    fn any_and_empty_methods_match_everything() {
        let r = router(&[(1, "/a", "ANY"), (2, "/b", "")]);
        let custom = Method::from_bytes(b"PURGE").unwrap();
        for m in [Method::GET, Method::OPTIONS, Method::TRACE, custom] {
            assert_eq!(hit(&r, None, "/a", m.clone()), Some(1));
            assert_eq!(hit(&r, None, "/b", m), Some(2));
        }
        let r = router(&[(1, "/a", "GET,POST,PUT,DELETE,PATCH,HEAD,OPTIONS")]);
        assert_eq!(hit(&r, None, "/a", Method::TRACE), None);
    }

    #[test]
    fn hosts_exact_then_wildcard_then_any() {
        let r = Router::build(&[
            service("anyhost", &[], None, &[(1, "/", "")]),
            service("wild", &["*.example.com"], None, &[(2, "/", "")]),
            service("deepwild", &["*.api.example.com"], None, &[(3, "/", "")]),
            service(
                "exact",
                &["www.example.com", "other.test"],
                None,
                &[(4, "/only", "")],
            ),
        ])
        .unwrap();
        assert_eq!(
            hit(&r, Some("www.example.com"), "/only/x", Method::GET),
            Some(4)
        );
        // exact host, but no rule matches: next tier (wildcard) answers
        assert_eq!(hit(&r, Some("www.example.com"), "/x", Method::GET), Some(2));
        assert_eq!(hit(&r, Some("other.test"), "/x", Method::GET), Some(1));
        assert_eq!(hit(&r, Some("a.example.com"), "/x", Method::GET), Some(2));
        assert_eq!(hit(&r, Some("a.b.example.com"), "/x", Method::GET), Some(2));
        assert_eq!(
            hit(&r, Some("v1.api.example.com"), "/x", Method::GET),
            Some(3)
        );
        assert_eq!(hit(&r, Some("example.com"), "/x", Method::GET), Some(1));
        assert_eq!(hit(&r, Some("badexample.com"), "/x", Method::GET), Some(1));
        assert_eq!(hit(&r, None, "/only", Method::GET), Some(1));
    }

    #[test]
    fn host_case_port_brackets_and_trailing_dot() {
        let r = Router::build(&[
            service("a", &["API.Example.com"], None, &[(1, "/", "")]),
            service("b", &["[::1]:8080"], None, &[(2, "/", "")]),
            service("c", &["*.Wild.Test"], None, &[(3, "/", "")]),
        ])
        .unwrap();
        for h in [
            "api.example.com",
            "API.EXAMPLE.COM:8443",
            "api.example.com.",
            " api.example.com ",
        ] {
            assert_eq!(hit(&r, Some(h), "/", Method::GET), Some(1), "{h}");
        }
        for h in ["[::1]", "[::1]:443", "::1"] {
            assert_eq!(hit(&r, Some(h), "/", Method::GET), Some(2), "{h}");
        }
        assert_eq!(hit(&r, Some("X.WILD.test:80"), "/", Method::GET), Some(3));
        assert_eq!(hit(&r, Some("unknown"), "/", Method::GET), None);
        let long = "a".repeat(300);
        assert_eq!(hit(&r, Some(&long), "/", Method::GET), None);
    }

    #[test]
    fn environment_prefix_is_required_and_stripped() {
        let r = Router::build(&[service(
            "s",
            &[],
            Some("release"),
            &[(1, "/apia/", ""), (2, "=/", "")],
        )])
        .unwrap();
        let m = r
            .lookup(None, "/release/apia/20171012/index.html", &Method::GET)
            .unwrap();
        assert_eq!(
            (m.api, m.path, m.matched_len),
            (1, "/apia/20171012/index.html", 6)
        );
        assert_eq!(get(&r, "/apia/x"), None);
        assert_eq!(get(&r, "/releasex/apia/x"), None);
        assert_eq!(get(&r, "/prepub/apia/x"), None);
        let m = r.lookup(None, "/release", &Method::GET).unwrap();
        assert_eq!((m.api, m.path), (2, "/"));
        assert_eq!(get(&r, "/release/"), Some(2));
    }

    #[test]
    fn environments_and_plain_services_share_a_host() {
        let r = Router::build(&[
            service("plain", &[], None, &[(1, "/", "")]),
            service("rel", &[], Some("release"), &[(2, "/a", "")]),
            service("test", &[], Some("test"), &[(3, "/a", "")]),
        ])
        .unwrap();
        assert_eq!(get(&r, "/release/a"), Some(2));
        assert_eq!(get(&r, "/test/a"), Some(3));
        assert_eq!(get(&r, "/release/b"), Some(1)); // falls back to the plain service
        assert_eq!(get(&r, "/a"), Some(1));
    }

    #[test]
    fn rules_of_services_on_one_host_compete_by_priority() {
        let r = Router::build(&[
            service("wide", &[], None, &[(1, "/", "")]),
            service("narrow", &[], None, &[(2, "=/x", ""), (3, "/y", "")]),
        ])
        .unwrap();
        assert_eq!(get(&r, "/x"), Some(2));
        assert_eq!(get(&r, "/yz"), Some(3));
        assert_eq!(get(&r, "/z"), Some(1));
    }

    #[test]
    fn build_errors_name_service_api_and_path() {
        let errs = build_errors(&[service(
            "svc",
            &[],
            None,
            &[
                (1, "", ""),
                (2, "user", ""),
                (3, "~^/(unclosed", ""),
                (4, "/user/{id", ""),
                (5, "/user/a{id}", ""),
                (6, "/user/{}", ""),
                (7, "/user/{id}/{id}", ""),
                (8, "/ok", "FETCH"),
                (9, "=user", ""),
                (10, "^~", ""),
                (11, "=/a/{x}", ""),
                (12, "/a?b=1", ""),
                (13, "/a b", ""),
                (14, "~", ""),
            ],
        )]);
        assert_eq!(errs.len(), 14, "{errs:#?}");
        assert!(
            errs[0].starts_with("service svc / api api1 / path \"\": empty path"),
            "{errs:#?}"
        );
        assert!(errs[2].contains("api3") && errs[2].contains("bad regular expression"));
        assert!(errs[7].contains("unknown method \"FETCH\""));
        for (i, e) in errs.iter().enumerate() {
            assert!(e.starts_with("service svc / api api"), "{i}: {e}");
        }
    }

    #[test]
    fn duplicate_rules_with_overlapping_methods_are_errors() {
        let errs = build_errors(&[service(
            "svc",
            &[],
            None,
            &[
                (1, "/a", "GET"),
                (2, "/a", "GET,POST"),
                (3, "/t/{id}", ""),
                (4, "/t/{name}", "PUT"),
            ],
        )]);
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert!(errs[0].contains("api api2") && errs[0].contains("api api1"));
        assert!(errs[1].contains("api api4") && errs[1].contains("api api3"));
        // Disjoint methods, or different kinds, are fine.
        router(&[
            (1, "/a", "GET"),
            (2, "/a", "POST"),
            (3, "=/a", "GET"),
            (4, "^~/a", "GET"),
        ]);
        // Same rule on different hosts is fine; on the same host it is not.
        Router::build(&[
            service("one", &["a.test"], None, &[(1, "/a", "")]),
            service("two", &["b.test"], None, &[(2, "/a", "")]),
            service("three", &[], Some("release"), &[(3, "/a", "")]),
            service("four", &[], None, &[(4, "/a", "")]),
        ])
        .unwrap();
        let errs = build_errors(&[
            service("one", &["a.test"], None, &[(1, "/a", "")]),
            service("two", &["A.test:80"], None, &[(2, "/a", "GET")]),
        ]);
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(errs[0].starts_with("service two / api api2"), "{errs:#?}");
    }

    #[test]
    fn bad_hosts_and_environments_are_errors() {
        let errs = build_errors(&[
            service("h", &["*", "a/b", "*.", "x.*.com", ""], None, &[]),
            service("e", &[], Some("re/lease"), &[]),
            service("f", &[], Some(""), &[]),
        ]);
        assert_eq!(errs.len(), 7, "{errs:#?}");
        assert!(errs[0].starts_with("service h: host \"*\""));
        assert!(errs[5].starts_with("service e: environment"));
    }

    fn m<'a>(path: &'a str, matched_len: usize, params: Vec<(&'a str, &'a str)>) -> RouteMatch<'a> {
        RouteMatch {
            api: 0,
            params,
            path,
            matched_len,
        }
    }

    #[test]
    fn compose_spec_examples() {
        let r = Router::build(&[service("s", &[], Some("release"), &[(1, "/apia/", "")])]).unwrap();
        let hit = r
            .lookup(None, "/release/apia/20171012/index.html", &Method::GET)
            .unwrap();
        assert_eq!(compose_backend_path("", &hit), "/apia/20171012/index.html");
        assert_eq!(
            compose_backend_path("/endpoint/", &hit),
            "/endpoint/20171012/index.html"
        );
        assert_eq!(
            compose_backend_path("/endpoint", &hit),
            "/endpoint/20171012/index.html"
        );

        let r = router(&[(1, "/pet/{petid}", "")]);
        let hit = r.lookup(None, "/pet/42", &Method::GET).unwrap();
        assert_eq!(compose_backend_path("/path/{petid}", &hit), "/path/42");
        assert_eq!(
            compose_backend_path("/path/{petid}/{other}", &hit),
            "/path/42/{other}"
        );
        assert_eq!(compose_backend_path("", &hit), "/pet/42");
    }

    #[test]
    fn compose_joins_without_double_slash() {
        // plain prefix `/apia` hit by `/apia/x`
        assert_eq!(
            compose_backend_path("/b/", &m("/apia/x", 5, vec![])),
            "/b/x"
        );
        assert_eq!(compose_backend_path("/b", &m("/apia/x", 5, vec![])), "/b/x");
        // raw-string prefix `/user` hit by `/usertest`
        assert_eq!(
            compose_backend_path("/u", &m("/usertest", 5, vec![])),
            "/utest"
        );
        // exact and whole matches: the back-end path as written
        assert_eq!(compose_backend_path("/b/", &m("/apia", 5, vec![])), "/b/");
        assert_eq!(compose_backend_path("/", &m("/a/b/c", 2, vec![])), "/b/c");
        assert_eq!(compose_backend_path("b", &m("/a/c", 3, vec![])), "/b/c");
        // regex: named groups substitute, the tail after the match is kept
        let r = router(&[(1, "~^/v(?P<ver>[0-9]+)/users", "")]);
        let hit = r.lookup(None, "/v2/users/7", &Method::GET).unwrap();
        assert_eq!(
            compose_backend_path("/api/{ver}/people", &hit),
            "/api/2/people/7"
        );
    }

    #[test]
    fn backend_path_params_are_checked() {
        assert!(check_backend_path("/pet/{petid}", "/path/{petid}").is_ok());
        assert!(check_backend_path("~^/v(?P<ver>\\d+)", "/api/{ver}").is_ok());
        assert!(check_backend_path("/pet/{petid}", "/path/{id}").is_err());
        assert!(check_backend_path("/pet/{petid}", "/path/{petid").is_err());
        assert!(check_backend_path("/pet", "/path/}").is_err());
        assert_eq!(param_names("/a/{x}/b/{y}").unwrap(), vec!["x", "y"]);
    }
}
