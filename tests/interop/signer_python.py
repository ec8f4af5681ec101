"""Signs requests with the key-pair signer tencentcloud-apigateway-authorization
(module `apigateway.auth`, HMAC-SHA1 over the listed headers and `Date`) and sends
them to keygate with `requests`.

Reads {"base": "http://127.0.0.1:PORT/path", "id", "secret"} from stdin; prints
{case: {"status": int, "body": parsed JSON or text}}.
"""

import json
import sys

try:
    import requests
    from apigateway.auth import Auth
except ImportError as e:
    print(json.dumps({"_error": "tencentcloud-apigateway-authorization (apigateway.auth) or requests is not installed: %s" % e}))
    sys.exit(3)


def send(method, url, headers, body=None):
    r = requests.request(method, url, headers=headers, data=body, timeout=10)
    try:
        parsed = r.json()
    except ValueError:
        parsed = r.text
    return {"status": r.status_code, "body": parsed}


def main():
    cfg = json.load(sys.stdin)
    base, sid, secret = cfg["base"], cfg["id"], cfg["secret"]
    out = {}
    # GET, signing a custom header besides Date (as the signer's README shows).
    h = Auth(sid, secret, {"Source": "interop-get"}).generateHeaders()
    out["get"] = send("GET", base + "/orders?page=1", h)
    # The same signed request again in the same second (identical signature).
    out["get_again"] = send("GET", base + "/orders?page=1", h)
    # POST with a signed Content-Type (the signer only signs headers, not the body).
    body = json.dumps({"item": "ü", "n": 2})
    h = Auth(sid, secret, {"Content-Type": "application/json", "Source": "interop-post"}).generateHeaders()
    out["post"] = send("POST", base + "/orders", h, body.encode())
    # Only Date signed (no extra headers).
    out["date_only"] = send("GET", base + "/ping", Auth(sid, secret).generateHeaders())
    # Tampered: a signed header changed after signing.
    h = Auth(sid, secret, {"Source": "interop-get"}).generateHeaders()
    h["Source"] = "someone-else"
    out["tampered"] = send("GET", base + "/orders", h)
    # Wrong secret and unknown id.
    out["wrong_secret"] = send("GET", base + "/orders", Auth(sid, "not-the-secret", {"Source": "x"}).generateHeaders())
    out["unknown_id"] = send("GET", base + "/orders", Auth("nobody", secret, {"Source": "x"}).generateHeaders())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
