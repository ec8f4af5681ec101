//! Unit tests of the router.

use super::*;
use crate::route::rule::regex_literal_prefix;

/// `(id, path, "GET,POST")`; an empty method string means ANY.
fn service(
    name: &str,
    hosts: &[&str],
    env: Option<&str>,
    apis: &[(usize, &str, &str)],
) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        environment: env.map(str::to_owned),
        apis: apis
            .iter()
            .map(|&(id, path, methods)| ApiSpec {
                id,
                name: format!("api{id}"),
                path: path.into(),
                methods: methods
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
                    .collect(),
                actions: vec![],
            })
            .collect(),
    }
}

fn router(apis: &[(usize, &str, &str)]) -> Router {
    Router::build(&[service("s", &[], None, apis)]).expect("valid")
}

fn hit(r: &Router, host: Option<&str>, path: &str, method: Method) -> Option<usize> {
    r.lookup(host, path, &method).map(|m| m.api)
}

fn get(r: &Router, path: &str) -> Option<usize> {
    hit(r, None, path, Method::GET)
}

fn build_errors(services: &[ServiceSpec]) -> Vec<String> {
    Router::build(services).expect_err("should fail")
}

#[test]
fn exact_rule() {
    let r = router(&[(1, "=/user", "")]);
    let m = r.lookup(None, "/user", &Method::GET).unwrap();
    assert_eq!((m.api, m.matched_len, m.path), (1, 5, "/user"));
    assert_eq!(get(&r, "/user/"), None);
    assert_eq!(get(&r, "/users"), None);
    assert_eq!(get(&r, "/"), None);
}

#[test]
fn plain_prefix_is_raw_string_and_longest_wins() {
    let r = router(&[(1, "/user", ""), (2, "/user/test", ""), (3, "/", "")]);
    assert_eq!(get(&r, "/user"), Some(1));
    assert_eq!(get(&r, "/usertest"), Some(1));
    assert_eq!(get(&r, "/user/test/a"), Some(2));
    assert_eq!(get(&r, "/user/tes"), Some(1));
    assert_eq!(get(&r, "/other"), Some(3));
    let m = r.lookup(None, "/user/test/a", &Method::GET).unwrap();
    assert_eq!(m.matched_len, "/user/test".len());
}

#[test]
fn prefix_tree_splits_and_shares_nodes() {
    let r = router(&[
        (1, "/abc", ""),
        (2, "/abd", ""),
        (3, "/ab", ""),
        (4, "/abcdef", ""),
    ]);
    assert_eq!(get(&r, "/abcde"), Some(1));
    assert_eq!(get(&r, "/abcdefg"), Some(4));
    assert_eq!(get(&r, "/abd/x"), Some(2));
    assert_eq!(get(&r, "/abx"), Some(3));
    assert_eq!(get(&r, "/a"), None);
}

#[test]
fn priority_exact_then_preferential_then_pattern_then_prefix() {
    let r = router(&[
        (1, "/user", ""),
        (2, "/user/{id}", ""),
        (3, "~^/user/[0-9]+$", ""),
        (4, "^~/user/4", ""),
        (5, "=/user/5", ""),
    ]);
    assert_eq!(get(&r, "/user/5"), Some(5)); // exact beats everything
    assert_eq!(get(&r, "/user/42"), Some(4)); // ^~ beats template and regex
    assert_eq!(get(&r, "/user/7"), Some(2)); // template declared before regex
    assert_eq!(get(&r, "/user/7/x"), Some(1)); // template is whole-path: prefix
    assert_eq!(get(&r, "/user"), Some(1));
}

#[test]
fn preferential_longest_wins_and_beats_longer_plain_prefix() {
    let r = router(&[
        (1, "^~/static", ""),
        (2, "^~/static/img", ""),
        (3, "/static/img/big", ""),
    ]);
    assert_eq!(get(&r, "/static/css/a.css"), Some(1));
    assert_eq!(get(&r, "/static/img/a.png"), Some(2));
    assert_eq!(get(&r, "/static/img/big/a.png"), Some(2));
}

