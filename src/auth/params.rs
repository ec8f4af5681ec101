//! Signed request parameters of the schemes that sign name/value pairs (`tc1`,
//! `openapi`): the query string, or for a POST the form body.

use super::{form_pairs, head_has_no_body, AuthError, RequestParts};
use http::Method;

/// Decoded `(name, value)` pairs, in request order.
pub(crate) type Params = Vec<(Vec<u8>, Vec<u8>)>;

/// How much body to buffer before verifying: a POST carries its parameters in a
/// form body of at most `post_limit` bytes; other methods carry them in the query.
pub(crate) fn body_limit(method: &Method, post_limit: usize) -> Option<usize> {
    (method == Method::POST).then_some(post_limit)
}

/// The decoded request parameters: the form body for POST, else the query.
/// Duplicate names are refused.
pub(crate) fn request_params(req: &RequestParts<'_>) -> Result<Params, AuthError> {
    let params = if req.method == Method::POST {
        let form = req
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !form {
            return Err(AuthError::Malformed(
                "a POST must carry its parameters as Content-Type: application/x-www-form-urlencoded"
                    .into(),
            ));
        }
        let body = match req.body {
            Some(b) => b,
            None if head_has_no_body(req.headers) => b"",
            None => return Err(AuthError::NeedBody),
        };
        form_pairs(body)
    } else {
        form_pairs(req.uri.query().unwrap_or("").as_bytes())
    };
    let mut names: Vec<&[u8]> = params.iter().map(|(n, _)| n.as_slice()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(AuthError::Malformed(format!(
            "parameter {:?} given twice",
            String::from_utf8_lossy(w[0])
        )));
    }
    Ok(params)
}

pub(crate) fn param<'p>(params: &'p Params, name: &str) -> Option<&'p [u8]> {
    params
        .iter()
        .find(|(n, _)| n == name.as_bytes())
        .map(|(_, v)| v.as_slice())
}

/// A parameter that must be present and non-empty.
pub(crate) fn required<'p>(params: &'p Params, name: &str) -> Result<&'p [u8], AuthError> {
    match param(params, name) {
        None => Err(AuthError::Missing(format!("parameter {name}"))),
        Some([]) => Err(AuthError::Malformed(format!("parameter {name} is empty"))),
        Some(v) => Ok(v),
    }
}

/// Every parameter but `without` (the signature), sorted by name (byte order):
/// the order both schemes sign them in.
pub(crate) fn sorted_without<'p>(params: &'p Params, without: &str) -> Vec<&'p (Vec<u8>, Vec<u8>)> {
    let mut sorted: Vec<&(Vec<u8>, Vec<u8>)> = params
        .iter()
        .filter(|(n, _)| n != without.as_bytes())
        .collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    sorted
}
