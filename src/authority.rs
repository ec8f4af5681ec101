//! The one authority of a request (SPEC §2, RFC 9112 §3.2, RFC 9113 §8.3.1): the
//! authority of an absolute-form target or of HTTP/2's `:authority` replaces
//! `Host`; otherwise the single `Host` header. Several `Host` headers, a `Host`
//! that is not an authority, user info in the authority, or an HTTP/1.1 request
//! without `Host` are refused (400). HTTP/1.0 may omit `Host`.

use http::header::{HeaderMap, HeaderValue, HOST};
use http::{Uri, Version};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("duplicate Host header")]
    DuplicateHost,
    #[error("HTTP/1.1 request without Host")]
    MissingHost,
    #[error("invalid Host header")]
    InvalidHost,
    #[error("user info in the request authority")]
    UserInfo,
}

/// The authority the request is routed by, in the client's spelling (port and case
/// as sent). `None`: no authority at all (HTTP/1.0, or an empty `Host`).
pub fn authority(
    version: Version,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Option<HeaderValue>, AuthorityError> {
    let mut hosts = headers.get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(AuthorityError::DuplicateHost);
    }
    if host.is_none() && version == Version::HTTP_11 {
        return Err(AuthorityError::MissingHost);
    }
    if let Some(a) = uri.authority() {
        if a.as_str().contains('@') {
            return Err(AuthorityError::UserInfo);
        }
        return HeaderValue::from_str(a.as_str())
            .map(Some)
            .map_err(|_| AuthorityError::InvalidHost);
    }
    match host {
        Some(h) if h.is_empty() => Ok(None),
        Some(h) if is_host(h.as_bytes()) => Ok(Some(h.clone())),
        Some(_) => Err(AuthorityError::InvalidHost),
        None => Ok(None),
    }
}

/// `host [ ":" port ]` (RFC 3986 §3.2.2): reg-name or IP-literal characters, no
/// user info, path, query or white space. Checked without allocating.
fn is_host(b: &[u8]) -> bool {
    b.iter().all(|&c| {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'['
                    | b']'
                    | b'%'
            )
    })
}

/// Make `Host` the one authority: after this the head holds exactly that value (or
/// nothing), so that what signature schemes read, what is routed and what is
/// forwarded (`preserve_host`, `X-Forwarded-Host`) are the same.
pub fn settle(headers: &mut HeaderMap, authority: Option<&HeaderValue>) {
    match authority {
        Some(a) => {
            if headers.get(HOST) != Some(a) {
                headers.insert(HOST, a.clone());
            }
        }
        None => {
            headers.remove(HOST);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(version: Version, uri: &str, hosts: &[&str]) -> Result<Option<String>, AuthorityError> {
        let mut h = HeaderMap::new();
        for v in hosts {
            h.append(HOST, HeaderValue::from_str(v).expect("value"));
        }
        let uri: Uri = uri.parse().expect("uri");
        authority(version, &uri, &h).map(|a| a.map(|v| v.to_str().expect("ascii").to_owned()))
    }

    #[test]
    fn origin_form_uses_the_single_host() {
        assert_eq!(
            run(Version::HTTP_11, "/x", &["b.local:8080"]),
            Ok(Some("b.local:8080".into()))
        );
        assert_eq!(run(Version::HTTP_11, "/x", &[""]), Ok(None));
        assert_eq!(run(Version::HTTP_10, "/x", &[]), Ok(None));
    }

    #[test]
    fn absolute_form_and_h2_authority_replace_host() {
        assert_eq!(
            run(Version::HTTP_11, "http://c.local/x", &["b.local"]),
            Ok(Some("c.local".into()))
        );
        assert_eq!(
            run(Version::HTTP_2, "http://c.local/x", &["b.local"]),
            Ok(Some("c.local".into()))
        );
        assert_eq!(
            run(Version::HTTP_2, "http://c.local/x", &[]),
            Ok(Some("c.local".into()))
        );
        assert_eq!(
            run(Version::HTTP_10, "http://c.local/x", &[]),
            Ok(Some("c.local".into()))
        );
    }

    #[test]
    fn refusals() {
        use AuthorityError::*;
        assert_eq!(run(Version::HTTP_11, "/x", &[]), Err(MissingHost));
        assert_eq!(
            run(Version::HTTP_11, "http://c.local/x", &[]),
            Err(MissingHost)
        );
        assert_eq!(
            run(Version::HTTP_11, "/x", &["b.local", "c.local"]),
            Err(DuplicateHost)
        );
        assert_eq!(
            run(Version::HTTP_11, "/x", &["b.local", "b.local"]),
            Err(DuplicateHost)
        );
        assert_eq!(
            run(Version::HTTP_11, "http://u@c.local/x", &["c.local"]),
            Err(UserInfo)
        );
        assert_eq!(
            run(Version::HTTP_11, "/x", &["u@b.local"]),
            Err(InvalidHost)
        );
        assert_eq!(
            run(Version::HTTP_11, "/x", &["b.local/x"]),
            Err(InvalidHost)
        );
        assert_eq!(run(Version::HTTP_11, "/x", &["b local"]), Err(InvalidHost));
        assert_eq!(
            run(Version::HTTP_11, "/x", &["b.local?x"]),
            Err(InvalidHost)
        );
        assert_eq!(
            run(Version::HTTP_11, "/x", &["b.local\\x"]),
            Err(InvalidHost)
        );
        assert_eq!(
            run(Version::HTTP_11, "/x", &["[::1]:8080"]),
            Ok(Some("[::1]:8080".into()))
        );
    }

    #[test]
    fn settle_leaves_one_host() {
        let mut h = HeaderMap::new();
        h.append(HOST, HeaderValue::from_static("b.local"));
        settle(&mut h, Some(&HeaderValue::from_static("c.local")));
        assert_eq!(h.get_all(HOST).iter().count(), 1);
        assert_eq!(h.get(HOST).map(|v| v.as_bytes()), Some(&b"c.local"[..]));
        settle(&mut h, None);
        assert!(!h.contains_key(HOST));
    }
}