#[test]
fn regex_and_templates_in_declaration_order() {
    let r = router(&[(1, "~^/v[0-9]+/", ""), (2, "/v1/{res}", "")]);
    assert_eq!(get(&r, "/v1/users"), Some(1));
    let r = router(&[(2, "/v1/{res}", ""), (1, "~^/v[0-9]+/", "")]);
    assert_eq!(get(&r, "/v1/users"), Some(2));
    assert_eq!(get(&r, "/v2/users"), Some(1));
}

#[test]
fn regex_is_anchored_at_start_only_and_captures_named_groups() {
    let r = router(&[
        (1, "~/v(?P<ver>[0-9]+)/users", ""),
        (2, "~*^/CaseLess$", ""),
    ]);
    let m = r.lookup(None, "/v12/users/7", &Method::GET).unwrap();
    assert_eq!(m.api, 1);
    assert_eq!(m.params, vec![("ver", "12")]);
    assert_eq!(m.matched_len, "/v12/users".len());
    assert_eq!(get(&r, "/x/v12/users"), None); // anchored at the start
    assert_eq!(get(&r, "/caseless"), Some(2));
    assert_eq!(get(&r, "/caseless/x"), None);
}

#[test]
fn regex_without_usable_literal_is_still_found() {
    let r = router(&[
        (1, "~^/(a|b)/x", ""),
        (2, "~^/ab?c", ""),
        (3, "~/item\\.json", ""),
        (4, "~^/users/(?P<id>\\d+)", ""),
    ]);
    assert_eq!(get(&r, "/b/x"), Some(1));
    assert_eq!(get(&r, "/ac"), Some(2));
    assert_eq!(get(&r, "/abc"), Some(2));
    assert_eq!(get(&r, "/item.json"), Some(3));
    assert_eq!(get(&r, "/users/9"), Some(4));
    assert_eq!(regex_literal_prefix("^/users/(?P<id>\\d+)"), "/users/");
    assert_eq!(regex_literal_prefix("^/ab?c"), "/a");
    assert_eq!(regex_literal_prefix("/a|/b"), "");
}

#[test]
fn patterns_under_nested_literals_keep_declaration_order() {
    let r = router(&[
        (1, "/a/b/{x}", "POST"),
        (2, "~^/a/", ""),
        (3, "/a/b/{x}", "GET"),
        (4, "~*^/A/B", ""),
    ]);
    assert_eq!(hit(&r, None, "/a/b/c", Method::POST), Some(1));
    assert_eq!(hit(&r, None, "/a/b/c", Method::GET), Some(2));
    assert_eq!(hit(&r, None, "/A/b/c", Method::GET), Some(4));
    // More nested literals along one path than the merge keeps on the stack.
    let paths: Vec<String> = (1..=20).map(|n| format!("~^{}$", "/n".repeat(n))).collect();
    let mut apis: Vec<(usize, &str, &str)> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| (i, p.as_str(), ""))
        .collect();
    apis.push((99, "~^/n", ""));
    let r = router(&apis);
    assert_eq!(get(&r, &"/n".repeat(18)), Some(17));
    assert_eq!(get(&r, &"/n".repeat(25)), Some(99));
}

#[test]
fn template_params_and_whole_path_semantics() {
    let r = router(&[(1, "/pet/{petid}/photo/{n}", ""), (2, "/pet/{petid}", "")]);
    let m = r.lookup(None, "/pet/42/photo/3", &Method::GET).unwrap();
    assert_eq!(m.api, 1);
    assert_eq!(m.params, vec![("petid", "42"), ("n", "3")]);
    assert_eq!(m.matched_len, m.path.len());
    let m = r.lookup(None, "/pet/abc%2F1", &Method::GET).unwrap();
    assert_eq!((m.api, m.params.clone()), (2, vec![("petid", "abc%2F1")]));
    assert_eq!(get(&r, "/pet/"), None); // empty segment
    assert_eq!(get(&r, "/pet/1/"), None); // trailing slash is another path
    assert_eq!(get(&r, "/pet/1/photo"), None);
    let r = router(&[(3, "/{any}/", "")]);
    assert_eq!(get(&r, "/zoo/"), Some(3));
    assert_eq!(get(&r, "/pet/1/"), None);
    assert_eq!(get(&r, "//"), None);
}

