//! Unit tests of JWT providers.

use super::token::MAX_TOKEN;
use super::*;
use crate::config::raw::RawClaimValue;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use http::header::AUTHORIZATION;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

// Fixed test keys (generated with openssl for these tests only).
const RSA_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCWecJ7aBSHRmJV
MfojFQkvCwwiEfwMHOcgGmEizfGgzmsZmfYSSnCDi9HvfUvyc1Qaw2jGlefIAQRi
L3I+XMqEitAI31tDdtAFtJdNDokBI/jHP8bRGjoYD52NftA93Fn2YINQpKh2h7LL
A8nd4HmkmJKgQQYlc3L+HTSGaq49ms1bkeQMHbddvTRqxy/PMTrtI5kPqQnhBWeR
VCOuOWqLjhfos80xmO0qw6A5Nc3hzhdnBs/nX1gMLJrEINDYYwUYWXnunIatrxWS
Hz7hFLKBTsSjeyhOTAU6ued9EH56saSEUnqKSRjTDglS/sveHh6YJ0gfz4PX+vCE
hO6AqD7VAgMBAAECggEAH9HWnOb49FQfZhmf5fxESWTiJ3A7JsqT21eIs+Xt0w3j
WvISNXL1UPPnrGeIAFh/7/rjdJ7teP8yEJss4uAXWSjLbhzhPSZqPdKe7gYFVa7o
JCYp4jzUDRN8QxgObA5lHbLyAcMX9pyiY8jEzrzxrCsxUl79sDy2E+NUIJp9hvwa
hwqdzgV7NbqNnSwUIt3PYVfewJXD4Obgu7yI5S0qOKlPVfk0BjObPjyZFyCp2y0t
ZpzcLOwCjv7a2xio6h/qcOz2vCHCRUHJGBPnwMWgWwMGcOgICj8cXgWfuMTx6YWc
PsNY2/6Y9pQ+Gdzo82nmLpscZuSFAXxUTOBG/X/9fwKBgQDQ0aV7YH7LE9/VQW+6
YukuIq09h41CNTIcSta6YESIKZD8CA8+Jnj/9f8aiB35gFL88qKgez457Ou9yDOY
lPVIQ9R8m7qFSeRbBQee01daY7aRId+u7AB1KAF5xLi+qtJDCHmFsx46AhxGFBPX
hcaftBUTVusFM9UUgokK0BQwcwKBgQC4eXY+YBA1xvSAiXfyKxDJAOVbRh2QL6ri
FQGuP7jz0u2xl1pPFZ+15xD988h2klJCZ7bmP3gH3zhn1ToExofRx+LYTaMEK2wb
RBk56DvN1BqultniW4psHTaB8KvcLVCcnceUscoRAwA2ye6IRoTHbpciMTLR0okB
PDBosf3plwKBgCeJCcOqKVdZk+9UTEsFnxBVEGet2ljGqY4hvTXcNB1zgTe2buxd
bFtJv9rOGp66ZPvvFEs+CjH9YUS1Os+QpD/iV8Cf21iQ/OMeuKqhaNB8QHyJ5UfA
9vU3ddAQJsoynUyDtj5SA08IR0IdWwRbF5f1CGh49FYv0g/oBvo9GxVxAoGAVtwK
CvCccVXOhj80FPimHJ6pX8Kx5NQs9+rAMdWbNmMYvEfxo88gtjuoSorg1sOqq829
1sgHsl0uZ+WEPf9ksCgX7ZUQrsPrUSNNZXCtyAqYzaAF04kasjFHGwPBSBimHjhE
YwUbicsJ7MJD6DKcDnNKAjV8IkOpcsVuXb2BOt0CgYEArV3Jo/2gMXfw3m4ZaWeE
RtHd0ta9/VuWVXbZRGaY3+m6FEz4NSX70BMPb3xANvpmBTUpgD7a8wdz+h5k4ZOT
1SewJXZrI57I3D2rfuyyOqGS3Jgn9m9UGN9DkVun2mSrysxVc8L8xrkzjm2pVl/+
hRgM45IhniCqJlX/dZ39tFk=
-----END PRIVATE KEY-----";
const RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAlnnCe2gUh0ZiVTH6IxUJ
LwsMIhH8DBznIBphIs3xoM5rGZn2Ekpwg4vR731L8nNUGsNoxpXnyAEEYi9yPlzK
hIrQCN9bQ3bQBbSXTQ6JASP4xz/G0Ro6GA+djX7QPdxZ9mCDUKSodoeyywPJ3eB5
pJiSoEEGJXNy/h00hmquPZrNW5HkDB23Xb00ascvzzE67SOZD6kJ4QVnkVQjrjlq
i44X6LPNMZjtKsOgOTXN4c4XZwbP519YDCyaxCDQ2GMFGFl57pyGra8Vkh8+4RSy
gU7Eo3soTkwFOrnnfRB+erGkhFJ6ikkY0w4JUv7L3h4emCdIH8+D1/rwhITugKg+
1QIDAQAB
-----END PUBLIC KEY-----";
const RSA_PUBLIC_PKCS1: &str = "-----BEGIN RSA PUBLIC KEY-----
MIIBCgKCAQEAlnnCe2gUh0ZiVTH6IxUJLwsMIhH8DBznIBphIs3xoM5rGZn2Ekpw
g4vR731L8nNUGsNoxpXnyAEEYi9yPlzKhIrQCN9bQ3bQBbSXTQ6JASP4xz/G0Ro6
GA+djX7QPdxZ9mCDUKSodoeyywPJ3eB5pJiSoEEGJXNy/h00hmquPZrNW5HkDB23
Xb00ascvzzE67SOZD6kJ4QVnkVQjrjlqi44X6LPNMZjtKsOgOTXN4c4XZwbP519Y
DCyaxCDQ2GMFGFl57pyGra8Vkh8+4RSygU7Eo3soTkwFOrnnfRB+erGkhFJ6ikkY
0w4JUv7L3h4emCdIH8+D1/rwhITugKg+1QIDAQAB
-----END RSA PUBLIC KEY-----";
const RSA_N: &str = "lnnCe2gUh0ZiVTH6IxUJLwsMIhH8DBznIBphIs3xoM5rGZn2Ekpwg4vR731L8nNUGsNoxpXnyAEEYi9yPlzKhIrQCN9bQ3bQBbSXTQ6JASP4xz_G0Ro6GA-djX7QPdxZ9mCDUKSodoeyywPJ3eB5pJiSoEEGJXNy_h00hmquPZrNW5HkDB23Xb00ascvzzE67SOZD6kJ4QVnkVQjrjlqi44X6LPNMZjtKsOgOTXN4c4XZwbP519YDCyaxCDQ2GMFGFl57pyGra8Vkh8-4RSygU7Eo3soTkwFOrnnfRB-erGkhFJ6ikkY0w4JUv7L3h4emCdIH8-D1_rwhITugKg-1Q";
const EC_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgk4SgouBXDR9+BPLI
AJat1Lxu6cv+asjSS3TS+cwtIXOhRANCAASm/uhD9RwAVHVMCPcNP3+zz0mZcNMN
FbjzT76qLF6wgXPNTP7JJ4VLBliCy92O/vX5JASg9PvLgXN2PVTY7v9i
-----END PRIVATE KEY-----";
const EC_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEpv7oQ/UcAFR1TAj3DT9/s89JmXDT
DRW480++qixesIFzzUz+ySeFSwZYgsvdjv71+SQEoPT7y4Fzdj1U2O7/Yg==
-----END PUBLIC KEY-----";
const EC_X: &str = "pv7oQ_UcAFR1TAj3DT9_s89JmXDTDRW480--qixesIE";
const EC_Y: &str = "c81M_sknhUsGWILL3Y7-9fkkBKD0-8uBc3Y9VNju_2I";
const EC2_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgEKzOYc4YlLSiz18j
yfZOwu5zaCW8SbjArr/KaJ/9fcqhRANCAASK2KmU5emvSBF8BDF1JIy8EOEJTajS
q5o17HKqPEpNwNmoE1EJxxiEr12PNJB+XtyVl0H24zFf2DcyXiMhsnfR
-----END PRIVATE KEY-----";
const EC2_X: &str = "itiplOXpr0gRfAQxdSSMvBDhCU2o0quaNexyqjxKTcA";
const EC2_Y: &str = "2agTUQnHGISvXY80kH5e3JWXQfbjMV_YNzJeIyGyd9E";
const EC384_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEBthfLkn9hZ8KoIquUw0N0XJvbNtllZ7j
0x7LKQ1eq9BzPrhMEvAM8ckUeT4zMWfnQ/wwSyILzBfQKJnK/Rl1J2zjSyjQtaxu
WTZYap9TblGPFdBbzRTjCy4cIEYy20T+
-----END PUBLIC KEY-----";

