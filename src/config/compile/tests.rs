//! Each mistake of a config is one problem, at the item it belongs to.

use super::{compile, parse};
use crate::state::State;
use crate::store::LimitState;
use std::path::Path;

fn problems(toml: &str) -> Vec<String> {
    let raw = parse(toml).expect("parses");
    let state = State::new(Path::new("."), 16, LimitState::in_memory());
    match compile(&raw, "test".into(), &state) {
        Ok(_) => vec![],
        Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
    }
}

/// Asserts that `toml` has exactly the problems `want` (each a prefix of one
/// problem), in any order.
fn assert_problems(toml: &str, want: &[&str]) {
    let got = problems(toml);
    for w in want {
        let n = got.iter().filter(|g| g.starts_with(w)).count();
        assert_eq!(n, 1, "{w:?} found {n} times in {got:#?}");
    }
    assert_eq!(got.len(), want.len(), "{got:#?}");
}

const MOCK: &str = "[services.apis.backend]\ntype = \"mock\"\n";

#[test]
fn zero_qps_on_a_plan_a_service_and_an_api_is_three_problems() {
    assert_problems(
        &format!(
            "[[keys]]\nid = \"k1\"\nsecret = \"s\"\n\
             [[usage_plans]]\nname = \"gold\"\nqps = 0\nquota = 0\nkeys = [\"k1\"]\n\
             [[services]]\nname = \"s\"\nqps = 0\nusage_plans = [\"gold\"]\n\
             [[services.apis]]\nname = \"a\"\npath = \"/a\"\nqps = 0\n{MOCK}\
             [[services.apis]]\nname = \"b\"\npath = \"/b\"\n{MOCK}"
        ),
        &[
            "usage_plans (gold): qps must be positive (omit it for unlimited)",
            "usage_plans (gold): quota must be positive (omit it for unlimited)",
            "services (s): qps must be positive (omit it for unlimited)",
            "services (s) / apis (a): qps must be positive (omit it for unlimited)",
        ],
    );
}

#[test]
fn a_shared_setting_is_reported_where_it_is_written_not_at_each_api() {
    let apis = format!(
        "[[services.apis]]\nname = \"a\"\npath = \"/a\"\n{MOCK}\
         [[services.apis]]\nname = \"b\"\npath = \"/b\"\n{MOCK}"
    );
    // A zero server-wide body limit.
    assert_problems(
        &format!("[server]\nmax_body_bytes = 0\n[[services]]\nname = \"s\"\n{apis}"),
        &["server.max_body_bytes: must be positive"],
    );
    // Two cors plugins bound to the whole service.
    let cors = "[[plugins]]\nname = \"c1\"\ntype = \"cors\"\nallow_origin = [\"*\"]\n\
                [[plugins]]\nname = \"c2\"\ntype = \"cors\"\nallow_origin = [\"*\"]\n";
    assert_problems(
        &format!("{cors}[[services]]\nname = \"s\"\nplugins = [\"c1\", \"c2\"]\n{apis}"),
        &["services (s): plugin \"c2\": only one cors plugin per API"],
    );
    // ... while an API that adds a conflict of its own is reported.
    assert_problems(
        &format!(
            "{cors}[[services]]\nname = \"s\"\nplugins = [\"c1\"]\n\
             [[services.apis]]\nname = \"a\"\npath = \"/a\"\nplugins = [\"c2\"]\n{MOCK}"
        ),
        &["services (s) / apis (a): plugin \"c2\": only one cors plugin per API"],
    );
    // Two plans of the service binding one key, and an API with a plan of its own.
    assert_problems(
        &format!(
            "[[keys]]\nid = \"k1\"\nsecret = \"s\"\n[[keys]]\nid = \"k2\"\nsecret = \"t\"\n\
             [[usage_plans]]\nname = \"p1\"\nkeys = [\"k1\"]\n\
             [[usage_plans]]\nname = \"p2\"\nkeys = [\"k1\"]\n\
             [[usage_plans]]\nname = \"p3\"\nkeys = [\"k2\"]\n\
             [[services]]\nname = \"s\"\nusage_plans = [\"p1\", \"p2\"]\n\
             [[services.apis]]\nname = \"a\"\npath = \"/a\"\nauth = \"hmac\"\nusage_plans = [\"p3\"]\n{MOCK}"
        ),
        &["services (s): key \"k1\" is bound by two usage plans of this service: p1 and p2"],
    );
    // An undefined plugin listed by the service and by its API.
    assert_problems(
        &format!(
            "[[services]]\nname = \"s\"\nplugins = [\"ghost\"]\n\
             [[services.apis]]\nname = \"a\"\npath = \"/a\"\nplugins = [\"ghost\"]\n{MOCK}"
        ),
        &["services (s): plugin \"ghost\" is not defined"],
    );
}