#[test]
fn non_param_matches_do_not_allocate_params() {
    let r = router(&[(1, "=/a", ""), (2, "/b", ""), (3, "/c/{x}", "")]);
    for p in ["/a", "/bb"] {
        assert_eq!(
            r.lookup(None, p, &Method::GET).unwrap().params.capacity(),
            0
        );
    }
}

#[test]
fn method_mismatch_falls_through_to_lower_priority() {
    let r = router(&[
        (1, "=/user", "POST"),
        (2, "^~/user", "PUT"),
        (3, "/user/{id}", "DELETE"),
        (4, "/user/", "PATCH"),
        (5, "/user", "GET,HEAD"),
        (6, "=/user", "get"),
    ]);
    assert_eq!(hit(&r, None, "/user", Method::POST), Some(1));
    assert_eq!(hit(&r, None, "/user", Method::GET), Some(6));
    assert_eq!(hit(&r, None, "/user/1", Method::PUT), Some(2));
    assert_eq!(hit(&r, None, "/user/1", Method::DELETE), Some(3));
    assert_eq!(hit(&r, None, "/user/1", Method::PATCH), Some(4));
    assert_eq!(hit(&r, None, "/user/1", Method::HEAD), Some(5)); // shorter prefix
    assert_eq!(hit(&r, None, "/user/1", Method::OPTIONS), None);
    assert_eq!(hit(&r, None, "/other", Method::GET), None);
}

#[test]
fn any_and_empty_methods_match_everything() {
    let r = router(&[(1, "/a", "ANY"), (2, "/b", "")]);
    let custom = Method::from_bytes(b"PURGE").unwrap();
    for m in [Method::GET, Method::OPTIONS, Method::TRACE, custom] {
        assert_eq!(hit(&r, None, "/a", m.clone()), Some(1));
        assert_eq!(hit(&r, None, "/b", m), Some(2));
    }
    let r = router(&[(1, "/a", "GET,POST,PUT,DELETE,PATCH,HEAD,OPTIONS")]);
    assert_eq!(hit(&r, None, "/a", Method::TRACE), None);
}

#[test]
fn hosts_exact_then_wildcard_then_any() {
    let r = Router::build(&[
        service("anyhost", &[], None, &[(1, "/", "")]),
        service("wild", &["*.example.com"], None, &[(2, "/", "")]),
        service("deepwild", &["*.api.example.com"], None, &[(3, "/", "")]),
        service(
            "exact",
            &["www.example.com", "other.test"],
            None,
            &[(4, "/only", "")],
        ),
    ])
    .unwrap();
    assert_eq!(
        hit(&r, Some("www.example.com"), "/only/x", Method::GET),
        Some(4)
    );
    // exact host, but no rule matches: next tier (wildcard) answers
    assert_eq!(hit(&r, Some("www.example.com"), "/x", Method::GET), Some(2));
    assert_eq!(hit(&r, Some("other.test"), "/x", Method::GET), Some(1));
    assert_eq!(hit(&r, Some("a.example.com"), "/x", Method::GET), Some(2));
    assert_eq!(hit(&r, Some("a.b.example.com"), "/x", Method::GET), Some(2));
    assert_eq!(
        hit(&r, Some("v1.api.example.com"), "/x", Method::GET),
        Some(3)
    );
    assert_eq!(hit(&r, Some("example.com"), "/x", Method::GET), Some(1));
    assert_eq!(hit(&r, Some("badexample.com"), "/x", Method::GET), Some(1));
    assert_eq!(hit(&r, None, "/only", Method::GET), Some(1));
}

#[test]
fn host_case_port_brackets_and_trailing_dot() {
    let r = Router::build(&[
        service("a", &["API.Example.com"], None, &[(1, "/", "")]),
        service("b", &["[::1]:8080"], None, &[(2, "/", "")]),
        service("c", &["*.Wild.Test"], None, &[(3, "/", "")]),
    ])
    .unwrap();
    for h in [
        "api.example.com",
        "API.EXAMPLE.COM:8443",
        "api.example.com.",
        " api.example.com ",
    ] {
        assert_eq!(hit(&r, Some(h), "/", Method::GET), Some(1), "{h}");
    }
    for h in ["[::1]", "[::1]:443", "::1"] {
        assert_eq!(hit(&r, Some(h), "/", Method::GET), Some(2), "{h}");
    }
    assert_eq!(hit(&r, Some("X.WILD.test:80"), "/", Method::GET), Some(3));
    assert_eq!(hit(&r, Some("unknown"), "/", Method::GET), None);
    let long = "a".repeat(300);
    assert_eq!(hit(&r, Some(&long), "/", Method::GET), None);
}

