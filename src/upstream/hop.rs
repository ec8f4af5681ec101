//! Header hygiene of forwarding: what is never passed from one hop to the next,
//! and which upgrades are passed through.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one hop and are never forwarded (RFC 9110 §7.6.1),
/// plus h2c upgrade material. `Trailer` is end to end (RFC 9110 §6.6.2) and
/// kept: HTTP/1.1 peers only get the trailer fields it declares.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("http2-settings"),
];
const CONNECTION: usize = 0;
const TE: usize = 3;

/// Remove hop-by-hop headers, including those the `Connection` header names.
/// `te: trailers` (gRPC's) is kept as that single value: [`super::Upstream::send`]
/// passes it to HTTP/2 back ends only.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names first: most messages carry none of these, or
    // only `connection`, and a removal costs a hash whether or not it finds.
    let mut present = [false; 7];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    let trailers = present[TE]
        && headers
            .get_all(header::TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| {
                t.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
            });
    if present[CONNECTION] {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            // `close` names no header; the fixed ones go below anyway.
            .filter(|n| {
                !n.eq_ignore_ascii_case("close")
                    && !HOP_BY_HOP
                        .iter()
                        .any(|h| n.eq_ignore_ascii_case(h.as_str()))
            })
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
    }
    for (h, here) in HOP_BY_HOP.iter().zip(present) {
        if here {
            headers.remove(h);
        }
    }
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Is this an HTTP/1.1 upgrade request (websocket)? h2c upgrades are not passed on.
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let conn_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
    let up = headers.get(header::UPGRADE)?;
    if !conn_upgrade || up.as_bytes().eq_ignore_ascii_case(b"h2c") {
        return None;
    }
    Some(up.clone())
}
