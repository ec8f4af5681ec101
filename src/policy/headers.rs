//! Header rules of an API (`[services.apis.request_headers]` and
//! `[services.apis.response_headers]`): `remove`, `rename` (requests only),
//! `set` and `add`, applied in that order once the caller is authenticated.
//! Values are templates compiled once, with `${key_id}`, `${app}`,
//! `${client_ip}` and `${request_id}`.
//!
//! The headers keygate sets itself (identity headers, `X-Forwarded-*`,
//! `X-Real-IP`, `X-Request-ID`, framing) cannot be named: that is a config
//! error, so no rule can overwrite them.

use crate::config::raw::RawHeaderRules;
use crate::reserved::ReservedHeaders;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

/// One piece of a value template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    KeyId,
    App,
    ClientIp,
    RequestId,
}

/// A header value with `${...}` variables, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
    /// The whole value when it has no variable.
    fixed: Option<HeaderValue>,
}

/// What a template can refer to. Unauthenticated requests render
/// `${key_id}` and `${app}` as empty.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    pub key_id: Option<&'a str>,
    pub app: Option<&'a str>,
    pub client_ip: IpAddr,
    pub request_id: &'a str,
}

impl Template {
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut pieces = vec![];
        let mut rest = s;
        while let Some(i) = rest.find("${") {
            if i > 0 {
                pieces.push(Piece::Text(rest[..i].to_string()));
            }
            let after = &rest[i + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("unterminated ${{ in {s:?}"))?;
            pieces.push(match &after[..end] {
                "key_id" => Piece::KeyId,
                "app" => Piece::App,
                "client_ip" => Piece::ClientIp,
                "request_id" => Piece::RequestId,
                other => {
                    return Err(format!(
                        "unknown variable ${{{other}}} (known: key_id, app, client_ip, request_id)"
                    ))
                }
            });
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        for p in &pieces {
            if let Piece::Text(t) = p {
                HeaderValue::from_str(t).map_err(|_| format!("{s:?} is not a header value"))?;
            }
        }
        let fixed = match pieces.as_slice() {
            [] => Some(HeaderValue::from_static("")),
            [Piece::Text(t)] => HeaderValue::from_str(t).ok(),
            _ => None,
        };
        Ok(Template { pieces, fixed })
    }

    /// The value for one request; `None` if a variable made it invalid.
    pub fn render(&self, vars: &Vars<'_>) -> Option<HeaderValue> {
        if let Some(v) = &self.fixed {
            return Some(v.clone());
        }
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::KeyId => out.push_str(vars.key_id.unwrap_or("")),
                Piece::App => out.push_str(vars.app.unwrap_or("")),
                Piece::ClientIp => out.push_str(&vars.client_ip.to_string()),
                Piece::RequestId => out.push_str(vars.request_id),
            }
        }
        HeaderValue::from_str(&out).ok()
    }
}

/// Which side a rule set is for (what it may name differs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Request,
    Response,
}

#[derive(Debug, Clone, Default)]
pub struct HeaderRules {
    remove: Vec<HeaderName>,
    rename: Vec<(HeaderName, HeaderName)>,
    set: Vec<(HeaderName, Template)>,
    add: Vec<(HeaderName, Template)>,
}

