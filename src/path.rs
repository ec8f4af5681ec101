//! The one canonical request path (SPEC §2 "Path"), computed once per request and
//! used for routing, for the policies and for the forwarded request line, so that a
//! back end that normalises differently cannot be reached around a rule.
//!
//! With `normalize_path` (the default), in this order:
//! 1. a raw `\` or an escaped NUL (`%00`) is refused; a malformed escape (`%4`, `%zz`)
//!    is refused;
//! 2. percent-escapes of unreserved characters (`ALPHA DIGIT - . _ ~`) are decoded
//!    (`/%70rivate` is `/private`, `%2e` is `.`); every other escape is kept, with
//!    upper-case hex (`%c0%ae` → `%C0%AE`); nothing is decoded twice (`%252e` stays);
//! 3. escaped slashes (`%2F`, `%5C`) follow `path_with_escaped_slashes_action`:
//!    `reject` (400, the default), `keep` (kept, escaped) or `unescape` (both become
//!    `/`, before dot segments are removed);
//! 4. with `merge_slashes`, runs of `/` become one;
//! 5. dot segments are removed (RFC 3986 §5.2.4); a `..` that would climb above the
//!    root is refused, and so is a dot segment carrying a `;` parameter (`..;x`,
//!    which Tomcat and Jetty resolve as `..`).
//!
//! Case is not changed (`/PRIVATE` is not `/private`), `;` is an ordinary character
//! elsewhere (as in nginx), and the query string is never touched. Without
//! `normalize_path` only steps 1, 3 and 4 apply.

use std::borrow::Cow;

/// `[server] path_with_escaped_slashes_action`, named after Envoy's
/// `PathWithEscapedSlashesAction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EscapedSlashes {
    /// `KEEP_UNCHANGED`: `%2F` and `%5C` stay escaped (upper-case hex).
    #[serde(alias = "KEEP_UNCHANGED")]
    Keep,
    /// `REJECT_REQUEST`: 400.
    #[default]
    #[serde(alias = "REJECT_REQUEST")]
    Reject,
    /// `UNESCAPE_AND_FORWARD`: both become `/` before dot segments are removed.
    #[serde(alias = "UNESCAPE_AND_FORWARD")]
    Unescape,
}

/// How request paths are made canonical (`[server]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathSettings {
    pub normalize: bool,
    pub merge_slashes: bool,
    pub escaped_slashes: EscapedSlashes,
}

impl Default for PathSettings {
    fn default() -> Self {
        PathSettings {
            normalize: true,
            merge_slashes: false,
            escaped_slashes: EscapedSlashes::Reject,
        }
    }
}

/// Why a path was refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path climbs above the root")]
    AboveRoot,
    #[error("path carries an escaped slash or backslash")]
    EscapedSlash,
    #[error("path carries an escaped NUL")]
    Nul,
    #[error("path carries a backslash")]
    Backslash,
    #[error("path carries a malformed percent-escape")]
    BadEscape,
    #[error("path carries a dot segment with a parameter")]
    DotParameter,
}

/// The canonical form of `raw` (a request path without its query). Borrows when
/// nothing changes, which is the common case.
pub fn canonical<'a>(raw: &'a str, s: &PathSettings) -> Result<Cow<'a, str>, PathError> {
    let b = raw.as_bytes();
    if b.first() != Some(&b'/') {
        // `*` (OPTIONS *) or an empty path: routes nowhere, left alone.
        return Ok(Cow::Borrowed(raw));
    }
    let suspicious = b.iter().any(|&c| c == b'%' || c == b'\\')
        || b.windows(2)
            .any(|w| (w == b"/." && s.normalize) || (w == b"//" && s.merge_slashes));
    if !suspicious {
        return Ok(Cow::Borrowed(raw));
    }
    let decoded = decode(b, s)?;
    let merged = if s.merge_slashes {
        merge_slashes(&decoded)
    } else {
        decoded
    };
    if !s.normalize {
        return Ok(Cow::Owned(merged));
    }
    remove_dot_segments(&merged).map(Cow::Owned)
}

/// Whether `path` reads differently to a back end that merges slashes or drops
/// `;` parameters: returns that other reading, when there is one.
pub fn other_reading(path: &str) -> Option<String> {
    if !path.contains("//") && !path.contains(';') {
        return None;
    }
    let stripped: String = path
        .split('/')
        .map(|seg| seg.split(';').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("/");
    let merged = merge_slashes(&stripped);
    (merged != path).then_some(merged)
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// Steps 1–3: one pass over the escapes.
fn decode(b: &[u8], s: &PathSettings) -> Result<String, PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' {
            return Err(PathError::Backslash);
        }
        if c != b'%' {
            // The path came from a parsed URI: ASCII, but stay safe on anything else.
            let end = b[i..]
                .iter()
                .position(|&x| x == b'%' || x == b'\\')
                .map_or(b.len(), |p| i + p);
            out.push_str(&String::from_utf8_lossy(&b[i..end]));
            i = end;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(PathError::BadEscape);
        };
        let v = (hi << 4) | lo;
        i += 3;
        match v {
            0 => return Err(PathError::Nul),
            b'/' | b'\\' => match s.escaped_slashes {
                EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                EscapedSlashes::Unescape => {
                    out.push('/');
                    continue;
                }
                EscapedSlashes::Keep => {}
            },
            _ if s.normalize && is_unreserved(v) => {
                out.push(v as char);
                continue;
            }
            _ => {}
        }
        if s.normalize {
            out.push('%');
            out.push(HEX[usize::from(hi)] as char);
            out.push(HEX[usize::from(lo)] as char);
        } else {
            out.push_str(std::str::from_utf8(&b[i - 3..i]).unwrap_or("%"));
        }
    }
    Ok(out)
}