// P-384 and Ed25519 test keys (openssl genpkey, for these tests only).
const EC384B_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDBkz6H+L4bQfz278lIj
C2e+K8o3yR1ghwefMMdF1H8xvxuOyshPVL7FQ+erwqeDVv2hZANiAARnzL4jFo5y
HFIDHLxb8TulPD1DMVO44fVz3Fr+4hHUIDpjn3f+Sm7ZKcreuuH3dJpeju5gqMRl
isHmLNh6tfyW1cJI2/NwB3OhafWmjtCblhY5d0XpX+BGAInj/Gh1CS4=
-----END PRIVATE KEY-----";
const EC384B_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEZ8y+IxaOchxSAxy8W/E7pTw9QzFTuOH1
c9xa/uIR1CA6Y593/kpu2SnK3rrh93SaXo7uYKjEZYrB5izYerX8ltXCSNvzcAdz
oWn1po7Qm5YWOXdF6V/gRgCJ4/xodQku
-----END PUBLIC KEY-----";
const ED_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIOIrWyakZ4rjU1LVE9XAUOV7hePvFGv4GHXq3am8qdtn
-----END PRIVATE KEY-----";
const ED_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAMxOFv3bcm9v8K/zr4K9GwHAnC4+jJ7g6d42k5QXBngE=
-----END PUBLIC KEY-----";
const ED_X: &str = "MxOFv3bcm9v8K_zr4K9GwHAnC4-jJ7g6d42k5QXBngE";

const NOW: u64 = 1_700_000_000;
const LEEWAY: Duration = Duration::from_secs(30);

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

fn rsa_jwk() -> String {
    json!({"kty": "RSA", "e": "AQAB", "n": RSA_N}).to_string()
}

