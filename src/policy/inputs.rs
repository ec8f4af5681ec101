//! Declared front-end parameters of an API (`[[services.apis.params]]`): the
//! gateway documents' 入参 with their checks, and the back-end parameter mapping.
//!
//! A request is checked right after routing, before authentication reads a byte
//! of its body: a missing required parameter is refused with 400
//! `MissingParameter`, a value of the wrong type or outside its checks with 400
//! `InvalidParameter`. The check yields a [`Forwarding`]: what the back-end
//! request needs changed (a renamed or moved parameter, a default value, a
//! `${param.NAME}` constant), applied once the request is authenticated.

use crate::reject::Reject;
use crate::route::RouteMatch;
use http::{HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use regex::Regex;
use std::sync::Arc;

mod compile;

// Where a parameter is read or sent, and the type of its value: the closed
// sets of the config, checked when the parameters are compiled.
use crate::config::raw::{ParamPosition as In, ParamType as Kind};

impl Kind {
    fn numeric(self) -> bool {
        matches!(self, Kind::Int | Kind::Long | Kind::Float | Kind::Double)
    }

    /// The value as a number (numeric kinds), or why it is not one.
    fn number(self, v: &str) -> Result<f64, &'static str> {
        let v = v.trim();
        match self {
            Kind::Int => v.parse::<i32>().map(f64::from).map_err(|_| "an int"),
            Kind::Long => v.parse::<i64>().map(|n| n as f64).map_err(|_| "a long"),
            Kind::Float => match v.parse::<f32>() {
                Ok(f) if f.is_finite() => Ok(f64::from(f)),
                _ => Err("a float"),
            },
            Kind::Double => match v.parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(f),
                _ => Err("a double"),
            },
            Kind::String | Kind::Boolean => Err("a number"),
        }
    }
}

/// One declared parameter, compiled.
#[derive(Debug)]
struct Param {
    name: Arc<str>,
    /// Lower-case for headers.
    header: Option<HeaderName>,
    at: In,
    kind: Kind,
    required: bool,
    default: Option<String>,
    min: Option<f64>,
    max: Option<f64>,
    max_length: Option<usize>,
    allowed: Vec<String>,
    regex: Option<Regex>,
    backend: Option<Target>,
}

/// Where a parameter's value goes on the back-end request.
#[derive(Debug, Clone)]
enum Target {
    Query(Arc<str>),
    Header(HeaderName),
    Path(Arc<str>),
}

/// A `const_query` / `const_headers` value referring to parameters.
#[derive(Debug)]
struct Templated {
    target: Target,
    parts: Vec<Piece>,
}

#[derive(Debug)]
enum Piece {
    Lit(String),
    /// Index into `Inputs::params`.
    Param(usize),
}

/// The declared parameters of one API and the constants built from them.
#[derive(Debug, Default)]
pub struct Inputs {
    params: Vec<Param>,
    consts: Vec<Templated>,
}

/// What the back-end request needs changed, from one checked request.
#[derive(Debug, Default)]
pub struct Forwarding {
    remove_query: Vec<Arc<str>>,
    remove_headers: Vec<HeaderName>,
    add_query: Vec<(Arc<str>, String)>,
    add_headers: Vec<(HeaderName, HeaderValue)>,
    /// `{name}` values for the back-end path template (already encoded).
    path_params: Vec<(Arc<str>, String)>,
}

/// Characters escaped in a value placed in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// True when a constant's value refers to a declared parameter: such constants
/// are filled per request by [`Inputs`], not sent verbatim.
pub fn is_param_ref(value: &str) -> bool {
    value.contains("${param.")
}

impl Inputs {
    pub fn is_empty(&self) -> bool {
        self.params.is_empty() && self.consts.is_empty()
    }

