//! The keyed-MAC toolkit the signature schemes (`hmac`, `tc3`, `tc1`, `openapi`)
//! share: HMACs of every hash they use, keyed once per key and cloned per request;
//! constant-time comparison; decoding a client's signature (base64 or hex) into
//! the bytes that are compared and that identify the request for the replay
//! cache; the list of signed header names a credential declares.

use super::replay::ReplayToken;
use super::AuthError;
use base64::engine::{general_purpose::GeneralPurpose, DecodePaddingMode, GeneralPurposeConfig};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Sha256, Sha384, Sha512};
use std::sync::OnceLock;
use std::time::Duration;

/// Standard alphabet, padding optional when decoding. Non-zero trailing bits are
/// refused (the default), so one MAC has one text: a re-encoded signature is not
/// a second replay identity.
pub(crate) const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Longest accepted base64 signature (HMAC-SHA512 is 88 characters).
pub(crate) const MAX_BASE64_LEN: usize = 128;

/// Constant-time equality of two byte strings (length is not secret).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// The hash of an HMAC, named as the `hmac` scheme spells it (also the names
/// of `[auth.hmac] algorithms`, read in any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum Algorithm {
    #[serde(rename = "hmac-sha1")]
    HmacSha1,
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
    #[serde(rename = "hmac-sha384")]
    HmacSha384,
    #[serde(rename = "hmac-sha512")]
    HmacSha512,
}

impl Algorithm {
    pub const ALL: [Algorithm; 4] = [
        Algorithm::HmacSha1,
        Algorithm::HmacSha256,
        Algorithm::HmacSha384,
        Algorithm::HmacSha512,
    ];

    /// Parses `hmac-sha1` … `hmac-sha512` (case-insensitive).
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::HmacSha1 => "hmac-sha1",
            Algorithm::HmacSha256 => "hmac-sha256",
            Algorithm::HmacSha384 => "hmac-sha384",
            Algorithm::HmacSha512 => "hmac-sha512",
        }
    }
}

/// An HMAC of any supported hash, fed incrementally.
#[derive(Clone)]
pub(crate) enum AnyMac {
    Sha1(Hmac<Sha1>),
    Sha256(Hmac<Sha256>),
    Sha384(Hmac<Sha384>),
    Sha512(Hmac<Sha512>),
}

/// A MAC output (at most 64 bytes) without allocation.
pub(crate) struct MacOutput {
    buf: [u8; 64],
    len: usize,
}

impl MacOutput {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl AnyMac {
    /// HMAC accepts keys of any length, so this never fails in practice; `None`
    /// is returned instead of panicking if it ever did.
    pub(crate) fn new(alg: Algorithm, key: &[u8]) -> Option<AnyMac> {
        Some(match alg {
            Algorithm::HmacSha1 => AnyMac::Sha1(Hmac::new_from_slice(key).ok()?),
            Algorithm::HmacSha256 => AnyMac::Sha256(Hmac::new_from_slice(key).ok()?),
            Algorithm::HmacSha384 => AnyMac::Sha384(Hmac::new_from_slice(key).ok()?),
            Algorithm::HmacSha512 => AnyMac::Sha512(Hmac::new_from_slice(key).ok()?),
        })
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            AnyMac::Sha1(m) => m.update(data),
            AnyMac::Sha256(m) => m.update(data),
            AnyMac::Sha384(m) => m.update(data),
            AnyMac::Sha512(m) => m.update(data),
        }
    }

    pub(crate) fn finalize(self) -> MacOutput {
        fn out(bytes: &[u8]) -> MacOutput {
            let mut buf = [0u8; 64];
            let len = bytes.len().min(64);
            buf[..len].copy_from_slice(&bytes[..len]);
            MacOutput { buf, len }
        }
        match self {
            AnyMac::Sha1(m) => out(&m.finalize().into_bytes()),
            AnyMac::Sha256(m) => out(&m.finalize().into_bytes()),
            AnyMac::Sha384(m) => out(&m.finalize().into_bytes()),
            AnyMac::Sha512(m) => out(&m.finalize().into_bytes()),
        }
    }

    /// The MAC of the concatenated `parts` under `key`.
    pub(crate) fn digest(alg: Algorithm, key: &[u8], parts: &[&[u8]]) -> Option<MacOutput> {
        let mut m = AnyMac::new(alg, key)?;
        for p in parts {
            m.update(p);
        }
        Some(m.finalize())
    }
}

/// Which bytes a scheme keys its MAC with, derived from the key's secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MacKey {
    /// The secret itself (`hmac`, `tc1`).
    Secret(Algorithm),
    /// HMAC-SHA1 keyed with the secret followed by `&` (`openapi`).
    SecretAmpSha1,
    /// HMAC-SHA256 keyed with `TC3` followed by the secret (`tc3`'s first step).
    Tc3Sha256,
}

impl MacKey {
    const SLOTS: usize = 6;

