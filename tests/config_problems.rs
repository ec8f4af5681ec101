//! `keygate check` reports each mistake of a config exactly once, at the item
//! it belongs to (with the line of that item), whatever else is wrong.

use std::process::Command;

/// The problems `keygate check` prints for `text`, one per line.
fn problems(text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keygate.toml");
    std::fs::write(&path, text).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .expect("run keygate check");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "accepted:\n{err}");
    let mut lines = err.lines();
    let head = lines.next().unwrap_or_default().to_string();
    let problems: Vec<String> = lines
        .filter_map(|l| l.strip_prefix("  "))
        .map(str::to_string)
        .collect();
    assert!(
        head.ends_with(&format!(": {} problem(s)", problems.len())),
        "{err}"
    );
    problems
}

/// Each of `want` is (a part of) exactly one problem, and there is no other.
fn assert_each_once(got: &[String], want: &[&str]) {
    for w in want {
        let n = got.iter().filter(|g| g.contains(w)).count();
        assert_eq!(n, 1, "{w:?} in {n} problems:\n{got:#?}");
    }
    assert_eq!(got.len(), want.len(), "{got:#?}");
}

#[test]
fn zero_qps_on_a_plan_a_service_and_an_api_is_three_problems() {
    let got = problems(
        r#"
[[keys]]
id = "k1"
secret = "s1"

[[usage_plans]]
name = "gold"
qps = 0
keys = ["k1"]

[[services]]
name = "shop"
qps = 0
usage_plans = ["gold"]

[[services.apis]]
name = "orders"
path = "/orders"
auth = "hmac"
qps = 0
[services.apis.backend]
type = "mock"

[[services.apis]]
name = "items"
path = "/items"
auth = "hmac"
[services.apis.backend]
type = "mock"
"#,
    );
    assert_each_once(
        &got,
        &[
            "line 7: usage_plans (gold): qps must be positive (omit it for unlimited)",
            "line 12: services (shop): qps must be positive (omit it for unlimited)",
            "line 17: services (shop) / apis (orders): qps must be positive (omit it for unlimited)",
        ],
    );
}

/// Mistakes of every kind in one file: a wrong name of a closed set, a zero
/// where a positive number is needed, references to things not defined, a
/// bad `[cluster]`, a limit plugin and an API that uses it, a service setting
/// shared by several APIs. One problem each, none hidden by another.
#[test]
fn mistakes_of_every_kind_are_one_problem_each() {
    let got = problems(
        r#"
[server]
max_body_bytes = 0

[cluster]
redis = "http://127.0.0.1:6379"
on_error = "lcoal"

[log]
format = "jsn"

[[keys]]
id = "k1"
secret = "s1"

[[usage_plans]]
name = "gold"
quota = 0
keys = ["k1", "k9"]

[[plugins]]
name = "flow"
type = "traffic_control"
expire_type = "minute"
api_rate_limit = 0

[[plugins]]
name = "cors-a"
type = "cors"
allow_origin = ["*"]

[[plugins]]
name = "cors-b"
type = "cors"
allow_origin = ["*"]

[[services]]
name = "shop"
qps = 0
plugins = ["cors-a", "cors-b"]
usage_plans = ["gold", "silver"]

[[services.apis]]
name = "orders"
path = "/orders"
auth = "jwtt"
jwt_provider = "corp"
plugins = ["flow", "flwo"]
[services.apis.backend]
type = "htp"
url = "http://127.0.0.1:1"

[[services.apis]]
name = "items"
path = "/items"
auth = "jwt"
jwt_provider = "corp"
[services.apis.backend]
url = "http://127.0.0.1:1"
timeout = "45s"
"#,
    );
    assert_each_once(
        &got,
        &[
            "server.max_body_bytes: must be positive",
            "cluster.on_error: \"lcoal\" is not one of local, allow, deny; did you mean \"local\"?",
            "cluster.redis: must be a redis:// or rediss:// (TLS) URL",
            "log.format: \"jsn\" is not one of text, json; did you mean \"json\"?",
            "line 17: usage_plans (gold): quota must be positive",
            "line 17: usage_plans (gold): key \"k9\" is not defined in [[keys]]",
            "line 22: plugins (flow): api_rate_limit: must be a positive integer",
            "line 38: services (shop): qps must be positive",
            "line 38: services (shop): usage plan \"silver\" is not defined",
            "line 38: services (shop): plugin \"cors-b\": only one cors plugin per API",
            "line 44: services (shop) / apis (orders): auth \"jwtt\" is not one of none, hmac, tc3, tc1, jwt, openapi, key, external; did you mean \"jwt\"?",
            "line 44: services (shop) / apis (orders): plugin \"flwo\" is not defined; did you mean \"flow\"?",
            "line 44: services (shop) / apis (orders) / backend: type \"htp\" is not one of http, mock, websocket; did you mean \"http\"?",
            "line 54: services (shop) / apis (items): jwt_provider \"corp\" is not defined",
            "line 54: services (shop) / apis (items) / backend: timeout must be between 1ms and 30s",
        ],
    );
}

/// A wrong name in the closed sets of the auth schemes and of declared
/// parameters: one problem each, at its line, with the accepted names.
#[test]
fn wrong_algorithm_and_parameter_names_are_one_problem_each() {
    let got = problems(
        r#"
[auth.hmac]
max_skew = "5m"
algorithms = ["hmac-sha256", "HMAC-SHA512", "hmac-md5"]

[[keys]]
id = "k1"
secret = "s1"

[[jwt_providers]]
name = "corp"
pem_file = "no-such.pem"
algorithm = "rs256"

[[services]]
name = "shop"

[[services.apis]]
name = "orders"
path = "/orders/{id}"
auth = "jwt"
jwt_provider = "corp"
[[services.apis.params]]
name = "id"
in = "paht"
[[services.apis.params]]
name = "n"
type = "integer"
[[services.apis.params]]
name = "m"
in = "header"
backend_in = "Query"
[services.apis.backend]
url = "http://127.0.0.1:1"

[[services.apis]]
name = "items"
path = "/items"
auth = "hmac"
[[services.apis.params]]
name = "page"
type = "int"
backend_in = "header"
[services.apis.backend]
url = "http://127.0.0.1:1"
"#,
    );
    assert_each_once(
        &got,
        &[
            "line 4: auth.hmac: algorithms \"hmac-md5\" is not one of hmac-sha1, hmac-sha256, hmac-sha384, hmac-sha512",
            "line 11: jwt_providers (corp): algorithm \"rs256\" is not one of RS256, RS384, RS512, PS256, PS384, PS512; did you mean \"RS256\"?",
            "line 11: jwt_providers (corp): jwt provider \"corp\": cannot read",
            "line 19: services (shop) / apis (orders): params[0] (id): in \"paht\" is not one of query, header, path; did you mean \"path\"?",
            "line 19: services (shop) / apis (orders): params[1] (n): type \"integer\" is not one of string, int, long, float, double, boolean; did you mean \"int\"?",
            "line 19: services (shop) / apis (orders): params[2] (m): backend_in \"Query\" is not one of query, header, path; did you mean \"query\"?",
        ],
    );
}
