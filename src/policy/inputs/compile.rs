//! Compiling `[[services.apis.params]]` (and the `const_query` /
//! `const_headers` values that refer to them) into [`Inputs`]: every problem
//! of the list, located by item.

use super::{is_param_ref, In, Inputs, Kind, Param, Piece, Target, Templated};
use crate::config::raw::{RawParam, Scalar};
use http::HeaderName;
use regex::Regex;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

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

impl Inputs {
    /// Names that `params` send in the back-end path (`backend_in = "path"`), for
    /// the back-end path template check.
    pub fn backend_path_names(raw: &[RawParam]) -> Vec<&str> {
        raw.iter()
            .filter(|p| p.backend_in.as_ref().and_then(|b| b.get()) == Some(In::Path))
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
    let at = r.position.value("in")?;
    let kind = r.kind.value("type")?;
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
        Some(b) => Some(b.value("backend_in")?),
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