fn ec_jwk() -> String {
    json!({"kty": "EC", "crv": "P-256", "x": EC_X, "y": EC_Y}).to_string()
}

fn raw_jwk(jwk: &str) -> RawJwtProvider {
    RawJwtProvider {
        name: "corp".into(),
        jwk: Some(jwk.into()),
        jwks_file: None,
        pem_file: None,
        issuer: None,
        audiences: vec![],
        claims_to_headers: BTreeMap::new(),
        key_claim: None,
        ..Default::default()
    }
}

fn provider(jwk: &str) -> JwtProvider {
    JwtProvider::from_raw(&raw_jwk(jwk), Path::new(".")).unwrap()
}

fn claims() -> Value {
    json!({"sub": "alice", "exp": NOW + 600, "iat": NOW})
}

fn sign(alg: Algorithm, kid: Option<&str>, pem: &str, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    use Algorithm::*;
    let key = match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => {
            EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()
        }
        ES256 | ES384 => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
        HS256 | HS384 | HS512 => EncodingKey::from_secret(pem.as_bytes()),
    };
    encode(&header, claims, &key).unwrap()
}

fn rs(claims: &Value) -> String {
    sign(Algorithm::RS256, None, RSA_PRIVATE, claims)
}

fn es(claims: &Value) -> String {
    sign(Algorithm::ES256, None, EC_PRIVATE, claims)
}

fn bearer(value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
    h
}

fn check(p: &JwtProvider, token: &str) -> Result<JwtIdentity, AuthError> {
    p.verify(&bearer(&format!("Bearer {token}")), LEEWAY, now())
}

fn reason(r: Result<JwtIdentity, AuthError>) -> String {
    match r {
        Err(AuthError::InvalidToken(m)) => m,
        other => panic!("expected InvalidToken, got {other:?}"),
    }
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

#[test]
fn rs256_valid() {
    let p = provider(&rsa_jwk());
    let id = check(&p, &rs(&claims())).unwrap();
    assert_eq!(id.subject, "alice");
    assert!(id.headers.is_empty());
    // Scheme is case-insensitive.
    let h = bearer(&format!("bearer  {}", rs(&claims())));
    assert!(p.verify(&h, LEEWAY, now()).is_ok());
}

#[test]
fn es256_valid() {
    let p = provider(&ec_jwk());
    assert_eq!(check(&p, &es(&claims())).unwrap().subject, "alice");
}

#[test]
fn id_token_form() {
    let p = provider(&rsa_jwk());
    let t = rs(&claims());
    for form in [
        format!("Bearer id_token=\"{t}\""),
        format!("Bearer id_token={t}"),
    ] {
        assert_eq!(
            p.verify(&bearer(&form), LEEWAY, now()).unwrap().subject,
            "alice"
        );
    }
}

#[test]
fn missing_credentials() {
    let p = provider(&rsa_jwk());
    for h in [
        HeaderMap::new(),
        bearer("Basic YWxhZGRpbjpvcGVu"),
        bearer("Bearer"),
        bearer("Bearer   "),
    ] {
        assert!(
            matches!(p.verify(&h, LEEWAY, now()), Err(AuthError::Missing(_))),
            "{h:?}"
        );
    }
    let mut h = bearer("Bearer a.b.c");
    h.append(AUTHORIZATION, HeaderValue::from_static("Bearer d.e.f"));
    assert!(reason(p.verify(&h, LEEWAY, now())).contains("several"));
}

#[test]
fn expiry_and_nbf_with_leeway() {
    let p = provider(&rsa_jwk());
    let expired = json!({"sub": "a", "exp": NOW - 31});
    assert_eq!(reason(check(&p, &rs(&expired))), "token expired");
    let in_leeway = json!({"sub": "a", "exp": NOW - 29});
    assert!(check(&p, &rs(&in_leeway)).is_ok());
    let future = json!({"sub": "a", "exp": NOW + 600, "nbf": NOW + 31});
    assert!(reason(check(&p, &rs(&future))).contains("nbf"));
    let soon = json!({"sub": "a", "exp": NOW + 600, "nbf": NOW + 29});
    assert!(check(&p, &rs(&soon)).is_ok());
    let float = json!({"sub": "a", "exp": (NOW as f64) + 0.5});
    assert!(check(&p, &rs(&float)).is_ok());
    let text = json!({"sub": "a", "exp": "tomorrow"});
    assert!(reason(check(&p, &rs(&text))).contains("exp is not a number"));
}

#[test]
fn exp_required_unless_disabled() {
    let mut p = provider(&rsa_jwk());
    let no_exp = json!({"sub": "a"});
    assert!(reason(check(&p, &rs(&no_exp))).contains("no exp"));
    p.set_require_exp(false);
    assert!(check(&p, &rs(&no_exp)).is_ok());
}

#[test]
fn wrong_key_and_tampering() {
    // EC token signed by another P-256 key.
    let p = provider(&ec_jwk());
    let t = sign(Algorithm::ES256, None, EC2_PRIVATE, &claims());
    assert_eq!(reason(check(&p, &t)), "bad signature");
    // RSA token whose payload was swapped.
    let p = provider(&rsa_jwk());
    let t = rs(&claims());
    let parts: Vec<&str> = t.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(&json!({"sub": "root", "exp": NOW + 60})),
        parts[2]
    );
    assert_eq!(reason(check(&p, &forged)), "bad signature");
    let bad_sig = format!("{}.{}.!!!", parts[0], parts[1]);
    assert!(check(&p, &bad_sig).is_err());
    // ES token against an RSA-only provider.
    assert!(reason(check(&p, &es(&claims()))).contains("no key for algorithm"));
}