#[test]
fn environment_prefix_is_required_and_stripped() {
    let r = Router::build(&[service(
        "s",
        &[],
        Some("release"),
        &[(1, "/apia/", ""), (2, "=/", "")],
    )])
    .unwrap();
    let m = r
        .lookup(None, "/release/apia/20171012/index.html", &Method::GET)
        .unwrap();
    assert_eq!(
        (m.api, m.path, m.matched_len),
        (1, "/apia/20171012/index.html", 6)
    );
    assert_eq!(get(&r, "/apia/x"), None);
    assert_eq!(get(&r, "/releasex/apia/x"), None);
    assert_eq!(get(&r, "/prepub/apia/x"), None);
    let m = r.lookup(None, "/release", &Method::GET).unwrap();
    assert_eq!((m.api, m.path), (2, "/"));
    assert_eq!(get(&r, "/release/"), Some(2));
}

#[test]
fn environments_and_plain_services_share_a_host() {
    let r = Router::build(&[
        service("plain", &[], None, &[(1, "/", "")]),
        service("rel", &[], Some("release"), &[(2, "/a", "")]),
        service("test", &[], Some("test"), &[(3, "/a", "")]),
    ])
    .unwrap();
    assert_eq!(get(&r, "/release/a"), Some(2));
    assert_eq!(get(&r, "/test/a"), Some(3));
    assert_eq!(get(&r, "/release/b"), Some(1)); // falls back to the plain service
    assert_eq!(get(&r, "/a"), Some(1));
}

#[test]
fn rules_of_services_on_one_host_compete_by_priority() {
    let r = Router::build(&[
        service("wide", &[], None, &[(1, "/", "")]),
        service("narrow", &[], None, &[(2, "=/x", ""), (3, "/y", "")]),
    ])
    .unwrap();
    assert_eq!(get(&r, "/x"), Some(2));
    assert_eq!(get(&r, "/yz"), Some(3));
    assert_eq!(get(&r, "/z"), Some(1));
}

#[test]
fn build_errors_name_service_api_and_path() {
    let errs = build_errors(&[service(
        "svc",
        &[],
        None,
        &[
            (1, "", ""),
            (2, "user", ""),
            (3, "~^/(unclosed", ""),
            (4, "/user/{id", ""),
            (5, "/user/a{id}", ""),
            (6, "/user/{}", ""),
            (7, "/user/{id}/{id}", ""),
            (8, "/ok", "FETCH"),
            (9, "=user", ""),
            (10, "^~", ""),
            (11, "=/a/{x}", ""),
            (12, "/a?b=1", ""),
            (13, "/a b", ""),
            (14, "~", ""),
        ],
    )]);
    assert_eq!(errs.len(), 14, "{errs:#?}");
    assert!(
        errs[0].starts_with("service svc / api api1 / path \"\": empty path"),
        "{errs:#?}"
    );
    assert!(errs[2].contains("api3") && errs[2].contains("bad regular expression"));
    assert!(errs[7].contains("unknown method \"FETCH\""));
    for (i, e) in errs.iter().enumerate() {
        assert!(e.starts_with("service svc / api api"), "{i}: {e}");
    }
}