#[test]
fn a_limit_plugin_is_checked_once_with_one_problem_per_mistake() {
    assert_problems(
        "[[plugins]]\nname = \"flow\"\ntype = \"traffic_control\"\nexpire_type = \"secnd\"\n\
         expire = 0\napi_rate_limit = 0\nspec_ip_rate_limits = [{ ip_key = \"nope\", rate_limit = 1 }]\n\
         [[plugins]]\nname = \"by-param\"\ntype = \"param_traffic_control\"\n\
         [[plugins.strategies]]\nname = \"s1\"\nstrategy_weight = 101\nrate_limit = 0\nwindow = 1\n\
         parameters = [{ type = \"cookie\", name = \"x\" }]\n",
        &[
            "plugins (flow): expire_type \"secnd\" is not one of second, minute, hour, day; did you mean \"second\"?",
            "plugins (flow): expire: must be a positive integer",
            "plugins (flow): api_rate_limit: must be a positive integer",
            "plugins (flow): spec_ip_rate_limits[0].ip_key: \"nope\" is not an IP address or CIDR",
            "plugins (by-param): strategies[0].strategy_weight: 101 is not between 0 and 100",
            "plugins (by-param): strategies[0].rate_limit: must be a positive integer",
            "plugins (by-param): strategies[0].parameters[0].type \"cookie\" is not one of query, header, path",
        ],
    );
}

#[test]
fn every_closed_set_names_its_field_and_its_names() {
    assert_problems(
        "[log]\nformat = \"yaml\"\n\
         [cluster]\nredis = \"redis://127.0.0.1:6379\"\non_error = \"ignore\"\n\
         [[plugins]]\nname = \"wall\"\ntype = \"ip_control\"\nmode = \"grey\"\nips = \"10.0.0.0/8\"\n\
         [[plugins]]\nname = \"c1\"\ntype = \"cors\"\nallow_origin = [\"*\"]\nallow_methods = [\"FETCH\"]\n\
         [[services]]\nname = \"s\"\nprotocols = [\"ftp\"]\n\
         [[services.apis]]\nname = \"a\"\npath = \"/a\"\nmethods = [\"FETCH\"]\nauth = \"jwtt\"\n\
         jwt_provider = \"corp\"\n\
         [services.apis.backend]\ntype = \"htp\"\n\
         [[services.apis]]\nname = \"b\"\npath = \"/b\"\nauth = \"external\"\n\
         [services.apis.external_auth]\nurl = \"http://127.0.0.1:9/\"\non_error = \"maybe\"\n\
         [services.apis.backend]\nurl = \"http://127.0.0.1:1\"\nmethod = \"get\"\n\
         retry_on = [\"5xxx\"]\nfail_on = [\"oops\"]\n",
        &[
            "log.format: \"yaml\" is not one of text, json",
            "cluster.on_error: \"ignore\" is not one of local, allow, deny",
            "plugins (wall): mode \"grey\" is not one of white, black",
            "plugins (c1): allow_methods: \"FETCH\" is not one of GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS",
            "services (s): protocol \"ftp\" is not one of http, https",
            "services (s) / apis (a): method \"FETCH\" is not one of GET, POST, PUT, DELETE, PATCH, HEAD, OPTIONS, ANY",
            "services (s) / apis (a): auth \"jwtt\" is not one of none, hmac, tc3, tc1, jwt, openapi, key, external; did you mean \"jwt\"?",
            "services (s) / apis (a) / backend: type \"htp\" is not one of http, mock, websocket; did you mean \"http\"?",
            "services (s) / apis (b) / external_auth: on_error \"maybe\" is not one of deny, allow",
            "services (s) / apis (b) / backend: method \"get\" is not one of GET, POST, PUT, DELETE, PATCH, HEAD, OPTIONS; did you mean \"GET\"?",
            "services (s) / apis (b) / backend: retry_on \"5xxx\" is not one of connect, 5xx, timeout; did you mean \"5xx\"?",
            "services (s) / apis (b) / backend: fail_on \"oops\" is not one of connect, 5xx",
        ],
    );
}

