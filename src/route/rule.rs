//! Path rules: parsing, validation, duplicate detection, grouping by host.

use std::collections::HashMap;

use regex::{Regex, RegexBuilder};

use super::{normalize_host, parse_methods, ActionSet, HostKey, ServiceSpec};

pub(crate) enum RuleKind {
    Exact(String),
    Pref(String),
    Regex { re: Regex, ci: bool },
    Template(Vec<Seg>),
    Prefix(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seg {
    Lit(Box<str>),
    Param(Box<str>),
}

pub(crate) struct CompiledRule {
    pub(crate) api: usize,
    pub(crate) api_name: String,
    pub(crate) path: String,
    pub(crate) methods: u16,
    pub(crate) kind: RuleKind,
    /// Identity for duplicate detection (kind marker + normalized text).
    pub(crate) key: String,
    /// Literal text every matching path starts with (regex and template rules).
    pub(crate) literal: String,
    pub(crate) actions: ActionSet,
}

pub(crate) struct CompiledService {
    pub(crate) name: String,
    pub(crate) hosts: Vec<HostKey>,
    pub(crate) env: Option<String>,
    pub(crate) rules: Vec<CompiledRule>,
}

pub(crate) fn compile_service(s: &ServiceSpec, errors: &mut Vec<String>) -> CompiledService {
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
                actions: ActionSet::new(&api.actions),
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

pub(crate) fn parse_rule(path: &str) -> Result<RuleKind, String> {
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
pub(crate) fn regex_literal_prefix(p: &str) -> String {
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

pub(crate) fn check_duplicates(members: &[&CompiledService], errors: &mut Vec<String>) {
    let mut seen: HashMap<&str, Vec<(&CompiledService, &CompiledRule)>> = HashMap::new();
    for svc in members {
        for rule in &svc.rules {
            let list = seen.entry(rule.key.as_str()).or_default();
            for (other_svc, other) in list.iter() {
                let by_action = !rule.actions.is_any() || !other.actions.is_any();
                if by_action && rule.path != other.path {
                    errors.push(format!(
                        "service {} / api {} / path {:?}: APIs chosen by action must write the same rule identically (service {} / api {} has {:?})",
                        svc.name, rule.api_name, rule.path, other_svc.name, other.api_name, other.path
                    ));
                } else if other.methods & rule.methods != 0 && !by_action {
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

pub(crate) type GroupKey = (HostKey, Option<String>);

/// Services sharing a host key and an environment, in declaration order.
pub(crate) fn group_services(services: &[CompiledService]) -> Vec<(GroupKey, Vec<usize>)> {
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