impl HeaderRules {
    /// Compiles a rule table; each problem is one message. `None` when empty.
    pub fn compile(
        raw: &RawHeaderRules,
        side: Side,
        reserved: &ReservedHeaders,
    ) -> Result<Option<HeaderRules>, Vec<String>> {
        let mut errors = vec![];
        if side == Side::Response && !raw.rename.is_empty() {
            errors.push("rename: only request_headers can rename".to_string());
        }
        let name = |what: &str, n: &str, errors: &mut Vec<String>| {
            checked_name(what, n, side, reserved, errors)
        };
        let mut rules = HeaderRules {
            remove: raw
                .remove
                .iter()
                .filter_map(|n| name("remove", n, &mut errors))
                .collect(),
            ..HeaderRules::default()
        };
        for (from, to) in raw.rename.iter().filter(|_| side == Side::Request) {
            if let (Some(f), Some(t)) = (
                name("rename", from, &mut errors),
                name("rename", to, &mut errors),
            ) {
                rules.rename.push((f, t));
            }
        }
        for (what, map) in [("set", &raw.set), ("add", &raw.add)] {
            for (n, v) in map {
                let h = name(what, n, &mut errors);
                match (h, Template::parse(v)) {
                    (Some(h), Ok(t)) if what == "set" => rules.set.push((h, t)),
                    (Some(h), Ok(t)) => rules.add.push((h, t)),
                    (_, Err(m)) => errors.push(format!("{what}: {n}: {m}")),
                    (None, Ok(_)) => {}
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let empty = rules.remove.is_empty()
            && rules.rename.is_empty()
            && rules.set.is_empty()
            && rules.add.is_empty();
        Ok((!empty).then_some(rules))
    }

    pub fn apply(&self, h: &mut HeaderMap, vars: &Vars<'_>) {
        for n in &self.remove {
            h.remove(n);
        }
        for (from, to) in &self.rename {
            if let http::header::Entry::Occupied(e) = h.entry(from) {
                let (_, values) = e.remove_entry_mult();
                let values: Vec<HeaderValue> = values.collect();
                h.remove(to);
                for v in values {
                    h.append(to.clone(), v);
                }
            }
        }
        for (n, t) in &self.set {
            match t.render(vars) {
                Some(v) => {
                    h.insert(n.clone(), v);
                }
                None => {
                    h.remove(n);
                }
            }
        }
        for (n, t) in &self.add {
            if let Some(v) = t.render(vars) {
                h.append(n.clone(), v);
            }
        }
    }
}

fn checked_name(
    what: &str,
    n: &str,
    side: Side,
    reserved: &ReservedHeaders,
    errors: &mut Vec<String>,
) -> Option<HeaderName> {
    match HeaderName::from_bytes(n.as_bytes()) {
        Err(_) => {
            errors.push(format!("{what}: {n:?} is not a header name"));
            None
        }
        Ok(h) if is_protected(&h, side, reserved) => {
            errors.push(format!(
                "{what}: {n:?} is set by keygate itself and cannot be changed by a rule"
            ));
            None
        }
        Ok(h) => Some(h),
    }
}

/// Headers no rule may name.
fn is_protected(h: &HeaderName, side: Side, reserved: &ReservedHeaders) -> bool {
    let n = h.as_str();
    let framing = matches!(
        n,
        "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "upgrade"
            | "te"
            | "trailer"
            | "x-request-id"
    );
    match side {
        Side::Request => {
            framing
                || n == "host"
                || n == "x-real-ip"
                || n.starts_with("x-forwarded-")
                || n == "forwarded"
                || reserved.is_reserved(h)
        }
        Side::Response => framing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn raw(
        set: &[(&str, &str)],
        add: &[(&str, &str)],
        remove: &[&str],
        rename: &[(&str, &str)],
    ) -> RawHeaderRules {
        let m = |p: &[(&str, &str)]| -> BTreeMap<String, String> {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        RawHeaderRules {
            set: m(set),
            add: m(add),
            remove: remove.iter().map(|s| s.to_string()).collect(),
            rename: m(rename),
        }
    }

    fn vars() -> Vars<'static> {
        Vars {
            key_id: Some("k1"),
            app: Some("shop"),
            client_ip: "192.0.2.7".parse().expect("ip"),
            request_id: "rid-1",
        }
    }

    #[test]
    fn templates_render_variables() {
        let t = Template::parse("${app}/${key_id} from ${client_ip} (${request_id})").expect("t");
        assert_eq!(
            t.render(&vars()).expect("value"),
            "shop/k1 from 192.0.2.7 (rid-1)"
        );
        let anon = Vars {
            key_id: None,
            app: None,
            ..vars()
        };
        assert_eq!(t.render(&anon).expect("value"), "/ from 192.0.2.7 (rid-1)");
        assert!(Template::parse("${nope}").is_err());
        assert!(Template::parse("${app").is_err());
        assert!(Template::parse("a\nb").is_err());
        assert_eq!(
            Template::parse("plain $ {x}")
                .expect("t")
                .render(&vars())
                .expect("v"),
            "plain $ {x}"
        );
    }

    #[test]
    fn rules_apply_in_order() {
        let r = HeaderRules::compile(
            &raw(
                &[("x-caller", "${key_id}"), ("x-new", "n")],
                &[("x-tag", "a"), ("x-old-name", "added")],
                &["x-drop"],
                &[("x-old-name", "x-new-name")],
            ),
            Side::Request,
            &ReservedHeaders::default(),
        )
        .expect("compile")
        .expect("rules");
        let mut h = HeaderMap::new();
        h.insert("x-drop", HeaderValue::from_static("1"));
        h.insert("x-caller", HeaderValue::from_static("forged"));
        h.append("x-old-name", HeaderValue::from_static("v1"));
        h.append("x-old-name", HeaderValue::from_static("v2"));
        h.insert("x-tag", HeaderValue::from_static("client"));
        r.apply(&mut h, &vars());
        assert!(!h.contains_key("x-drop"));
        assert_eq!(h["x-caller"], "k1");
        assert_eq!(h["x-new"], "n");
        let renamed: Vec<_> = h.get_all("x-new-name").iter().collect();
        assert_eq!(renamed, ["v1", "v2"]);
        assert_eq!(h["x-old-name"], "added");
        let tags: Vec<_> = h.get_all("x-tag").iter().collect();
        assert_eq!(tags, ["client", "a"]);
    }

    #[test]
    fn protected_names_are_config_errors() {
        let reserved = ReservedHeaders::default();
        for bad in [
            "x-keygate-key-id",
            "X-Keygate-App",
            "x-forwarded-for",
            "x-real-ip",
            "x-request-id",
            "host",
            "x-usageplan-id",
        ] {
            let e =
                HeaderRules::compile(&raw(&[(bad, "v")], &[], &[], &[]), Side::Request, &reserved)
                    .expect_err(bad);
            assert_eq!(e.len(), 1, "{bad}: {e:?}");
            assert!(e[0].contains("set by keygate"), "{e:?}");
        }
        let e = HeaderRules::compile(
            &raw(&[], &[], &["x-a"], &[("a", "b")]),
            Side::Response,
            &reserved,
        )
        .expect_err("rename on response");
        assert_eq!(
            e,
            vec!["rename: only request_headers can rename".to_string()]
        );
        assert!(
            HeaderRules::compile(&raw(&[], &[], &[], &[]), Side::Response, &reserved)
                .expect("empty")
                .is_none()
        );
    }
}