#[test]
fn an_unknown_name_has_no_follow_on_problems() {
    // A websocket API with an unknown method: the method is the problem, not
    // "websocket takes GET only".
    assert_problems(
        "[[services]]\nname = \"s\"\n[[services.apis]]\nname = \"a\"\npath = \"/a\"\n\
         methods = [\"FETCH\"]\n[services.apis.backend]\ntype = \"websocket\"\nurl = \"ws://127.0.0.1:1\"\n",
        &["services (s) / apis (a): method \"FETCH\" is not one of"],
    );
    // An ip_control plugin with a wrong mode and a wrong address: both, once.
    assert_problems(
        "[[plugins]]\nname = \"wall\"\ntype = \"ip_control\"\nmode = \"grey\"\nips = \"10.0.0.300\"\n",
        &[
            "plugins (wall): mode \"grey\" is not one of white, black",
            "plugins (wall): invalid IP or CIDR \"10.0.0.300\"",
        ],
    );
}

#[test]
fn accepted_spellings_compile() {
    assert_problems(
        "[auth]\nreplay = false\n\
         [[plugins]]\nname = \"wall\"\ntype = \"ip_control\"\nmode = \" White \"\nips = \"10.0.0.0/8\"\n\
         [[plugins]]\nname = \"c1\"\ntype = \"cors\"\nallow_origin = [\"*\"]\nallow_methods = [\"put\", \" Get\"]\n\
         [[plugins]]\nname = \"by-param\"\ntype = \"param_traffic_control\"\n\
         [[plugins.strategies]]\nname = \"s1\"\nstrategy_weight = 1\nrate_limit = 1\nwindow = 1\n\
         parameters = [{ type = \"Header\", name = \"x-user\" }]\n\
         [[services]]\nname = \"s\"\nprotocols = [\"http\"]\n\
         [[services.apis]]\nname = \"a\"\npath = \"/a\"\nmethods = [\"GET\", \"POST\"]\n\
         plugins = [\"wall\", \"c1\", \"by-param\"]\n\
         [services.apis.backend]\nurl = \"http://127.0.0.1:1\"\nmethod = \"PUT\"\n\
         retry_on = [\"connect\", \"5xx\", \"timeout\"]\nfail_on = [\"connect\", \"5xx\"]\n",
        &[],
    );
}

#[test]
fn algorithm_names_are_checked_once_with_their_spellings() {
    // hmac names in any case, blanks around ignored; a name twice counts once.
    assert_problems(
        "[auth.hmac]\nalgorithms = [\" HMAC-SHA256\", \"hmac-sha256\", \"Hmac-Sha1\"]\n",
        &[],
    );
    assert_problems(
        "[auth.hmac]\nalgorithms = [\"hmac-sha256\", \"sha256\"]\n",
        &["auth.hmac: algorithms \"sha256\" is not one of hmac-sha1, hmac-sha256, hmac-sha384, hmac-sha512"],
    );
    assert_problems(
        "[auth.hmac]\nalgorithms = []\n",
        &["auth.hmac: auth.hmac.algorithms must list at least one algorithm"],
    );
    // JWT RSA pins: exact names; other families are not pins. (The key's
    // own problem is reported too: a wrong pin hides nothing.)
    let jwk = r#"{"kty":"oct","k":"c2VjcmV0"}"#;
    for (alg, want) in [
        ("ES256", "algorithm \"ES256\" is not one of RS256, RS384, RS512, PS256, PS384, PS512"),
        ("HS256", "algorithm \"HS256\" is not one of RS256, RS384, RS512, PS256, PS384, PS512"),
        ("ps384", "algorithm \"ps384\" is not one of RS256, RS384, RS512, PS256, PS384, PS512; did you mean \"PS384\"?"),
    ] {
        assert_problems(
            &format!("[[jwt_providers]]\nname = \"corp\"\njwk = '{jwk}'\nalgorithm = \"{alg}\"\n"),
            &[
                &format!("jwt_providers (corp): {want}"),
                "jwt_providers (corp): jwt provider \"corp\": key type \"oct\"",
            ],
        );
    }
}