    fn slot(self) -> usize {
        match self {
            MacKey::Secret(a) => a as usize,
            MacKey::SecretAmpSha1 => 4,
            MacKey::Tc3Sha256 => 5,
        }
    }

    fn keyed(self, secret: &[u8]) -> Option<AnyMac> {
        let joined = |pre: &[u8], post: &[u8]| [pre, secret, post].concat();
        match self {
            MacKey::Secret(a) => AnyMac::new(a, secret),
            MacKey::SecretAmpSha1 => AnyMac::new(Algorithm::HmacSha1, &joined(b"", b"&")),
            MacKey::Tc3Sha256 => AnyMac::new(Algorithm::HmacSha256, &joined(b"TC3", b"")),
        }
    }
}

/// A key's MACs, keyed on first use and cloned per request instead of keyed
/// again (the key schedule hashes the padded key: two compression rounds saved
/// per request). Boxed, so a key costs a few words per scheme it is not used by.
#[derive(Default)]
pub struct KeyedMacs([OnceLock<Option<Box<AnyMac>>>; MacKey::SLOTS]);

impl std::fmt::Debug for KeyedMacs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedMacs")
    }
}

impl KeyedMacs {
    /// A fresh MAC keyed as `which` says with `secret` (the secret of the key
    /// this cache belongs to).
    pub(crate) fn get(&self, which: MacKey, secret: &[u8]) -> Result<AnyMac, AuthError> {
        self.0[which.slot()]
            .get_or_init(|| which.keyed(secret).map(Box::new))
            .as_deref()
            .cloned()
            .ok_or_else(|| AuthError::Malformed("unusable secret".into()))
    }
}

/// A signature as the client sent it, decoded: compared with the expected MAC in
/// constant time, and, once it matched, the request's replay identity (the MAC
/// bytes, whatever text encoded them).
pub(crate) struct Signature {
    buf: [u8; 96],
    len: usize,
}

impl Signature {
    /// Standard base64, padding optional; `None` when it is not base64 or
    /// longer than any MAC's text.
    #[inline]
    pub(crate) fn base64(text: &[u8]) -> Option<Signature> {
        if text.len() > MAX_BASE64_LEN {
            return None;
        }
        let mut sig = Signature {
            buf: [0; 96],
            len: 0,
        };
        sig.len = B64.decode_slice(text, &mut sig.buf).ok()?;
        Some(sig)
    }

    /// Base64 from a form or query parameter, where a literal space stands for a
    /// `+` the client did not percent-encode.
    pub(crate) fn base64_param(text: &[u8]) -> Option<Signature> {
        let mut buf = [0u8; MAX_BASE64_LEN];
        let buf = buf.get_mut(..text.len())?;
        for (d, s) in buf.iter_mut().zip(text) {
            *d = if *s == b' ' { b'+' } else { *s };
        }
        Signature::base64(buf)
    }

    /// Exactly `len` bytes in hex digits (either case).
    pub(crate) fn hex(text: &str, len: usize) -> Option<Signature> {
        let mut sig = Signature { buf: [0; 96], len };
        hex::decode_to_slice(text, sig.buf.get_mut(..len)?).ok()?;
        Some(sig)
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Constant-time comparison with the expected MAC.
    pub(crate) fn matches(&self, expected: &[u8]) -> bool {
        ct_eq(self.as_bytes(), expected)
    }

    /// The replay identity of a request carrying this (matched) signature.
    pub(crate) fn replay(&self, ttl: Duration) -> ReplayToken {
        ReplayToken::signature(self.as_bytes(), ttl)
    }
}

/// Most header names a credential may list as signed.
pub(crate) const MAX_SIGNED_HEADERS: usize = 32;

/// How a credential writes its list of signed header names.
#[derive(Debug, Clone, Copy)]
pub(crate) enum NameList {
    /// Separated by spaces, in the order they are signed (`hmac`'s `headers="…"`).
    Spaces,
    /// Separated by `;`, each trimmed, signed sorted (`tc3`'s `SignedHeaders=`).
    Semicolons,
}

impl NameList {
    fn field(self) -> &'static str {
        match self {
            NameList::Spaces => "headers=\"..\"",
            NameList::Semicolons => "SignedHeaders",
        }
    }
}

/// The header names a credential lists as signed, validated (count, empty
/// names, duplicates in any case), without allocation.
pub(crate) struct SignedNames<'a> {
    names: [&'a str; MAX_SIGNED_HEADERS],
    len: usize,
}