#[test]
fn refused_algorithms() {
    let p = provider(&rsa_jwk());
    let payload = b64(&claims());
    let none = format!("{}.{payload}.", b64(&json!({"alg": "none", "typ": "JWT"})));
    assert!(reason(check(&p, &none)).contains("alg none"));
    let none = format!("{}.{payload}.", b64(&json!({"alg": "NONE"})));
    assert!(reason(check(&p, &none)).contains("alg none"));
    // HS256 signed with the RSA public key as secret (algorithm confusion).
    let hs = sign(Algorithm::HS256, None, RSA_PUBLIC, &claims());
    assert!(reason(check(&p, &hs)).contains("\"HS256\" is not allowed"));
    let rs384 = format!("{}.{payload}.AAAA", b64(&json!({"alg": "RS384"})));
    assert!(reason(check(&p, &rs384)).contains("RS384"));
    let noalg = format!("{}.{payload}.AAAA", b64(&json!({"typ": "JWT"})));
    assert!(reason(check(&p, &noalg)).contains("no alg"));
    let crit = format!(
        "{}.{payload}.AAAA",
        b64(&json!({"alg": "RS256", "crit": ["x"]}))
    );
    assert!(reason(check(&p, &crit)).contains("critical"));
}

#[test]
fn malformed_tokens_never_panic() {
    let p = provider(&rsa_jwk());
    for t in [
        "abc",
        "a.b",
        "a.b.c.d",
        "a.b.c.d.e",
        "...",
        "%%%.%%%.%%%",
        "eyJhbGciOiJSUzI1NiJ9.e30.",
        "eyJhbGciOiJSUzI1NiJ9..",
        "W10.e30.AAAA",
        "bnVsbA.e30.AAAA",
    ] {
        assert!(
            matches!(check(&p, t), Err(AuthError::InvalidToken(_))),
            "{t}"
        );
    }
    let long = "a".repeat(MAX_TOKEN + 1);
    assert!(reason(check(&p, &long)).contains("too long"));
    let mut h = HeaderMap::new();
    h.insert(
        AUTHORIZATION,
        HeaderValue::from_bytes(b"Bearer \xff.\xfe.\xfd").unwrap(),
    );
    assert!(p.verify(&h, LEEWAY, now()).is_err());
    // Valid signature but payload not an object.
    let t = sign(Algorithm::RS256, None, RSA_PRIVATE, &json!([1, 2]));
    assert!(reason(check(&p, &t)).contains("JSON object"));
}

#[test]
fn issuer_and_audiences() {
    let mut raw = raw_jwk(&rsa_jwk());
    raw.issuer = Some("https://idp.example".into());
    raw.audiences = vec!["api-1".into(), "api-2".into()];
    let p = JwtProvider::from_raw(&raw, Path::new(".")).unwrap();
    let ok = json!({"sub": "a", "exp": NOW + 60, "iss": "https://idp.example", "aud": "api-2"});
    assert!(check(&p, &rs(&ok)).is_ok());
    let ok =
        json!({"sub": "a", "exp": NOW + 60, "iss": "https://idp.example", "aud": ["x", "api-1"]});
    assert!(check(&p, &rs(&ok)).is_ok());
    let bad_iss = json!({"sub": "a", "exp": NOW + 60, "iss": "https://evil", "aud": "api-1"});
    assert!(reason(check(&p, &rs(&bad_iss))).contains("issuer"));
    let no_iss = json!({"sub": "a", "exp": NOW + 60, "aud": "api-1"});
    assert!(reason(check(&p, &rs(&no_iss))).contains("no iss"));
    let bad_aud = json!({"sub": "a", "exp": NOW + 60, "iss": "https://idp.example", "aud": ["x"]});
    assert!(reason(check(&p, &rs(&bad_aud))).contains("audience"));
    let no_aud = json!({"sub": "a", "exp": NOW + 60, "iss": "https://idp.example"});
    assert!(reason(check(&p, &rs(&no_aud))).contains("no aud"));
}