    /// Checks a routed request; returns what the back-end request needs changed.
    pub fn check(
        &self,
        path_params: &[(&str, &str)],
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Forwarding, Reject> {
        let mut out = Forwarding::default();
        if self.is_empty() {
            return Ok(out);
        }
        let mut values: Vec<Option<String>> = Vec::with_capacity(self.params.len());
        for p in &self.params {
            let given = match p.at {
                In::Query => query.and_then(|q| {
                    form_urlencoded::parse(q.as_bytes())
                        .find(|(k, _)| *k == *p.name)
                        .map(|(_, v)| v.into_owned())
                }),
                In::Header => match p.header.as_ref().and_then(|h| headers.get(h)) {
                    Some(v) => Some(
                        v.to_str()
                            .map_err(|_| invalid(p, "is not visible ASCII"))?
                            .to_owned(),
                    ),
                    None => None,
                },
                In::Path => path_params
                    .iter()
                    .find(|(n, _)| *n == &*p.name)
                    .map(|(_, v)| percent_decode_str(v).decode_utf8_lossy().into_owned()),
            };
            let from_request = given.is_some();
            let value = match given {
                Some(v) => {
                    p.validate(&v)?;
                    Some(v)
                }
                None if p.required => {
                    return Err(Reject::MissingParameter(format!(
                        "missing required {} parameter {:?}",
                        position_name(p.at),
                        &*p.name
                    )))
                }
                None => p.default.clone(),
            };
            if let (Some(v), Some(t)) = (&value, &p.backend) {
                if from_request {
                    match p.at {
                        In::Query => out.remove_query.push(p.name.clone()),
                        In::Header => out.remove_headers.extend(p.header.clone()),
                        In::Path => {}
                    }
                }
                out.put(t, v).map_err(|m| invalid(p, m))?;
            } else if let (Some(v), None, false) = (&value, &p.backend, from_request) {
                // A default value goes where the parameter would have been.
                let t = p.own_target();
                out.put(&t, v).map_err(|m| invalid(p, m))?;
            }
            values.push(value);
        }
        for c in &self.consts {
            let mut s = String::new();
            let mut complete = true;
            for piece in &c.parts {
                match piece {
                    Piece::Lit(l) => s.push_str(l),
                    Piece::Param(i) => match values.get(*i).and_then(|v| v.as_deref()) {
                        Some(v) => s.push_str(v),
                        None => complete = false,
                    },
                }
            }
            if complete {
                out.put(&c.target, &s)
                    .map_err(|m| Reject::BadRequest(format!("parameter value {m}")))?;
            }
        }
        Ok(out)
    }
}

impl Forwarding {
    fn put(&mut self, t: &Target, v: &str) -> Result<(), &'static str> {
        match t {
            Target::Query(n) => self.add_query.push((n.clone(), v.to_owned())),
            Target::Header(h) => {
                let v = HeaderValue::from_str(v).map_err(|_| "cannot be sent as a header")?;
                self.remove_headers.push(h.clone());
                self.add_headers.push((h.clone(), v));
            }
            Target::Path(n) => self
                .path_params
                .push((n.clone(), utf8_percent_encode(v, SEGMENT).to_string())),
        }
        Ok(())
    }

    /// The back-end path: `compose` over the route's captures plus the values
    /// sent to the back-end path.
    pub fn backend_path(
        &self,
        template: &str,
        m: &RouteMatch<'_>,
        compose: impl Fn(&str, &RouteMatch<'_>) -> String,
    ) -> String {
        if self.path_params.is_empty() {
            return compose(template, m);
        }
        let mut m2 = m.clone();
        // Declared values win over same-named captures: they come first.
        let mut params: Vec<(&str, &str)> = self
            .path_params
            .iter()
            .map(|(n, v)| (&**n, v.as_str()))
            .collect();
        params.extend(m.params.iter().copied());
        m2.params = params;
        compose(template, &m2)
    }

    /// Applies the query and header changes to the prepared back-end request.
    pub fn apply(&self, uri: &mut http::Uri, headers: &mut HeaderMap) -> Result<(), Reject> {
        for h in &self.remove_headers {
            headers.remove(h);
        }
        for (k, v) in &self.add_headers {
            headers.append(k.clone(), v.clone());
        }
        if self.remove_query.is_empty() && self.add_query.is_empty() {
            return Ok(());
        }
        let (path, query) = match uri.path_and_query() {
            Some(pq) => (pq.path(), pq.query().unwrap_or("")),
            None => ("/", ""),
        };
        let mut q = String::with_capacity(query.len() + 32);
        for seg in query.split('&').filter(|s| !s.is_empty()) {
            let name = seg.split('=').next().unwrap_or("");
            let name: String = form_urlencoded::parse(name.as_bytes())
                .next()
                .map(|(k, _)| k.into_owned())
                .unwrap_or_default();
            if self.remove_query.iter().any(|r| **r == *name) {
                continue;
            }
            if !q.is_empty() {
                q.push('&');
            }
            q.push_str(seg);
        }
        let mut ser = form_urlencoded::Serializer::for_suffix(q, 0);
        for (k, v) in &self.add_query {
            ser.append_pair(k, v);
        }
        let q = ser.finish();
        let pq = if q.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{q}")
        };
        *uri = pq
            .parse()
            .map_err(|_| Reject::BadRequest("request path cannot be forwarded".into()))?;
        Ok(())
    }
}