#[test]
fn duplicate_rules_with_overlapping_methods_are_errors() {
    let errs = build_errors(&[service(
        "svc",
        &[],
        None,
        &[
            (1, "/a", "GET"),
            (2, "/a", "GET,POST"),
            (3, "/t/{id}", ""),
            (4, "/t/{name}", "PUT"),
        ],
    )]);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(errs[0].contains("api api2") && errs[0].contains("api api1"));
    assert!(errs[1].contains("api api4") && errs[1].contains("api api3"));
    // Disjoint methods, or different kinds, are fine.
    router(&[
        (1, "/a", "GET"),
        (2, "/a", "POST"),
        (3, "=/a", "GET"),
        (4, "^~/a", "GET"),
    ]);
    // Same rule on different hosts is fine; on the same host it is not.
    Router::build(&[
        service("one", &["a.test"], None, &[(1, "/a", "")]),
        service("two", &["b.test"], None, &[(2, "/a", "")]),
        service("three", &[], Some("release"), &[(3, "/a", "")]),
        service("four", &[], None, &[(4, "/a", "")]),
    ])
    .unwrap();
    let errs = build_errors(&[
        service("one", &["a.test"], None, &[(1, "/a", "")]),
        service("two", &["A.test:80"], None, &[(2, "/a", "GET")]),
    ]);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].starts_with("service two / api api2"), "{errs:#?}");
}

#[test]
fn bad_hosts_and_environments_are_errors() {
    let errs = build_errors(&[
        service("h", &["*", "a/b", "*.", "x.*.com", ""], None, &[]),
        service("e", &[], Some("re/lease"), &[]),
        service("f", &[], Some(""), &[]),
    ]);
    assert_eq!(errs.len(), 7, "{errs:#?}");
    assert!(errs[0].starts_with("service h: host \"*\""));
    assert!(errs[5].starts_with("service e: environment"));
}

fn m<'a>(path: &'a str, matched_len: usize, params: Vec<(&'a str, &'a str)>) -> RouteMatch<'a> {
    RouteMatch {
        api: 0,
        params,
        path,
        matched_len,
        candidates: &[],
    }
}

#[test]
fn compose_spec_examples() {
    let r = Router::build(&[service("s", &[], Some("release"), &[(1, "/apia/", "")])]).unwrap();
    let hit = r
        .lookup(None, "/release/apia/20171012/index.html", &Method::GET)
        .unwrap();
    assert_eq!(compose_backend_path("", &hit), "/apia/20171012/index.html");
    assert_eq!(
        compose_backend_path("/endpoint/", &hit),
        "/endpoint/20171012/index.html"
    );
    assert_eq!(
        compose_backend_path("/endpoint", &hit),
        "/endpoint/20171012/index.html"
    );

    let r = router(&[(1, "/pet/{petid}", "")]);
    let hit = r.lookup(None, "/pet/42", &Method::GET).unwrap();
    assert_eq!(compose_backend_path("/path/{petid}", &hit), "/path/42");
    assert_eq!(
        compose_backend_path("/path/{petid}/{other}", &hit),
        "/path/42/{other}"
    );
    assert_eq!(compose_backend_path("", &hit), "/pet/42");
}

#[test]
fn compose_joins_without_double_slash() {
    // plain prefix `/apia` hit by `/apia/x`
    assert_eq!(
        compose_backend_path("/b/", &m("/apia/x", 5, vec![])),
        "/b/x"
    );
    assert_eq!(compose_backend_path("/b", &m("/apia/x", 5, vec![])), "/b/x");
    // raw-string prefix `/user` hit by `/usertest`
    assert_eq!(
        compose_backend_path("/u", &m("/usertest", 5, vec![])),
        "/utest"
    );
    // exact and whole matches: the back-end path as written
    assert_eq!(compose_backend_path("/b/", &m("/apia", 5, vec![])), "/b/");
    assert_eq!(compose_backend_path("/", &m("/a/b/c", 2, vec![])), "/b/c");
    assert_eq!(compose_backend_path("b", &m("/a/c", 3, vec![])), "/b/c");
    // regex: named groups substitute, the tail after the match is kept
    let r = router(&[(1, "~^/v(?P<ver>[0-9]+)/users", "")]);
    let hit = r.lookup(None, "/v2/users/7", &Method::GET).unwrap();
    assert_eq!(
        compose_backend_path("/api/{ver}/people", &hit),
        "/api/2/people/7"
    );
}

#[test]
fn backend_path_params_are_checked() {
    assert!(check_backend_path("/pet/{petid}", "/path/{petid}").is_ok());
    assert!(check_backend_path("~^/v(?P<ver>\\d+)", "/api/{ver}").is_ok());
    assert!(check_backend_path("/pet/{petid}", "/path/{id}").is_err());
    assert!(check_backend_path("/pet/{petid}", "/path/{petid").is_err());
    assert!(check_backend_path("/pet", "/path/}").is_err());
    assert_eq!(param_names("/a/{x}/b/{y}").unwrap(), vec!["x", "y"]);
}