#[test]
fn subject_and_claims_to_headers() {
    let mut raw = raw_jwk(&ec_jwk());
    raw.key_claim = Some("client_id".into());
    for (c, h) in [
        ("email", "X-User-Email"),
        ("roles", "x-user-roles"),
        ("level", "x-level"),
        ("evil", "x-evil"),
        ("absent", "x-absent"),
        ("nothing", "x-nothing"),
    ] {
        raw.claims_to_headers.insert(c.into(), h.into());
    }
    let p = JwtProvider::from_raw(&raw, Path::new(".")).unwrap();
    let mut names: Vec<&str> = p.header_names().map(HeaderName::as_str).collect();
    names.sort();
    assert_eq!(names.len(), 6);
    let c = json!({
        "client_id": "app-7", "exp": NOW + 60, "email": "a@example.com",
        "roles": ["admin", "dev"], "level": 3, "evil": "x\r\nInjected: 1", "nothing": null
    });
    let id = check(&p, &es(&c)).unwrap();
    assert_eq!(id.subject, "app-7");
    let got: BTreeMap<&str, &str> = id
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
        .collect();
    assert_eq!(got.get("x-user-email"), Some(&"a@example.com"));
    assert_eq!(got.get("x-user-roles"), Some(&r#"["admin","dev"]"#));
    assert_eq!(got.get("x-level"), Some(&"3"));
    assert_eq!(got.len(), 3);
    // Numeric subjects are accepted; missing ones are refused.
    let numeric = json!({"client_id": 42, "exp": NOW + 60});
    assert_eq!(check(&p, &es(&numeric)).unwrap().subject, "42");
    let missing = json!({"sub": "a", "exp": NOW + 60});
    assert!(reason(check(&p, &es(&missing))).contains("client_id"));
    let empty = json!({"client_id": "", "exp": NOW + 60});
    assert!(check(&p, &es(&empty)).is_err());
}

#[test]
fn config_errors() {
    let base = Path::new(".");
    let mut raw = raw_jwk(&rsa_jwk());
    raw.pem_file = Some("x.pem".into());
    assert!(JwtProvider::from_raw(&raw, base)
        .unwrap_err()
        .contains("exactly one"));
    raw.jwk = None;
    raw.pem_file = None;
    assert!(JwtProvider::from_raw(&raw, base).is_err());
    for bad in [
        "not json".to_string(),
        "[]".to_string(),
        json!({"kty": "oct", "k": "c2VjcmV0"}).to_string(),
        json!({"kty": "RSA", "e": "AQAB"}).to_string(),
        json!({"kty": "RSA", "e": "AQAB", "n": "AQAB"}).to_string(), // tiny modulus
        json!({"kty": "RSA", "e": "AQAB", "n": "%%%"}).to_string(),
        json!({"kty": "RSA", "e": "", "n": RSA_N}).to_string(),
        json!({"kty": "EC", "crv": "P-384", "x": EC_X, "y": EC_Y}).to_string(),
        json!({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": EC_Y}).to_string(),
        json!({"kty": "RSA", "e": "AQAB", "n": RSA_N, "alg": "ES256"}).to_string(),
        json!({"kty": "OKP", "crv": "X25519", "x": ED_X}).to_string(),
        json!({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}).to_string(),
        json!({"kty": "RSA", "e": "AQAB", "n": RSA_N, "use": "enc"}).to_string(),
    ] {
        assert!(
            JwtProvider::from_raw(&raw_jwk(&bad), base).is_err(),
            "{bad}"
        );
    }
    let mut raw = raw_jwk(&rsa_jwk());
    raw.claims_to_headers.insert("sub".into(), "Host".into());
    assert!(JwtProvider::from_raw(&raw, base)
        .unwrap_err()
        .contains("reserved"));
    let mut raw = raw_jwk(&rsa_jwk());
    raw.claims_to_headers
        .insert("sub".into(), "bad header".into());
    assert!(JwtProvider::from_raw(&raw, base).is_err());
    let mut raw = raw_jwk(&rsa_jwk());
    raw.claims_to_headers.insert("sub".into(), "x-a".into());
    raw.claims_to_headers.insert("email".into(), "X-A".into());
    assert!(JwtProvider::from_raw(&raw, base)
        .unwrap_err()
        .contains("twice"));
    let mut raw = raw_jwk(&rsa_jwk());
    raw.key_claim = Some(String::new());
    assert!(JwtProvider::from_raw(&raw, base).is_err());
    // Declared alg matching the key type is fine.
    let ok = json!({"kty": "RSA", "e": "AQAB", "n": RSA_N, "alg": "RS256", "use": "sig"});
    assert!(JwtProvider::from_raw(&raw_jwk(&ok.to_string()), base).is_ok());
}

fn file_provider(dir: &Path, field: &str, file: &str, text: &str) -> Result<JwtProvider, String> {
    std::fs::write(dir.join(file), text).unwrap();
    let mut raw = raw_jwk("");
    raw.jwk = None;
    match field {
        "pem" => raw.pem_file = Some(file.into()),
        _ => raw.jwks_file = Some(file.into()),
    }
    JwtProvider::from_raw(&raw, dir)
}

#[test]
fn pem_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = file_provider(d, "pem", "rsa.pem", RSA_PUBLIC).unwrap();
    assert!(check(&p, &rs(&claims())).is_ok());
    assert!(check(&p, &es(&claims())).is_err());
    let p = file_provider(d, "pem", "rsa1.pem", RSA_PUBLIC_PKCS1).unwrap();
    assert!(check(&p, &rs(&claims())).is_ok());
    let p = file_provider(d, "pem", "ec.pem", &format!("# comment\n{EC_PUBLIC}\n")).unwrap();
    assert!(check(&p, &es(&claims())).is_ok());
    assert!(check(&p, &rs(&claims())).is_err());
    let e = file_provider(d, "pem", "priv.pem", RSA_PRIVATE).unwrap_err();
    assert!(e.contains("private key"), "{e}");
    let p = file_provider(d, "pem", "p384.pem", EC384_PUBLIC).unwrap();
    assert!(reason(check(&p, &es(&claims()))).contains("no key for algorithm ES256"));
    assert!(file_provider(d, "pem", "junk.pem", "hello").is_err());
    let truncated = &RSA_PUBLIC[..200];
    assert!(file_provider(d, "pem", "trunc.pem", truncated).is_err());
    let mut raw = raw_jwk("");
    raw.jwk = None;
    raw.pem_file = Some("does-not-exist.pem".into());
    assert!(JwtProvider::from_raw(&raw, d)
        .unwrap_err()
        .contains("cannot read"));
}

#[test]
fn jwks_with_kid() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = json!({"keys": [
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        {"kty": "RSA", "e": "AQAB", "n": RSA_N, "kid": "rsa-1", "use": "sig"},
        {"kty": "EC", "crv": "P-256", "x": EC_X, "y": EC_Y, "kid": "ec-1"},
        {"kty": "EC", "crv": "P-256", "x": EC2_X, "y": EC2_Y, "kid": "ec-2"},
    ]});
    let p = file_provider(dir.path(), "jwks", "keys.json", &jwks.to_string()).unwrap();
    let t = sign(Algorithm::ES256, Some("ec-1"), EC_PRIVATE, &claims());
    assert!(check(&p, &t).is_ok());
    let t = sign(Algorithm::ES256, Some("ec-2"), EC2_PRIVATE, &claims());
    assert!(check(&p, &t).is_ok());
    // Right kid, wrong signer.
    let t = sign(Algorithm::ES256, Some("ec-2"), EC_PRIVATE, &claims());
    assert_eq!(reason(check(&p, &t)), "bad signature");
    let t = sign(Algorithm::RS256, Some("rsa-1"), RSA_PRIVATE, &claims());
    assert!(check(&p, &t).is_ok());
    let t = sign(Algorithm::RS256, Some("rsa-9"), RSA_PRIVATE, &claims());
    assert!(reason(check(&p, &t)).contains("unknown kid"));
    // kid naming a key of another algorithm.
    let t = sign(Algorithm::RS256, Some("ec-1"), RSA_PRIVATE, &claims());
    assert!(reason(check(&p, &t)).contains("no key for algorithm"));
    // No kid: every key of the algorithm is tried.
    let t = sign(Algorithm::ES256, None, EC2_PRIVATE, &claims());
    assert!(check(&p, &t).is_ok());
    // The HMAC key was skipped: an HS256 token is refused.
    let t = sign(Algorithm::HS256, Some("hmac"), "secret", &claims());
    assert!(check(&p, &t).is_err());

    let e = file_provider(
        dir.path(),
        "jwks",
        "none.json",
        r#"{"keys":[{"kty":"oct","k":"AA"}]}"#,
    )
    .unwrap_err();
    assert!(e.contains("no usable"), "{e}");
    assert!(file_provider(
        dir.path(),
        "jwks",
        "bad.json",
        r#"{"keys":[{"kty":"RSA"}]}"#
    )
    .is_err());
    assert!(file_provider(dir.path(), "jwks", "nokeys.json", r#"{"k":[]}"#).is_err());
}

#[test]
fn mutated_pem_never_panics() {
    let mut state = 0x0123_4567_89ab_cdefu64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for pem in [RSA_PUBLIC, RSA_PUBLIC_PKCS1, EC_PUBLIC, EC384_PUBLIC] {
        let (label, body) = pem.split_once('\n').unwrap();
        let body = body.trim_end().trim_end_matches(|c| c != '\n').trim_end();
        let der = STANDARD
            .decode(body.split_whitespace().collect::<String>())
            .unwrap();
        let end = label.replace("BEGIN", "END");
        for _ in 0..2000 {
            let mut d = der.clone();
            match next() % 3 {
                0 => d.truncate((next() % (d.len() as u64 + 1)) as usize),
                _ => {
                    let i = (next() % d.len() as u64) as usize;
                    d[i] = next() as u8;
                }
            }
            let text = format!("{label}\n{}\n{end}\n", STANDARD.encode(&d));
            let _ = parse_pem(&text, None);
        }
    }
    for t in [
        "-----BEGIN ",
        "-----BEGIN X-----",
        "-----BEGIN PUBLIC KEY-----\n-----END ",
    ] {
        assert!(parse_pem(t, None).is_err());
    }
}

#[test]
fn kid_on_single_jwk_without_kid_is_ignored() {
    let p = provider(&rsa_jwk());
    let t = sign(Algorithm::RS256, Some("whatever"), RSA_PRIVATE, &claims());
    assert!(check(&p, &t).is_ok());
    let p = provider(&json!({"kty": "RSA", "e": "AQAB", "n": RSA_N, "kid": "k1"}).to_string());
    assert!(reason(check(&p, &t)).contains("unknown kid"));
    assert!(format!("{p:?}").contains("corp"));
    assert_eq!(p.name(), "corp");
}

#[test]
fn rsa_family_algorithms_are_pinned_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A JWK declaring PS256: only PS256 tokens pass with it.
    let p = provider(&json!({"kty": "RSA", "e": "AQAB", "n": RSA_N, "alg": "PS256"}).to_string());
    assert!(check(&p, &sign(Algorithm::PS256, None, RSA_PRIVATE, &claims())).is_ok());
    assert!(reason(check(&p, &rs(&claims()))).contains("no key for algorithm RS256"));
    // The provider's `algorithm` pins a PEM key.
    std::fs::write(d.join("rsa.pem"), RSA_PUBLIC).unwrap();
    for alg in [
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS384,
        Algorithm::PS512,
    ] {
        let mut raw = raw_jwk("");
        raw.jwk = None;
        raw.pem_file = Some("rsa.pem".into());
        raw.algorithm = Some(format!("{alg:?}").into());
        let p = JwtProvider::from_raw(&raw, d).unwrap();
        assert!(
            check(&p, &sign(alg, None, RSA_PRIVATE, &claims())).is_ok(),
            "{alg:?}"
        );
        assert!(
            check(&p, &rs(&claims())).is_err(),
            "{alg:?} key refuses RS256"
        );
    }
    // Names outside RS256..PS512 (ES256, HS256) are refused by the config
    // compiler (config::compile tests).
}

#[test]
fn es384_and_eddsa_from_pem_and_jwk() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = file_provider(d, "pem", "p384.pem", EC384B_PUBLIC).unwrap();
    assert!(check(&p, &sign(Algorithm::ES384, None, EC384B_PRIVATE, &claims())).is_ok());
    assert!(check(&p, &es(&claims())).is_err());
    let p = file_provider(d, "pem", "ed.pem", ED_PUBLIC).unwrap();
    assert!(check(&p, &sign(Algorithm::EdDSA, None, ED_PRIVATE, &claims())).is_ok());
    let other = sign(
        Algorithm::EdDSA,
        None,
        ED_PRIVATE,
        &json!({"sub": "x", "exp": NOW + 60}),
    );
    let parts: Vec<&str> = other.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], b64(&claims()), parts[2]);
    assert_eq!(reason(check(&p, &forged)), "bad signature");
    let p = provider(&json!({"kty": "OKP", "crv": "Ed25519", "x": ED_X, "kid": "ed"}).to_string());
    assert!(check(
        &p,
        &sign(Algorithm::EdDSA, Some("ed"), ED_PRIVATE, &claims())
    )
    .is_ok());
    assert!(reason(check(&p, &rs(&claims()))).contains("no key for algorithm"));
}

