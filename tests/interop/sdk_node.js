// Calls keygate with the official Node.js cloud API SDK (tencentcloud-sdk-nodejs-common).
//
// Reads a JSON object from stdin: {"endpoint": "127.0.0.1:PORT", "id", "secret",
// "cases": [names] (optional)} and prints one JSON object: {case: {"ok": true,
// "response": {...}} | {"ok": false, "code", "message", "httpCode"}}.
// The module is resolved from tests/interop/node/node_modules (next to this file).
"use strict";

const path = require("path");
let CommonClient;
try {
  ({ CommonClient } = require(path.join(
    __dirname,
    "node",
    "node_modules",
    "tencentcloud-sdk-nodejs-common",
  )));
} catch (e) {
  console.log(JSON.stringify({ _error: "tencentcloud-sdk-nodejs-common is not installed: " + e.message }));
  process.exit(3);
}

const VERSION = "2017-03-12";

function client(cfg, { secret, secretId, method = "POST", sign = "TC3-HMAC-SHA256" } = {}) {
  return new CommonClient("cvm.tencentcloudapi.com", VERSION, {
    credential: { secretId: secretId || cfg.id, secretKey: secret || cfg.secret },
    region: "ap-guangzhou",
    profile: {
      signMethod: sign,
      httpProfile: { endpoint: cfg.endpoint, protocol: "http://", reqMethod: method, reqTimeout: 10 },
    },
  });
}

function cases(cfg) {
  const body = Buffer.alloc(10240, 7);
  const c = {
    tc3_post_json: () =>
      client(cfg).request("DescribeInstances", { Limit: 1, Filters: [{ Name: "zone", Values: ["a b/ü"] }] }),
    tc3_get: () => client(cfg, { method: "GET" }).request("DescribeInstances", { Limit: 1, Name: "a b&c=d/ü*~'" }),
    tc3_octet_stream: () => client(cfg).requestOctetStream("RunInstances", body),
    tc3_multipart: () =>
      client(cfg).request("DescribeFiles", { Name: "x", File: Buffer.from([0, 1, 2, 255]) }, { multipart: true }),
    tc3_call_twice_1: () => client(cfg).request("DescribeRegions", {}),
    tc3_call_twice_2: () => client(cfg).request("DescribeRegions", {}),
    tc3_wrong_secret: () => client(cfg, { secret: "wrong-secret" }).request("DescribeInstances", {}),
    tc3_unknown_id: () => client(cfg, { secretId: "AKIDnobody" }).request("DescribeInstances", {}),
    tc3_invalid_action: () => client(cfg).request("TerminateInstances", {}),
    tc3_skip_sign: () => client(cfg).request("DescribeInstances", {}, { skipSign: true }),
    v1_run: () => client(cfg, { sign: "HmacSHA256" }).request("RunInstances", {}),
    v1_wrong_secret: () => client(cfg, { sign: "HmacSHA1", secret: "bad" }).request("DescribeInstances", {}),
    v1_invalid_action: () => client(cfg, { sign: "HmacSHA1", method: "GET" }).request("TerminateInstances", {}),
  };
  for (const sign of ["HmacSHA1", "HmacSHA256"]) {
    for (const method of ["GET", "POST"]) {
      c[`v1_${sign.toLowerCase()}_${method.toLowerCase()}`] = () =>
        client(cfg, { sign, method }).request("DescribeInstances", { Limit: 1, Name: "a b&c=d/ü*~+" });
    }
  }
  return c;
}

async function main() {
  let input = "";
  for await (const chunk of process.stdin) input += chunk;
  const cfg = JSON.parse(input);
  const all = cases(cfg);
  const out = {};
  for (const name of cfg.cases || Object.keys(all)) {
    try {
      out[name] = { ok: true, response: await all[name]() };
    } catch (e) {
      out[name] = { ok: false, code: e.code || "NodeError", message: String(e.message), httpCode: e.httpCode };
    }
  }
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.log(JSON.stringify({ _error: String(e && e.stack) }));
  process.exit(2);
});