fn merge_slashes(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    let mut prev_slash = false;
    for c in p.chars() {
        if c == '/' && prev_slash {
            continue;
        }
        prev_slash = c == '/';
        out.push(c);
    }
    out
}

/// RFC 3986 §5.2.4 on an absolute path, refusing to climb above the root.
fn remove_dot_segments(p: &str) -> Result<String, PathError> {
    let segs: Vec<&str> = p.get(1..).unwrap_or("").split('/').collect();
    let n = segs.len();
    let mut out: Vec<&str> = Vec::with_capacity(n);
    for (i, seg) in segs.into_iter().enumerate() {
        let last = i + 1 == n;
        let name = seg.split(';').next().unwrap_or("");
        if (name == "." || name == "..") && name.len() != seg.len() {
            return Err(PathError::DotParameter);
        }
        match seg {
            "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            _ => {
                out.push(seg);
                continue;
            }
        }
        if last {
            out.push("");
        }
    }
    let mut s = String::with_capacity(p.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if s.is_empty() {
        s.push('/');
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(p: &str) -> Result<String, PathError> {
        canonical(p, &PathSettings::default()).map(Cow::into_owned)
    }

    fn with(p: &str, merge: bool, esc: EscapedSlashes) -> Result<String, PathError> {
        let s = PathSettings {
            normalize: true,
            merge_slashes: merge,
            escaped_slashes: esc,
        };
        canonical(p, &s).map(Cow::into_owned)
    }

    #[test]
    fn plain_paths_are_borrowed() {
        let s = PathSettings::default();
        for p in ["/", "/a/b", "/a//b", "/.well", "*", "/a;b", "/a.b/c..d"] {
            let c = canonical(p, &s).expect(p);
            assert!(matches!(c, Cow::Borrowed(_)) || p.contains("/."), "{p}");
            assert_eq!(c, p);
        }
    }

    #[test]
    fn dot_segments_are_removed() {
        let cases = [
            ("/public/../private", "/private"),
            ("/publicx/../private", "/private"),
            ("/./private", "/private"),
            ("/private/.", "/private/"),
            ("/private/..", "/"),
            ("/a/b/../c/./d", "/a/c/d"),
            ("/a/./", "/a/"),
            ("/a//../b", "/a/b"),
            ("/release/../private", "/private"),
            ("/.well-known/x", "/.well-known/x"),
            ("/a/...", "/a/..."),
            ("/a/..b/c", "/a/..b/c"),
        ];
        for (p, want) in cases {
            assert_eq!(canon(p).as_deref(), Ok(want), "{p}");
        }
    }

    #[test]
    fn escapes_of_unreserved_characters_are_decoded_first() {
        let cases = [
            ("/public/%2e%2e/private", "/private"),
            ("/public/%2E%2e/private", "/private"),
            ("/public/.%2E/private", "/private"),
            ("/%70rivate", "/private"),
            ("/%7euser/%41-%5f", "/~user/A-_"),
            ("/a%20b", "/a%20b"),
            ("/a%c0%ae", "/a%C0%AE"),
            ("/%c0%ae%c0%ae/private", "/%C0%AE%C0%AE/private"),
            ("/%252e%252e/private", "/%252e%252e/private"),
            ("/a%3bb", "/a%3Bb"),
        ];
        for (p, want) in cases {
            assert_eq!(canon(p).as_deref(), Ok(want), "{p}");
        }
    }

    #[test]
    fn refusals() {
        let cases = [
            ("/..", PathError::AboveRoot),
            ("/public/../../private", PathError::AboveRoot),
            ("/%2e%2e/x", PathError::AboveRoot),
            ("/public/..%2fprivate", PathError::EscapedSlash),
            ("/public/..%2Fprivate", PathError::EscapedSlash),
            ("/a%5cb", PathError::EscapedSlash),
            ("/a%00b", PathError::Nul),
            ("/a\\b", PathError::Backslash),
            ("/a%4", PathError::BadEscape),
            ("/a%zzb", PathError::BadEscape),
            ("/a%", PathError::BadEscape),
            ("/public/..;x/private", PathError::DotParameter),
            ("/public/.;/private", PathError::DotParameter),
        ];
        for (p, want) in cases {
            assert_eq!(canon(p), Err(want), "{p}");
        }
    }

    #[test]
    fn escaped_slash_actions() {
        use EscapedSlashes::*;
        assert_eq!(
            with("/public/..%2fprivate", false, Unescape).as_deref(),
            Ok("/private")
        );
        assert_eq!(
            with("/public/..%5cprivate", false, Unescape).as_deref(),
            Ok("/private")
        );
        assert_eq!(
            with("/public/..%2fprivate", false, Keep).as_deref(),
            Ok("/public/..%2Fprivate")
        );
        assert_eq!(with("/a%2fb%5c", false, Keep).as_deref(), Ok("/a%2Fb%5C"));
        // NUL and raw backslashes are refused whatever the action.
        for a in [Keep, Unescape] {
            assert_eq!(with("/a%00", false, a), Err(PathError::Nul));
            assert_eq!(with("/a\\b", false, a), Err(PathError::Backslash));
        }
    }

    #[test]
    fn merge_slashes_when_asked() {
        use EscapedSlashes::*;
        assert_eq!(with("//a///b", true, Reject).as_deref(), Ok("/a/b"));
        assert_eq!(with("//private", true, Reject).as_deref(), Ok("/private"));
        assert_eq!(canon("//a///b").as_deref(), Ok("//a///b"));
        assert_eq!(canon("/a//./b").as_deref(), Ok("/a//b"));
    }

    #[test]
    fn without_normalisation_only_the_refusals_apply() {
        let s = PathSettings {
            normalize: false,
            ..PathSettings::default()
        };
        let c = |p| canonical(p, &s).map(Cow::into_owned);
        assert_eq!(c("/a/../b").as_deref(), Ok("/a/../b"));
        assert_eq!(c("/%70%2e").as_deref(), Ok("/%70%2e"));
        assert_eq!(c("/a%2fb"), Err(PathError::EscapedSlash));
        assert_eq!(c("/a%00"), Err(PathError::Nul));
    }

    #[test]
    fn other_readings() {
        assert_eq!(other_reading("/a/b"), None);
        assert_eq!(other_reading("//private").as_deref(), Some("/private"));
        assert_eq!(other_reading("/private;x/y").as_deref(), Some("/private/y"));
        assert_eq!(other_reading("/a;b//c").as_deref(), Some("/a/c"));
        assert_eq!(other_reading("/a/"), None);
    }

    /// Random paths built from the pieces that matter, under every setting: never
    /// a panic; an accepted path is absolute, has no dot segment, no escape of an
    /// unreserved character, no NUL or backslash, lower-case-free escapes, and is
    /// its own canonical form.
    #[test]
    fn fuzz_invariants() {
        use rand::{Rng, SeedableRng};
        const PIECES: [&str; 22] = [
            "/", "/", "a", "B", ".", "..", "%2e", "%2E", "%2f", "%5C", "%25", "%00", "%zz",
            "%c0%ae", ";", ";x", "~", "%7e", "%41", "\\", "%", "//",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let settings: Vec<PathSettings> = [false, true]
            .into_iter()
            .flat_map(|merge| {
                [
                    EscapedSlashes::Reject,
                    EscapedSlashes::Keep,
                    EscapedSlashes::Unescape,
                ]
                .map(|esc| PathSettings {
                    normalize: true,
                    merge_slashes: merge,
                    escaped_slashes: esc,
                })
            })
            .collect();
        let mut accepted = 0;
        for _ in 0..20_000 {
            let mut p = String::from("/");
            for _ in 0..rng.gen_range(0..10) {
                p.push_str(PIECES[rng.gen_range(0..PIECES.len())]);
            }
            for s in &settings {
                let Ok(c) = canonical(&p, s) else { continue };
                accepted += 1;
                assert!(c.starts_with('/'), "{p:?} -> {c:?}");
                assert!(!c.contains('\\') && !c.contains("%00"), "{p:?} -> {c:?}");
                for seg in c.split('/') {
                    assert!(seg != "." && seg != "..", "{p:?} -> {c:?}");
                }
                let b = c.as_bytes();
                for (i, _) in c.match_indices('%') {
                    let (h, l) = (b[i + 1], b[i + 2]);
                    let v = hex(h).zip(hex(l)).map(|(h, l)| (h << 4) | l);
                    assert!(v.is_some_and(|v| !is_unreserved(v)), "{p:?} -> {c:?}");
                    assert!(!h.is_ascii_lowercase() && !l.is_ascii_lowercase());
                }
                if s.merge_slashes {
                    assert!(!c.contains("//"), "{p:?} -> {c:?}");
                }
                let again = canonical(&c, s).map(Cow::into_owned);
                assert_eq!(again.as_deref(), Ok(&*c), "{p:?} under {s:?}");
            }
        }
        assert!(accepted > 10_000, "{accepted}");
    }

    #[test]
    fn output_is_a_fixed_point() {
        let s = PathSettings::default();
        for p in [
            "/public/%2e%2e/private",
            "/a%c0%ae/./b/",
            "/%7e/%41",
            "/x/y/../z",
        ] {
            let once = canonical(p, &s).expect(p).into_owned();
            let twice = canonical(&once, &s).expect(p).into_owned();
            assert_eq!(once, twice, "{p}");
        }
    }
}