#[test]
fn required_claims_and_max_lifetime() {
    let mut raw = raw_jwk(&rsa_jwk());
    raw.required_claims
        .insert("scope".into(), RawClaimValue::One("orders:read".into()));
    raw.required_claims.insert(
        "role".into(),
        RawClaimValue::Any(vec!["admin".into(), "ops".into()]),
    );
    raw.max_lifetime = Some(Duration::from_secs(3600));
    let p = JwtProvider::from_raw(&raw, Path::new(".")).unwrap();
    let with = |extra: Value| {
        let mut c = claims();
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        rs(&c)
    };
    assert!(check(
        &p,
        &with(json!({"scope": "a orders:read b", "role": "ops"}))
    )
    .is_ok());
    assert!(check(
        &p,
        &with(json!({"scope": "orders:read", "role": ["x", "admin"]}))
    )
    .is_ok());
    assert!(reason(check(
        &p,
        &with(json!({"scope": "orders:write", "role": "ops"}))
    ))
    .contains("scope not accepted"));
    assert!(reason(check(&p, &with(json!({"scope": "orders:read"})))).contains("no role"));
    assert!(reason(check(
        &p,
        &with(json!({"scope": "orders:read", "role": "admins"}))
    ))
    .contains("role not accepted"));
    // Lifetime: by iat, and by exp alone.
    let long = json!({"scope": "orders:read", "role": "ops", "iat": NOW - 7200, "exp": NOW + 60});
    assert!(reason(check(&p, &with(long))).contains("max_lifetime"));
    let far = json!({"scope": "orders:read", "role": "ops", "exp": NOW + 7200});
    let mut c = claims();
    c.as_object_mut().unwrap().remove("iat");
    for (k, v) in far.as_object().unwrap() {
        c[k] = v.clone();
    }
    assert!(reason(check(&p, &rs(&c))).contains("max_lifetime"));
    let mut raw = raw_jwk(&rsa_jwk());
    raw.required_claims
        .insert("scope".into(), RawClaimValue::Any(vec![]));
    assert!(JwtProvider::from_raw(&raw, Path::new(".")).is_err());
}

