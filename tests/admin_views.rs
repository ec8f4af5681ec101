//! The admin listener's read-only views: `/-/routes`, `/-/keys`, `/-/plugins`
//! and `/-/usage?key=ID` describe the configuration in force and the quota
//! counters, and none of them shows a secret.

mod common;
use common::*;
use http::{Method, StatusCode};
use serde_json::Value;
use std::time::SystemTime;

const SECRET: &str = "views-secret-value-1";
const FILE_SECRET: &str = "views-secret-from-file-2";
const BACKEND_PASSWORD: &str = "backend-pass-3";
const HEADER_TOKEN: &str = "const-header-token-4";

async fn view(kg: &Keygate, path: &str) -> (StatusCode, String) {
    let r = get(&format!("http://{}{path}", kg.admin)).await;
    assert!(
        r.header("content-type") == Some("application/json"),
        "{path}: {:?}",
        r.header("content-type")
    );
    (r.status, r.text())
}

fn no_secret(path: &str, body: &str) {
    for s in [
        SECRET,
        FILE_SECRET,
        BACKEND_PASSWORD,
        HEADER_TOKEN,
        "secret_file",
        "keyfile",
    ] {
        assert!(!body.contains(s), "{path} shows {s:?}: {body}");
    }
}

async fn signed_get(kg: &Keygate, path: &str) -> StatusCode {
    let headers =
        keygate::auth::sign::sign_hmac("AKIDviews", SECRET, "hmac-sha256", &[], SystemTime::now())
            .expect("sign");
    let mut h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    h.push(("host", "api.example"));
    send(Method::GET, &kg.url(path), &h, vec![]).await.status
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_keys_plugins_and_usage_without_secrets() {
    let backend = spawn_backend().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("keyfile"), FILE_SECRET).expect("write secret");
    let toml = format!(
        r#"
[[keys]]
id = "AKIDviews"
secret = "{SECRET}"
app = "shop"

[[keys]]
id = "AKIDfile"
secret_file = "keyfile"
enabled = false

[[usage_plans]]
name = "gold"
quota = 5
keys = ["AKIDviews"]

[[plugins]]
name = "office"
type = "ip_control"
mode = "white"
ips = "127.0.0.1"

[[plugins]]
name = "per-app"
type = "traffic_control"
expire_type = "minute"
expire = 1
app_rate_limit = 100

[[plugins]]
name = "web"
type = "cors"
allow_origin = ["https://app.example"]

[[services]]
name = "shop"
hosts = ["api.example"]
environment = "release"
usage_plans = ["gold"]
plugins = ["office"]

[[services.apis]]
name = "orders"
path = "/orders/"
methods = ["GET", "POST"]
auth = "hmac"
plugins = ["web", "per-app"]
[services.apis.backend]
type = "http"
url = "http://user:{BACKEND_PASSWORD}@{backend}"
path = "/"
[services.apis.backend.const_headers]
x-backend-token = "{HEADER_TOKEN}"

[[services]]
name = "open"

[[services.apis]]
name = "ping"
path = "/ping"
[services.apis.backend]
type = "mock"
status = 200
body = "pong"
"#
    );
    let kg = Keygate::start_in(dir, &toml).await;

    // Routes: every API with its host, environment, rule, methods, auth,
    // plugins and back end.
    let (status, body) = view(&kg, "/-/routes").await;
    assert_eq!(status, StatusCode::OK);
    no_secret("/-/routes", &body);
    let routes: Value = serde_json::from_str(&body).expect("json");
    let routes = routes.as_array().expect("array");
    assert_eq!(routes.len(), 2, "{body}");
    let orders = routes
        .iter()
        .find(|r| r["route"] == "shop/orders")
        .expect("shop/orders");
    assert_eq!(orders["hosts"], serde_json::json!(["api.example"]));
    assert_eq!(orders["environment"], "release");
    assert_eq!(orders["path"], "/orders/");
    assert_eq!(orders["methods"], serde_json::json!(["GET", "POST"]));
    assert_eq!(orders["auth"], "hmac");
    assert_eq!(
        orders["plugins"],
        serde_json::json!(["office", "web", "per-app"])
    );
    assert_eq!(orders["usage_plans"], serde_json::json!(["gold"]));
    assert_eq!(
        orders["backend"]["urls"],
        serde_json::json!([format!("http://{backend}")])
    );
    assert_eq!(
        orders["backend"]["const_headers"],
        serde_json::json!(["x-backend-token"])
    );
    let ping = routes
        .iter()
        .find(|r| r["route"] == "open/ping")
        .expect("open/ping");
    assert_eq!(ping["auth"], "none");
    assert_eq!(ping["methods"], serde_json::json!(["ANY"]));
    assert_eq!(ping["backend"]["type"], "mock");

    // Keys: id, app, enabled, plans.
    let (status, body) = view(&kg, "/-/keys").await;
    assert_eq!(status, StatusCode::OK);
    no_secret("/-/keys", &body);
    let keys: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        keys,
        serde_json::json!([
            {"id": "AKIDviews", "app": "shop", "enabled": true, "plans": ["gold"]},
            {"id": "AKIDfile", "app": "AKIDfile", "enabled": false, "plans": []},
        ])
    );

    // Plugins: name, type, the APIs using them.
    let (status, body) = view(&kg, "/-/plugins").await;
    assert_eq!(status, StatusCode::OK);
    no_secret("/-/plugins", &body);
    let plugins: Value = serde_json::from_str(&body).expect("json");
    let plugins = plugins.as_array().expect("array");
    assert_eq!(plugins.len(), 3);
    assert_eq!(plugins[0]["name"], "office");
    assert_eq!(plugins[0]["type"], "ip_control");
    assert_eq!(plugins[0]["used_by"], serde_json::json!(["shop/orders"]));
    assert_eq!(plugins[1]["type"], "traffic_control");
    assert_eq!(plugins[1]["settings"]["app_rate_limit"], 100);
    assert_eq!(plugins[2]["type"], "cors");

    // Usage: nothing used yet, then two calls of the quota of five. Reading
    // the view does not count.
    let (status, body) = view(&kg, "/-/usage?key=AKIDviews").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    no_secret("/-/usage", &body);
    let u: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(u["plans"][0]["plan"], "gold");
    assert_eq!(u["plans"][0]["used"], 0);
    assert_eq!(u["plans"][0]["remaining"], 5);
    for _ in 0..2 {
        assert_eq!(
            signed_get(&kg, "/release/orders/x").await,
            StatusCode::OK,
            "signed call"
        );
    }
    for _ in 0..3 {
        let (_, body) = view(&kg, "/-/usage?key=AKIDviews").await;
        let u: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(u["key"], "AKIDviews");
        assert_eq!(u["app"], "shop");
        assert_eq!(u["plans"][0]["quota"], 5);
        assert_eq!(u["plans"][0]["used"], 2, "{body}");
        assert_eq!(u["plans"][0]["remaining"], 3, "{body}");
        assert_eq!(u["counts"], "local");
        // The traffic_control window counting the key's app.
        let w = &u["windows"][0];
        assert_eq!(w["plugin"], "per-app", "{body}");
        assert_eq!(w["window_seconds"], 60);
        assert_eq!(w["app"], "shop");
        assert_eq!(w["app_limit"], 100);
        assert_eq!(w["used"], 2, "{body}");
        assert_eq!(w["remaining"], 98);
        assert_eq!(w["routes"], serde_json::json!(["shop/orders"]));
    }
    let (status, body) = view(&kg, "/-/usage?key=AKIDfile").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["plans"],
        serde_json::json!([])
    );
    assert_eq!(
        view(&kg, "/-/usage?key=AKIDnobody").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(view(&kg, "/-/usage").await.0, StatusCode::BAD_REQUEST);
}

/// The views follow a reload: they show the snapshot in force.
#[tokio::test(flavor = "multi_thread")]
async fn views_follow_reloads() {
    let one = "[[services]]\nname = \"s\"\n[[services.apis]]\nname = \"a\"\npath = \"/a\"\n[services.apis.backend]\ntype = \"mock\"\nbody = \"a\"\n";
    let kg = Keygate::start(one).await;
    let routes: Value = serde_json::from_str(&view(&kg, "/-/routes").await.1).expect("json");
    assert_eq!(routes.as_array().map(Vec::len), Some(1));
    kg.write_config(&format!(
        "{one}[[services.apis]]\nname = \"b\"\npath = \"/b\"\n[services.apis.backend]\ntype = \"mock\"\nbody = \"b\"\n"
    ));
    assert_eq!(kg.reload().await.0, StatusCode::OK);
    let routes: Value = serde_json::from_str(&view(&kg, "/-/routes").await.1).expect("json");
    let names: Vec<&str> = routes
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["route"].as_str())
        .collect();
    assert_eq!(names, ["s/a", "s/b"]);
}
