//! Signature verification cost per scheme (valid requests), plus the replay cache.
//! `cargo bench --bench auth -- --warm-up-time 1 --measurement-time 2`

use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion};
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use keygate::auth::hmac::HmacSettings;
use keygate::auth::replay::ReplayCache;
use keygate::auth::tc1::Tc1Settings;
use keygate::auth::tc3::Tc3Settings;
use keygate::auth::{Key, Keys, RequestParts};
use sha2::{Digest, Sha256};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ID: &str = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE";
const SECRET: &str = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE";

fn keys() -> Keys {
    let mut k = Keys::new();
    for id in [ID, "123456"] {
        k.insert(
            id.into(),
            Arc::new(Key::new(id.into(), SECRET.into(), None, true)),
        );
    }
    k
}

fn headers(h: &[(&str, &str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (n, v) in h {
        m.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    m
}

fn b64_mac<M: Mac + hmac::digest::KeyInit>(key: &[u8], msg: &[u8]) -> String {
    let mut m = <M as Mac>::new_from_slice(key).unwrap();
    m.update(msg);
    base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
}

fn bench_hmac(c: &mut Criterion) {
    let now = SystemTime::now();
    let date = httpdate::fmt_http_date(now);
    let sig = b64_mac::<Hmac<sha1::Sha1>>(
        SECRET.as_bytes(),
        format!("date: {date}\nsource: AndriodApp\nrequest-line: GET /echo?a=1 HTTP/1.1")
            .as_bytes(),
    );
    let h = headers(&[
        ("date", &date),
        ("source", "AndriodApp"),
        ("authorization", &format!("hmac id=\"{ID}\", algorithm=\"hmac-sha1\", headers=\"date source request-line\", signature=\"{sig}\"")),
    ]);
    let (m, u) = (Method::GET, Uri::from_static("/echo?a=1"));
    let req = RequestParts {
        method: &m,
        uri: &u,
        version: Version::HTTP_11,
        headers: &h,
        body: None,
    };
    let (s, k) = (HmacSettings::default(), keys());
    keygate::auth::hmac::verify(&s, &req, &k, now).unwrap();
    c.bench_function("verify/hmac-sha1", |b| {
        b.iter(|| keygate::auth::hmac::verify(&s, black_box(&req), &k, now).unwrap())
    });
}

fn tc3_sign(key: &[u8], msg: &str) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    m.update(msg.as_bytes());
    m.finalize().into_bytes().to_vec()
}

fn bench_tc3(c: &mut Criterion) {
    let ts = 1551113065u64;
    let now = UNIX_EPOCH + Duration::from_secs(ts);
    let body = br#"{"Limit": 1, "Filters": [{"Values": ["unnamed"], "Name": "instance-name"}]}"#;
    let cr = format!(
        "POST\n/\n\ncontent-type:application/json; charset=utf-8\nhost:cvm.tencentcloudapi.com\n\ncontent-type;host\n{}",
        hex::encode(Sha256::digest(body))
    );
    let sts = format!(
        "TC3-HMAC-SHA256\n{ts}\n2019-02-25/cvm/tc3_request\n{}",
        hex::encode(Sha256::digest(cr.as_bytes()))
    );
    let k = tc3_sign(format!("TC3{SECRET}").as_bytes(), "2019-02-25");
    let k = tc3_sign(&k, "cvm");
    let k = tc3_sign(&k, "tc3_request");
    let sig = hex::encode(tc3_sign(&k, &sts));
    let h = headers(&[
        ("authorization", &format!("TC3-HMAC-SHA256 Credential={ID}/2019-02-25/cvm/tc3_request, SignedHeaders=content-type;host, Signature={sig}")),
        ("content-type", "application/json; charset=utf-8"),
        ("host", "cvm.tencentcloudapi.com"),
        ("x-tc-action", "DescribeInstances"),
        ("x-tc-timestamp", &ts.to_string()),
        ("x-tc-version", "2017-03-12"),
    ]);
    let (m, u) = (Method::POST, Uri::from_static("/"));
    let req = RequestParts {
        method: &m,
        uri: &u,
        version: Version::HTTP_11,
        headers: &h,
        body: Some(body),
    };
    let (s, keys) = (Tc3Settings::default(), keys());
    keygate::auth::tc3::verify(&s, Some("cvm"), false, &req, &keys, now).unwrap();
    c.bench_function("verify/tc3", |b| {
        b.iter(|| {
            keygate::auth::tc3::verify(&s, Some("cvm"), false, black_box(&req), &keys, now).unwrap()
        })
    });
}

fn bench_tc1(c: &mut Criterion) {
    let now = UNIX_EPOCH + Duration::from_secs(1465185768);
    let uri = Uri::from_static("/?Action=DescribeInstances&InstanceIds.0=ins-09dx96dg&Limit=20&Nonce=11886&Offset=0&Region=ap-guangzhou&SecretId=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE&Signature=EliP9YW3pW28FpsEdkXt%2F%2BWcGeI%3D&Timestamp=1465185768&Version=2017-03-12");
    let h = headers(&[("host", "cvm.tencentcloudapi.com")]);
    let m = Method::GET;
    let req = RequestParts {
        method: &m,
        uri: &uri,
        version: Version::HTTP_11,
        headers: &h,
        body: None,
    };
    let (s, k) = (Tc1Settings::default(), keys());
    keygate::auth::tc1::verify(&s, &req, &k, now).unwrap();
    c.bench_function("verify/tc1", |b| {
        b.iter(|| keygate::auth::tc1::verify(&s, black_box(&req), &k, now).unwrap())
    });
}

fn bench_openapi(c: &mut Criterion) {
    let src = "GET&%2Fv3%2Fuser%2Fget_info&appid%3D123456%26format%3Djson%26openid%3D11111111111111111%26openkey%3D2222222222222222%26pf%3Dqzone%26userip%3D112.90.139.30";
    let sig = b64_mac::<Hmac<sha1::Sha1>>(format!("{SECRET}&").as_bytes(), src.as_bytes());
    let sig = sig
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let uri: Uri = format!("/v3/user/get_info?openid=11111111111111111&openkey=2222222222222222&appid=123456&pf=qzone&format=json&userip=112.90.139.30&sig={sig}").parse().unwrap();
    let h = HeaderMap::new();
    let m = Method::GET;
    let req = RequestParts {
        method: &m,
        uri: &uri,
        version: Version::HTTP_11,
        headers: &h,
        body: None,
    };
    let k = keys();
    keygate::auth::openapi::verify(&req, &k).unwrap();
    c.bench_function("verify/openapi", |b| {
        b.iter(|| keygate::auth::openapi::verify(black_box(&req), &k).unwrap())
    });
}

fn bench_replay(c: &mut Criterion) {
    let cache = ReplayCache::new(1_000_000);
    let start = Instant::now();
    let mut i = 0u64;
    let mut tok = String::with_capacity(32);
    c.bench_function("replay/check_and_insert", |b| {
        b.iter(|| {
            i += 1;
            tok.clear();
            use std::fmt::Write;
            let _ = write!(tok, "{i}");
            // 1 ms of simulated time per request with a 60 s TTL: steady state
            // of 60 000 live entries, continuously pruned.
            let now = start + Duration::from_millis(i);
            cache
                .check_and_insert(ID, &tok, Duration::from_secs(60), now)
                .unwrap()
        })
    });
}

criterion_group!(
    benches,
    bench_hmac,
    bench_tc3,
    bench_tc1,
    bench_openapi,
    bench_replay
);
criterion_main!(benches);