#[test]
fn fractional_exp_is_compared_exactly() {
    let p = provider(&rsa_jwk());
    let at = |t: f64| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(t);
    let token = rs(&json!({"sub": "a", "exp": NOW as f64 + 0.5}));
    let h = bearer(&format!("Bearer {token}"));
    assert!(p.verify(&h, Duration::ZERO, at(NOW as f64 + 0.4)).is_ok());
    assert!(p.verify(&h, Duration::ZERO, at(NOW as f64 + 0.5)).is_err());
    // Not rounded to the nearest second (which would make it NOW + 1).
    assert_eq!(
        reason(p.verify(&h, Duration::ZERO, at(NOW as f64 + 0.75))),
        "token expired"
    );
    // The leeway is added to the exact value.
    assert!(p.verify(&h, LEEWAY, at(NOW as f64 + 30.25)).is_ok());
    assert!(p.verify(&h, LEEWAY, at(NOW as f64 + 30.5)).is_err());
}

#[test]
fn fractional_nbf_is_compared_exactly() {
    let p = provider(&rsa_jwk());
    let at = |t: f64| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(t);
    let token = rs(&json!({"sub": "a", "exp": NOW + 600, "nbf": NOW as f64 + 0.25}));
    let h = bearer(&format!("Bearer {token}"));
    // Not rounded down to NOW: refused until NOW + 0.25 itself.
    assert!(reason(p.verify(&h, Duration::ZERO, at(NOW as f64))).contains("nbf"));
    assert!(reason(p.verify(&h, Duration::ZERO, at(NOW as f64 + 0.125))).contains("nbf"));
    assert!(p.verify(&h, Duration::ZERO, at(NOW as f64 + 0.25)).is_ok());
    assert!(p.verify(&h, LEEWAY, at(NOW as f64 - 29.75)).is_ok());
    assert!(p.verify(&h, LEEWAY, at(NOW as f64 - 30.0)).is_err());
}