impl<'a> SignedNames<'a> {
    // Inlined into its two callers, so that the 520-byte list is built in place.
    #[inline(always)]
    pub(crate) fn parse(list: &'a str, style: NameList) -> Result<Self, AuthError> {
        let mut out = SignedNames {
            names: [""; MAX_SIGNED_HEADERS],
            len: 0,
        };
        match style {
            NameList::Spaces => {
                for name in list.split_ascii_whitespace() {
                    out.push(name, style)?;
                }
            }
            NameList::Semicolons => {
                for name in list.split(';') {
                    out.push(name.trim(), style)?;
                }
                out.names[..out.len].sort_unstable_by(|a, b| cmp_ignore_case(a, b));
            }
        }
        if out.len == 0 {
            return Err(refusal(format!("{} lists no header", style.field())));
        }
        Ok(out)
    }

    fn push(&mut self, name: &'a str, style: NameList) -> Result<(), AuthError> {
        let field = style.field();
        if name.is_empty() {
            return Err(refusal(format!("{field} has an empty name")));
        }
        if self.len == MAX_SIGNED_HEADERS {
            return Err(refusal(format!(
                "more than {MAX_SIGNED_HEADERS} signed headers in {field}"
            )));
        }
        if self.has(name) {
            return Err(refusal(format!(
                "header {name:?} is listed twice in {field}"
            )));
        }
        self.names[self.len] = name;
        self.len += 1;
        Ok(())
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.names[..self.len].iter().copied()
    }

    /// Whether `name` is listed (any case).
    pub(crate) fn has(&self, name: &str) -> bool {
        self.iter().any(|n| n.eq_ignore_ascii_case(name))
    }
}

#[cold]
fn refusal(why: String) -> AuthError {
    AuthError::Malformed(format!("Authorization: {why}"))
}

fn cmp_ignore_case(a: &str, b: &str) -> std::cmp::Ordering {
    let lower = |c: u8| c.to_ascii_lowercase();
    a.bytes().map(lower).cmp(b.bytes().map(lower))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_macs_equal_fresh_ones() {
        let macs = KeyedMacs::default();
        let fresh = |alg, key: &[u8]| AnyMac::digest(alg, key, &[b"msg"]).unwrap();
        for alg in Algorithm::ALL {
            let mut m = macs.get(MacKey::Secret(alg), b"s3cret").unwrap();
            m.update(b"msg");
            assert_eq!(m.finalize().as_bytes(), fresh(alg, b"s3cret").as_bytes());
        }
        let mut m = macs.get(MacKey::SecretAmpSha1, b"s3cret").unwrap();
        m.update(b"msg");
        let want = fresh(Algorithm::HmacSha1, b"s3cret&");
        assert_eq!(m.finalize().as_bytes(), want.as_bytes());
        let mut m = macs.get(MacKey::Tc3Sha256, b"s3cret").unwrap();
        m.update(b"msg");
        let want = fresh(Algorithm::HmacSha256, b"TC3s3cret");
        assert_eq!(m.finalize().as_bytes(), want.as_bytes());
    }

    #[test]
    fn signatures_decode_to_one_identity() {
        let a = Signature::base64(b"AAEC").unwrap();
        let b = Signature::hex("000102", 3).unwrap();
        let c = Signature::base64_param(b"AAEC").unwrap();
        assert_eq!(a.as_bytes(), [0, 1, 2]);
        assert_eq!(a.replay(Duration::ZERO), b.replay(Duration::ZERO));
        assert!(c.matches(&[0, 1, 2]) && !c.matches(&[0, 1]));
        // a space is a '+' only in a parameter
        assert!(Signature::base64(b"a A=").is_none());
        assert_eq!(
            Signature::base64_param(b"a A=").unwrap().as_bytes(),
            [0x6b, 0xe0]
        );
        assert!(Signature::base64(&[b'A'; 129]).is_none());
        assert!(Signature::base64_param(&[b'A'; 129]).is_none());
        assert!(Signature::hex("0001", 3).is_none());
        assert!(Signature::hex("zz", 1).is_none());
    }

    #[test]
    fn signed_name_lists() {
        let n = SignedNames::parse("Date source  request-line", NameList::Spaces).unwrap();
        assert_eq!(
            n.iter().collect::<Vec<_>>(),
            ["Date", "source", "request-line"]
        );
        assert!(n.has("date") && !n.has("host"));
        let n = SignedNames::parse("host; Content-Type;x-a", NameList::Semicolons).unwrap();
        assert_eq!(
            n.iter().collect::<Vec<_>>(),
            ["Content-Type", "host", "x-a"]
        );
        for (list, style, want) in [
            ("date Date", NameList::Spaces, "listed twice"),
            ("  ", NameList::Spaces, "lists no header"),
            ("host;;x", NameList::Semicolons, "empty name"),
            ("host;HOST", NameList::Semicolons, "twice"),
        ] {
            let e = SignedNames::parse(list, style).err().unwrap().to_string();
            assert!(e.contains(want), "{list}: {e}");
        }
        let many: Vec<String> = (0..33).map(|i| format!("h{i}")).collect();
        let many = many.join(" ");
        let e = SignedNames::parse(&many, NameList::Spaces).err().unwrap();
        assert!(e.to_string().contains("more than 32"), "{e}");
    }
}
