//! The raw shape: defaults of closed sets, and what reads softly or not.

use super::*;
use crate::config::source::parse;

#[test]
fn defaults_of_closed_sets_are_members() {
    let raw = parse(
        "[cluster]\nredis = \"redis://127.0.0.1:6379\"\n\
         [[plugins]]\nname = \"c1\"\ntype = \"cors\"\n\
         [[services]]\nname = \"s\"\n[[services.apis]]\nname = \"a\"\npath = \"/a\"\n\
         [services.apis.backend]\nurl = \"http://127.0.0.1:1\"\n",
    )
    .expect("parses");
    assert_eq!(raw.log.format.get(), Some(LogFormat::Text));
    assert!(!raw.log.json());
    let cluster = raw.cluster.as_ref().expect("cluster");
    assert_eq!(cluster.on_error.get(), Some(OnError::Local));
    let RawPlugin::Cors(c) = &raw.plugins[0] else {
        panic!("a cors plugin")
    };
    let cors: Vec<_> = c.allow_methods.iter().map(|m| m.get()).collect();
    assert_eq!(
        cors,
        [
            CorsMethod::Get,
            CorsMethod::Put,
            CorsMethod::Post,
            CorsMethod::Delete,
            CorsMethod::Head
        ]
        .map(Some)
    );
    let svc = &raw.services[0];
    let protocols: Vec<_> = svc.protocols.iter().map(|p| p.get()).collect();
    assert_eq!(protocols, [Some(Protocol::Http), Some(Protocol::Https)]);
    let api = &svc.apis[0];
    assert_eq!(api.auth.get(), Some(AuthKind::None));
    assert_eq!(api.methods.len(), 1);
    assert_eq!(api.methods[0].get(), Some(ApiMethod::Any));
    assert_eq!(api.backend.kind.get(), Some(BackendKind::Http));
}

#[test]
fn a_wrong_name_parses_and_a_wrong_type_does_not() {
    let raw = parse("[log]\nformat = \"yaml\"\n").expect("a wrong name is the compiler's");
    assert_eq!(raw.log.format.get(), None);
    assert_eq!(&*raw.log.format, "yaml");
    let e = parse("[log]\nformat = 1\n").expect_err("a number is a shape error");
    assert_eq!(e.location, "line 2");
}

#[test]
fn legacy_and_case_insensitive_spellings() {
    for (text, mode) in [
        ("replay = true", crate::auth::replay::ReplayMode::Nonce),
        ("replay = false", crate::auth::replay::ReplayMode::Off),
        (
            "replay = \"Strict\"",
            crate::auth::replay::ReplayMode::Strict,
        ),
    ] {
        let raw = parse(&format!("[auth]\n{text}\n")).expect("parses");
        assert_eq!(raw.auth.replay, mode, "{text}");
    }
    let raw = parse(
        "[[plugins]]\nname = \"w\"\ntype = \"ip_control\"\nmode = \" BLACK\"\nips = \"10.0.0.1\"\n\
         [[plugins]]\nname = \"p\"\ntype = \"param_traffic_control\"\n\
         [[plugins.strategies]]\nname = \"s\"\nstrategy_weight = 1\nrate_limit = 1\nwindow = 1\n\
         parameters = [{ type = \"QUERY\", name = \"q\" }, { type = \" path\" }]\n",
    )
    .expect("parses");
    let RawPlugin::IpControl(ip) = &raw.plugins[0] else {
        panic!("ip_control")
    };
    assert_eq!(ip.mode.get(), Some(IpMode::Black));
    assert_eq!(&*ip.mode, " BLACK", "read as written");
    let RawPlugin::ParamTrafficControl(p) = &raw.plugins[1] else {
        panic!("param_traffic_control")
    };
    let params = &p.strategies[0].parameters;
    assert_eq!(params[0].kind.get(), Some(ParamIn::Query));
    // Blanks were never trimmed here.
    assert_eq!(params[1].kind.get(), None);
    // Methods of an API are upper case, as always.
    let raw = parse(
        "[[services]]\nname = \"s\"\n[[services.apis]]\nname = \"a\"\npath = \"/a\"\n\
         methods = [\"get\"]\n[services.apis.backend]\ntype = \"mock\"\n",
    )
    .expect("parses");
    assert_eq!(raw.services[0].apis[0].methods[0].get(), None);
}