#[test]
fn jwks_url_sets_are_remembered_per_cache_not_per_process() {
    let mut raw = raw_jwk("");
    raw.jwk = None;
    raw.jwks_url = Some("http://127.0.0.1:1/keys".into());
    let url: http::Uri = "http://127.0.0.1:1/keys".parse().unwrap();
    let jwks = json!({"keys": [{"kty": "RSA", "e": "AQAB", "n": RSA_N}]}).to_string();
    let set = keys::parse_jwks(&jwks, None).unwrap();
    let state = JwksCache::default();
    state.remember(&url, None, &set);
    // A provider compiled with that state (a reload) starts from the set...
    let p = JwtProvider::from_raw_in(&raw, Path::new("."), &state).unwrap();
    assert!(check(&p, &rs(&claims())).is_ok());
    // ...one with another state (another gateway, another test) does not.
    let p = JwtProvider::from_raw_in(&raw, Path::new("."), &JwksCache::default()).unwrap();
    assert!(reason(check(&p, &rs(&claims()))).contains("not loaded"));
    // The set is per provider algorithm: an RS384-pinned provider does not reuse it.
    raw.algorithm = Some("RS384".into());
    let p = JwtProvider::from_raw_in(&raw, Path::new("."), &state).unwrap();
    assert!(reason(check(&p, &rs(&claims()))).contains("not loaded"));
}

#[test]
fn token_from_cookie_or_query() {
    let mut raw = raw_jwk(&rsa_jwk());
    raw.token_cookie = Some("jwt".into());
    raw.token_query = Some("access_token".into());
    let p = JwtProvider::from_raw(&raw, Path::new(".")).unwrap();
    let t = rs(&claims());
    let mut h = HeaderMap::new();
    h.insert(
        http::header::COOKIE,
        HeaderValue::from_str(&format!("a=1; jwt={t}; b=2")).unwrap(),
    );
    assert_eq!(
        p.verify_request(&h, None, LEEWAY, now()).unwrap().subject,
        "alice"
    );
    let q = format!("x=1&access_token={t}");
    assert!(p
        .verify_request(&HeaderMap::new(), Some(&q), LEEWAY, now())
        .is_ok());
    let e = p
        .verify_request(&HeaderMap::new(), Some("x=1"), LEEWAY, now())
        .unwrap_err();
    assert!(
        matches!(&e, AuthError::Missing(m) if m.contains("jwt cookie") && m.contains("access_token")),
        "{e:?}"
    );
    let twice = format!("access_token={t}&access_token={t}");
    assert!(p
        .verify_request(&HeaderMap::new(), Some(&twice), LEEWAY, now())
        .is_err());
    // A bad Bearer token is not rescued by a good cookie.
    h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer a.b.c"));
    assert!(p.verify_request(&h, None, LEEWAY, now()).is_err());
    // Without the settings neither is read.
    let plain = provider(&rsa_jwk());
    assert!(matches!(
        plain.verify_request(&HeaderMap::new(), Some(&q), LEEWAY, now()),
        Err(AuthError::Missing(_))
    ));
    let mut bad = raw_jwk(&rsa_jwk());
    bad.token_cookie = Some("a;b".into());
    assert!(JwtProvider::from_raw(&bad, Path::new(".")).is_err());
}

#[test]
fn strip_cookie_keeps_the_others() {
    let mut h = HeaderMap::new();
    h.append(
        http::header::COOKIE,
        HeaderValue::from_static("a=1; jwt=x; b=2"),
    );
    h.append(http::header::COOKIE, HeaderValue::from_static("jwt=y"));
    strip_cookie(&mut h, "jwt");
    let all: Vec<_> = h.get_all(http::header::COOKIE).iter().collect();
    assert_eq!(all, ["a=1; b=2"]);
}

#[test]
fn jwks_url_settings_are_checked() {
    let mut raw = raw_jwk("");
    raw.jwk = None;
    raw.jwks_url = Some("ftp://example.com/keys".into());
    assert!(JwtProvider::from_raw(&raw, Path::new("."))
        .unwrap_err()
        .contains("http"));
    raw.jwks_url = Some("http://127.0.0.1:1/keys".into());
    raw.jwks_refresh = Some(Duration::from_millis(10));
    assert!(JwtProvider::from_raw(&raw, Path::new("."))
        .unwrap_err()
        .contains("jwks_refresh"));
    raw.jwks_refresh = None;
    // Outside a runtime (keygate check) nothing is fetched: no keys yet.
    let p = JwtProvider::from_raw(&raw, Path::new(".")).unwrap();
    assert!(reason(check(&p, &rs(&claims()))).contains("not loaded"));
    let mut raw = raw_jwk(&rsa_jwk());
    raw.jwks_timeout = Some(Duration::from_secs(1));
    assert!(JwtProvider::from_raw(&raw, Path::new("."))
        .unwrap_err()
        .contains("need jwks_url"));
}
