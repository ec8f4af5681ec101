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
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// `[[services.apis.params]]` as written in the config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawParam {
    pub name: String,
    /// query | header | path
    #[serde(rename = "in", default = "default_in")]
    pub position: String,
    /// string | int | long | float | double | boolean
    #[serde(rename = "type", default = "default_type")]
    pub kind: String,
    #[serde(default)]
    pub required: bool,
    pub default: Option<Scalar>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub max_length: Option<usize>,
    #[serde(rename = "enum", default)]
    pub allowed: Vec<Scalar>,
    pub regex: Option<String>,
    /// Name sent to the back end (default: `name`).
    pub backend_name: Option<String>,
    /// Position sent to the back end (default: `in`).
    pub backend_in: Option<String>,
}
fn default_in() -> String {
    "query".into()
}
fn default_type() -> String {
    "string".into()
}

/// A TOML scalar written for a default or an enum value, kept as text.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    fn text(&self) -> String {
        match self {
            Scalar::Text(s) => s.clone(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum In {
    Query,
    Header,
    Path,
}

impl In {
    fn parse(s: &str) -> Result<In, String> {
        match s {
            "query" => Ok(In::Query),
            "header" => Ok(In::Header),
            "path" => Ok(In::Path),
            other => Err(format!("{other:?} is not one of query, header, path")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    String,
    Int,
    Long,
    Float,
    Double,
    Boolean,
}

impl Kind {
    fn parse(s: &str) -> Result<Kind, String> {
        Ok(match s {
            "string" => Kind::String,
            "int" => Kind::Int,
            "long" => Kind::Long,
            "float" => Kind::Float,
            "double" => Kind::Double,
            "boolean" => Kind::Boolean,
            other => {
                return Err(format!(
                    "type {other:?} is not one of string, int, long, float, double, boolean"
                ))
            }
        })
    }

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

    /// Names that `params` send in the back-end path (`backend_in = "path"`), for
    /// the back-end path template check.
    pub fn backend_path_names(raw: &[RawParam]) -> Vec<&str> {
        raw.iter()
            .filter(|p| p.backend_in.as_deref() == Some("path"))
            .map(|p| p.backend_name.as_deref().unwrap_or(&p.name))
            .collect()
    }

    /// Compiles the parameters of one API. `captured`: the names the front path
    /// rule captures; `backend_path`: the back-end path template (None for a mock).
    pub fn compile(
        raw: &[RawParam],
        captured: &[String],
        backend_path: Option<&str>,
        const_query: &BTreeMap<String, String>,
        const_headers: &BTreeMap<String, String>,
    ) -> Result<Inputs, Vec<String>> {
        let mut errors = vec![];
        let mut params = vec![];
        let mut seen = HashSet::new();
        let mut targets = HashSet::new();
        for (i, r) in raw.iter().enumerate() {
            let at = format!("params[{i}] ({})", r.name);
            match compile_param(r, captured, backend_path) {
                Ok(p) => {
                    let front = (p.at as u8, p.name.to_ascii_lowercase_if(p.at == In::Header));
                    if !seen.insert(front) {
                        errors.push(format!("{at}: declared twice"));
                    }
                    if let Some(t) = &p.backend {
                        if !targets.insert(target_key(t)) {
                            errors.push(format!(
                                "{at}: another parameter is sent to the same back-end name and position"
                            ));
                        }
                    }
                    params.push(p);
                }
                Err(m) => errors.push(format!("{at}: {m}")),
            }
        }
        let mut consts = vec![];
        for (k, v) in const_query.iter().filter(|(_, v)| is_param_ref(v)) {
            match template(v, &params) {
                Ok(parts) => consts.push(Templated {
                    target: Target::Query(Arc::from(k.as_str())),
                    parts,
                }),
                Err(m) => errors.push(format!("const_query {k:?}: {m}")),
            }
        }
        for (k, v) in const_headers.iter().filter(|(_, v)| is_param_ref(v)) {
            let Ok(name) = HeaderName::from_bytes(k.as_bytes()) else {
                continue; // reported by the back-end compiler
            };
            match template(v, &params) {
                Ok(parts) => consts.push(Templated {
                    target: Target::Header(name),
                    parts,
                }),
                Err(m) => errors.push(format!("const_headers {k:?}: {m}")),
            }
        }
        if errors.is_empty() {
            Ok(Inputs { params, consts })
        } else {
            Err(errors)
        }
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

fn target_key(t: &Target) -> (u8, String) {
    match t {
        Target::Query(n) => (0, n.to_string()),
        Target::Header(h) => (1, h.as_str().to_owned()),
        Target::Path(n) => (2, n.to_string()),
    }
}

trait LowerIf {
    fn to_ascii_lowercase_if(&self, yes: bool) -> String;
}
impl LowerIf for Arc<str> {
    fn to_ascii_lowercase_if(&self, yes: bool) -> String {
        if yes {
            self.to_ascii_lowercase()
        } else {
            self.to_string()
        }
    }
}

fn compile_param(
    r: &RawParam,
    captured: &[String],
    backend_path: Option<&str>,
) -> Result<Param, String> {
    let at = In::parse(&r.position).map_err(|m| format!("in = {m}"))?;
    let kind = Kind::parse(&r.kind)?;
    if r.name.is_empty() || r.name.len() > 128 {
        return Err("name must be 1-128 characters".into());
    }
    let header = match at {
        In::Header => Some(
            HeaderName::from_bytes(r.name.as_bytes())
                .map_err(|_| "name is not a valid header name".to_string())?,
        ),
        _ => None,
    };
    if at == In::Path && !captured.contains(&r.name) {
        return Err(format!(
            "path parameter {:?} is not captured by the API's path rule (write it as {{{}}})",
            r.name, r.name
        ));
    }
    if at == In::Path && r.default.is_some() {
        // A captured segment is always present.
        return Err("a path parameter cannot have a default".into());
    }
    if (r.min.is_some() || r.max.is_some()) && !kind.numeric() {
        return Err("min and max are for int, long, float and double parameters".into());
    }
    if let (Some(a), Some(b)) = (r.min, r.max) {
        if a > b {
            return Err("min is greater than max".into());
        }
    }
    if r.max_length.is_some() && kind != Kind::String {
        return Err("max_length is for string parameters".into());
    }
    if r.max_length == Some(0) {
        return Err("max_length must be positive".into());
    }
    if !r.allowed.is_empty() && kind == Kind::Boolean {
        return Err("enum is not for boolean parameters".into());
    }
    if r.required && r.default.is_some() {
        return Err("default is only for optional parameters (required = false)".into());
    }
    let regex = match &r.regex {
        None => None,
        Some(re) => Some(
            Regex::new(&format!("^(?:{re})$"))
                .map_err(|e| format!("regex {re:?} does not compile: {e}"))?,
        ),
    };
    let allowed: Vec<String> = r.allowed.iter().map(Scalar::text).collect();
    for a in &allowed {
        if kind.numeric() {
            kind.number(a)
                .map_err(|what| format!("enum value {a:?} is not {what}"))?;
        }
    }
    let backend_in = match &r.backend_in {
        Some(s) => Some(In::parse(s).map_err(|m| format!("backend_in = {m}"))?),
        None => None,
    };
    let backend_name = r.backend_name.clone();
    let mapped =
        backend_in.is_some_and(|b| b != at) || backend_name.as_ref().is_some_and(|n| *n != r.name);
    let backend = if mapped {
        let to = backend_in.unwrap_or(at);
        let name = backend_name.unwrap_or_else(|| r.name.clone());
        if name.is_empty() {
            return Err("backend_name must not be empty".into());
        }
        Some(match to {
            In::Query => Target::Query(Arc::from(name.as_str())),
            In::Header => Target::Header(
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| "backend_name is not a valid header name".to_string())?,
            ),
            In::Path => {
                let placeholder = format!("{{{name}}}");
                match backend_path {
                    Some(bp) if bp.contains(&placeholder) => Target::Path(Arc::from(name.as_str())),
                    _ => {
                        return Err(format!(
                        "backend_in = \"path\": the back-end path must hold {placeholder} to receive it"
                    ))
                    }
                }
            }
        })
    } else {
        None
    };
    let mut p = Param {
        name: Arc::from(r.name.as_str()),
        header,
        at,
        kind,
        required: r.required,
        default: None,
        min: r.min,
        max: r.max,
        max_length: r.max_length,
        allowed,
        regex,
        backend,
    };
    if let Some(d) = &r.default {
        let d = d.text();
        p.validate(&d)
            .map_err(|e| format!("default {d:?} fails its own checks: {e}"))?;
        p.default = Some(d);
    }
    Ok(p)
}

/// Splits `text ${param.NAME} text` into pieces over the declared parameters.
fn template(v: &str, params: &[Param]) -> Result<Vec<Piece>, String> {
    let mut out = vec![];
    let mut rest = v;
    while let Some(i) = rest.find("${param.") {
        if i > 0 {
            out.push(Piece::Lit(rest[..i].to_owned()));
        }
        let after = &rest[i + 8..];
        let end = after.find('}').ok_or("unterminated ${param.")?;
        let name = &after[..end];
        let idx = params
            .iter()
            .position(|p| *p.name == *name)
            .ok_or_else(|| format!("${{param.{name}}} names no declared parameter"))?;
        out.push(Piece::Param(idx));
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Lit(rest.to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