impl Param {
    fn validate(&self, v: &str) -> Result<(), Reject> {
        match self.kind {
            Kind::String => {}
            Kind::Boolean => {
                if !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false") {
                    return Err(invalid(self, "is not a boolean (true or false)"));
                }
            }
            k => {
                let n = k
                    .number(v)
                    .map_err(|what| invalid(self, &format!("is not {what}")))?;
                if self.min.is_some_and(|min| n < min) || self.max.is_some_and(|max| n > max) {
                    return Err(invalid(self, &format!("{v} is out of {}", self.range())));
                }
                if !self.allowed.is_empty()
                    && !self
                        .allowed
                        .iter()
                        .any(|a| k.number(a).is_ok_and(|x| x == n))
                {
                    return Err(invalid(self, "is not one of the allowed values"));
                }
            }
        }
        if let Some(max) = self.max_length {
            if v.chars().count() > max {
                return Err(invalid(self, &format!("is longer than {max} characters")));
            }
        }
        if self.kind == Kind::String
            && !self.allowed.is_empty()
            && !self.allowed.iter().any(|a| a == v)
        {
            return Err(invalid(self, "is not one of the allowed values"));
        }
        if let Some(re) = &self.regex {
            if !re.is_match(v) {
                return Err(invalid(self, "does not match its pattern"));
            }
        }
        Ok(())
    }

    fn range(&self) -> String {
        let show = |x: Option<f64>| x.map_or("…".to_string(), |x| x.to_string());
        format!("[{}, {}]", show(self.min), show(self.max))
    }

    fn own_target(&self) -> Target {
        match (self.at, &self.header) {
            (In::Header, Some(h)) => Target::Header(h.clone()),
            (In::Path, _) => Target::Path(self.name.clone()),
            _ => Target::Query(self.name.clone()),
        }
    }
}

fn invalid(p: &Param, why: &str) -> Reject {
    Reject::BadRequest(format!(
        "{} parameter {:?} {why}",
        position_name(p.at),
        &*p.name
    ))
}

fn position_name(at: In) -> &'static str {
    match at {
        In::Query => "query",
        In::Header => "header",
        In::Path => "path",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::RawParam;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    fn raw(toml_text: &str) -> Vec<RawParam> {
        #[derive(Deserialize)]
        struct W {
            params: Vec<RawParam>,
        }
        toml::from_str::<W>(toml_text).expect("toml").params
    }

    fn compile(t: &str) -> Result<Inputs, Vec<String>> {
        Inputs::compile(
            &raw(t),
            &["id".to_string()],
            Some("/b/{id}"),
            &BTreeMap::new(),
            &BTreeMap::new(),
        )
    }

    #[test]
    fn types_and_checks() {
        let i = compile(
            r#"
[[params]]
name = "n"
type = "int"
min = 1
max = 10
[[params]]
name = "s"
max_length = 3
enum = ["a", "bb"]
[[params]]
name = "b"
type = "boolean"
"#,
        )
        .expect("compiles");
        let h = HeaderMap::new();
        assert!(i.check(&[], Some("n=5&s=bb&b=true"), &h).is_ok());
        for bad in ["n=0", "n=11", "n=x", "n=2147483648", "s=ccc", "b=yes"] {
            let r = i.check(&[], Some(bad), &h);
            assert!(
                matches!(r, Err(Reject::BadRequest(_))),
                "{bad} should be invalid"
            );
        }
    }

    #[test]
    fn config_errors_are_named() {
        for (t, want) in [
            ("[[params]]\nname = \"x\"\ntype = \"str\"", "type"),
            ("[[params]]\nname = \"x\"\nmin = 1", "min and max"),
            ("[[params]]\nname = \"x\"\nin = \"path\"", "not captured"),
            (
                "[[params]]\nname = \"x\"\nrequired = true\ndefault = \"a\"",
                "optional",
            ),
            (
                "[[params]]\nname = \"x\"\ntype = \"int\"\ndefault = 99\nmax = 5",
                "fails its own checks",
            ),
            (
                "[[params]]\nname = \"x\"\nbackend_in = \"path\"",
                "must hold {x}",
            ),
            (
                "[[params]]\nname = \"x\"\nregex = \"(\"",
                "does not compile",
            ),
        ] {
            let e = compile(t).expect_err(t);
            assert!(e.iter().any(|m| m.contains(want)), "{t}: {e:?}");
        }
    }
}