fn with_actions(mut svc: ServiceSpec, actions: &[(usize, &[&str])]) -> ServiceSpec {
    for (id, list) in actions {
        if let Some(a) = svc.apis.iter_mut().find(|a| a.id == *id) {
            a.actions = list.iter().map(|s| s.to_string()).collect();
        }
    }
    svc
}

#[test]
fn action_groups_share_one_rule() {
    let svc = with_actions(
        service(
            "cloud",
            &[],
            None,
            &[
                (0, "=/", "POST"),
                (1, "=/", "GET,POST"),
                (2, "=/", "ANY"),
                (3, "/other", ""),
            ],
        ),
        &[(0, &["DescribeInstances"]), (1, &["Run*"])],
    );
    let r = Router::build(&[svc]).expect("valid");
    let m = r.lookup(None, "/", &Method::POST).expect("match");
    assert!(m.by_action());
    assert_eq!(m.candidates.len(), 3);
    assert_eq!(
        m.pick(&Method::POST, |_| Some("DescribeInstances")),
        Some(0)
    );
    assert_eq!(m.pick(&Method::POST, |_| Some("RunInstances")), Some(1));
    assert_eq!(m.pick(&Method::POST, |_| Some("Other")), Some(2));
    // GET: API 0 does not allow it; the fallback takes what API 1 does not.
    assert_eq!(m.pick(&Method::GET, |_| Some("DescribeInstances")), Some(2));
    assert_eq!(m.first_allowing(&Method::GET), 1);
    assert_eq!(m.first_allowing(&Method::POST), 0);
    // A plain rule picks its own API whatever the action.
    let m = r.lookup(None, "/other", &Method::GET).expect("match");
    assert!(!m.by_action());
    assert_eq!(m.pick(&Method::GET, |_| Some("X")), Some(3));
}

#[test]
fn action_group_without_fallback_and_across_services() {
    let a = with_actions(
        service("a", &["api.test"], None, &[(0, "/", "")]),
        &[(0, &["A*"])],
    );
    let b = with_actions(
        service("b", &["api.test"], None, &[(1, "/", "")]),
        &[(1, &["B*"])],
    );
    let r = Router::build(&[a, b]).expect("valid");
    let m = r
        .lookup(Some("api.test:8443"), "/x", &Method::GET)
        .expect("match");
    assert_eq!(m.pick(&Method::GET, |_| Some("BX")), Some(1));
    assert_eq!(m.pick(&Method::GET, |_| Some("AX")), Some(0));
    assert_eq!(m.pick(&Method::GET, |_| Some("C")), None);
    assert_eq!(m.pick(&Method::GET, |_| None), None);
}

#[test]
fn action_group_errors() {
    // Two APIs without actions on one rule stay a duplicate.
    let svc = with_actions(
        service(
            "s",
            &[],
            None,
            &[(0, "=/", ""), (1, "=/", ""), (2, "=/", "")],
        ),
        &[(0, &["A"])],
    );
    let errs = Router::build(&[svc]).unwrap_err();
    assert!(
        errs.iter().any(|e| e.contains("same rule and method")),
        "{errs:?}"
    );
    // Equivalent templates written differently cannot share by action.
    let svc = with_actions(
        service("s", &[], None, &[(0, "/u/{id}", ""), (1, "/u/{uid}", "")]),
        &[(0, &["A"]), (1, &["B"])],
    );
    let errs = Router::build(&[svc]).unwrap_err();
    assert!(errs.iter().any(|e| e.contains("identically")), "{errs:?}");
}

#[test]
fn action_group_on_template_keeps_params() {
    let svc = with_actions(
        service("s", &[], None, &[(0, "/u/{id}", ""), (1, "/u/{id}", "")]),
        &[(0, &["A"]), (1, &["B"])],
    );
    let r = Router::build(&[svc]).expect("valid");
    let m = r.lookup(None, "/u/7", &Method::GET).expect("match");
    assert_eq!(m.params, vec![("id", "7")]);
    assert_eq!(m.pick(&Method::GET, |_| Some("B")), Some(1));
}
