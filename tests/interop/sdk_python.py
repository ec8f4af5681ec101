"""Calls keygate with the official Python cloud API SDK (tencentcloud-sdk-python-common).

Reads a JSON object from stdin: {"endpoint": "127.0.0.1:PORT", "open_endpoint":
"localhost:PORT", "id": ..., "secret": ..., "cases": [names] (optional)} and prints
one JSON object: {case: {"ok": true, "response": {...}} | {"ok": false, "code": ...,
"message": ...}}. Every case runs even when an earlier one fails.
"""

import json
import sys

try:
    from tencentcloud.common import credential
    from tencentcloud.common.common_client import CommonClient
    from tencentcloud.common.exception.tencent_cloud_sdk_exception import (
        TencentCloudSDKException,
    )
    from tencentcloud.common.profile.client_profile import ClientProfile
    from tencentcloud.common.profile.http_profile import HttpProfile
except ImportError as e:  # the Rust test turns this into a clear failure
    print(json.dumps({"_error": "tencentcloud-sdk-python-common is not installed: %s" % e}))
    sys.exit(3)

VERSION = "2017-03-12"


def client(cfg, secret=None, method="POST", sign="TC3-HMAC-SHA256", unsigned=False,
           endpoint=None, secret_id=None):
    http = HttpProfile(endpoint=endpoint or cfg["endpoint"], protocol="http", reqMethod=method)
    http.reqTimeout = 10
    profile = ClientProfile(signMethod=sign, httpProfile=http)
    profile.unsignedPayload = unsigned
    cred = credential.Credential(secret_id or cfg["id"], secret or cfg["secret"])
    return CommonClient("cvm", VERSION, cred, "ap-guangzhou", profile=profile)


def cases(cfg):
    body = bytes(range(256)) * 40  # 10 KiB of every byte value
    c = {}
    # TC3, the default signature.
    c["tc3_post_json"] = lambda: client(cfg).call_json(
        "DescribeInstances", {"Limit": 1, "Filters": [{"Name": "zone", "Values": ["a b/ü"]}]})
    c["tc3_get"] = lambda: client(cfg, method="GET").call_json(
        "DescribeInstances", {"Limit": 1, "Name": "a b&c=d/ü*~"})
    c["tc3_post_unsigned"] = lambda: client(cfg, unsigned=True).call_json(
        "DescribeZones", {"Limit": 2})
    c["tc3_get_unsigned"] = lambda: client(cfg, method="GET", unsigned=True).call_json(
        "DescribeZones", {"Limit": 3})
    c["tc3_octet_stream"] = lambda: client(cfg).call_octet_stream(
        "RunInstances", {"X-TC-Custom": "1"}, body)
    c["tc3_octet_stream_unsigned"] = lambda: client(cfg, unsigned=True).call_octet_stream(
        "RunInstances", {}, body)
    c["tc3_multipart"] = lambda: client(cfg).call_json(
        "DescribeFiles", {"Name": "x", "File": b"\x00\x01binary", "Tags": ["a"]},
        options={"IsMultipart": True, "BinaryParams": ["File"]})
    c["tc3_call_twice_1"] = lambda: client(cfg).call_json("DescribeRegions", {})
    c["tc3_call_twice_2"] = lambda: client(cfg).call_json("DescribeRegions", {})
    c["tc3_wrong_secret"] = lambda: client(cfg, secret="wrong-secret").call_json(
        "DescribeInstances", {})
    c["tc3_unknown_id"] = lambda: client(cfg, secret_id="AKIDnobody").call_json(
        "DescribeInstances", {})
    c["tc3_invalid_action"] = lambda: client(cfg).call_json("TerminateInstances", {})
    c["tc3_limit_1"] = lambda: client(cfg).call_json("LimitedCall", {"N": 1})
    c["tc3_limit_2"] = lambda: client(cfg).call_json("LimitedCall", {"N": 2})
    c["tc3_skip_sign"] = lambda: client(cfg).call_json(
        "DescribeInstances", {}, options={"SkipSign": True})
    c["open_skip_sign"] = lambda: client(cfg, endpoint=cfg["open_endpoint"]).call_json(
        "DescribePublic", {}, options={"SkipSign": True})
    # v1 (HmacSHA1 / HmacSHA256), GET and POST.
    for sign in ("HmacSHA1", "HmacSHA256"):
        for method in ("GET", "POST"):
            name = "v1_%s_%s" % (sign.lower(), method.lower())
            c[name] = (lambda s, m: lambda: client(cfg, method=m, sign=s).call_json(
                "DescribeInstances", {"Limit": 1, "Name": "a b&c=d/ü*~+"}))(sign, method)
    c["v1_run"] = lambda: client(cfg, sign="HmacSHA256").call_json("RunInstances", {})
    c["v1_wrong_secret"] = lambda: client(cfg, sign="HmacSHA256", secret="bad").call_json(
        "DescribeInstances", {})
    c["v1_invalid_action"] = lambda: client(cfg, sign="HmacSHA1", method="GET").call_json(
        "TerminateInstances", {})
    return c


def main():
    cfg = json.load(sys.stdin)
    all_cases = cases(cfg)
    wanted = cfg.get("cases") or list(all_cases)
    out = {}
    for name in wanted:
        try:
            out[name] = {"ok": True, "response": all_cases[name]()}
        except TencentCloudSDKException as e:
            out[name] = {"ok": False, "code": e.get_code(), "message": str(e.get_message())}
        except Exception as e:  # a bug in a case, reported rather than hidden
            out[name] = {"ok": False, "code": "PythonError", "message": repr(e)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
