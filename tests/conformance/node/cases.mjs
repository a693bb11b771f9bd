// Conformance cases signed with official npm webhook libraries, printed as a JSON list on stdout
// in exactly the case format of ../sdk_cases.py (which runs this script and merges the list, so
// the Rust test sees one list). Same rules as there: no network, no gateway, timestamps from the
// clock when the script runs; every case the library can judge is judged by it first (accept
// cases must verify, refuse cases must be refused), and the script exits non-zero on any
// disagreement.
//
// Usage: npm ci --prefix tests/conformance/node && node tests/conformance/node/cases.mjs

import { readFileSync } from "node:fs";
import { sign, verify, verifyWithFallback } from "@octokit/webhooks-methods";
import { Webhook } from "standardwebhooks";

// The installed version, read from node_modules (not every package exports its package.json).
const version = (pkg) =>
  JSON.parse(readFileSync(new URL(`node_modules/${pkg}/package.json`, import.meta.url), "utf8")).version;

const NOW = Math.floor(Date.now() / 1000);
const HOUR = 3600;
const CASES = [];

function add(name, verifyBlock, headers, body, expect, reason = null, { method = "POST", query = null, source = "" } = {}) {
  CASES.push({
    name,
    provider: verifyBlock.provider,
    verify: verifyBlock,
    secrets: verifyBlock.secrets ?? [],
    public_url: verifyBlock.public_url ?? null,
    method,
    query,
    headers,
    body_b64: Buffer.from(body, "utf8").toString("base64"),
    expect,
    reason,
    source,
  });
}

function sdkAgrees(name, ok) {
  if (!ok) {
    process.stderr.write(`the official library disagrees with case ${name}\n`);
    process.exit(1);
  }
}

const tampered = (body) => (body.includes("1") ? body.replace("1", "2") : body + " ");

// ---------------------------------------------------------------- GitHub (@octokit/webhooks-methods)
async function githubCases() {
  const src = `@octokit/webhooks-methods ${version("@octokit/webhooks-methods")} sign`;
  const secret = "octokit-conformance-secret";
  const other = "some other secret";
  const verifyBlock = { provider: "github", secrets: [secret] };
  const body = '{"action":"opened","number":1,"repository":{"full_name":"octo/hello"}}';
  const delivery = (n) => ({ "X-GitHub-Delivery": `5b8f0e1a-cc78-11e3-81ab-4c9367dc09${n}`, "X-GitHub-Event": "pull_request" });

  const sig = await sign(secret, body);
  sdkAgrees("github/octokit-valid", await verify(secret, body, sig));
  add("github/octokit-valid", verifyBlock, { ...delivery("01"), "X-Hub-Signature-256": sig }, body, "accept", null, { source: src });

  sdkAgrees("github/octokit-tampered-body", !(await verify(secret, tampered(body), sig)));
  add("github/octokit-tampered-body", verifyBlock, { ...delivery("02"), "X-Hub-Signature-256": sig }, tampered(body), "refuse", "mismatch", { source: src });

  const otherSig = await sign(other, body);
  sdkAgrees("github/octokit-other-secret", !(await verify(secret, body, otherSig)));
  add("github/octokit-other-secret", verifyBlock, { ...delivery("03"), "X-Hub-Signature-256": otherSig }, body, "refuse", "mismatch", { source: src });

  add("github/octokit-missing-header", verifyBlock, delivery("04"), body, "refuse", "missing", { source: src });

  // Secret rotation: verifyWithFallback tries the additional secrets too; hookgate any of `secrets`.
  sdkAgrees("github/octokit-rotated-secret", await verifyWithFallback(other, body, sig, [secret]));
  add("github/octokit-rotated-secret", { provider: "github", secrets: [other, secret] }, { ...delivery("05"), "X-Hub-Signature-256": sig }, body, "accept", null, { source: src + " + verifyWithFallback" });

  // Non-ASCII payload: signed as UTF-8 by the library, so the gateway must hash the raw bytes.
  const utf8Body = '{"action":"created","comment":{"body":"Grüße, 世界 ✓"}}';
  const utf8Sig = await sign(secret, utf8Body);
  sdkAgrees("github/octokit-utf8-body", await verify(secret, utf8Body, utf8Sig));
  add("github/octokit-utf8-body", verifyBlock, { ...delivery("06"), "X-Hub-Signature-256": utf8Sig }, utf8Body, "accept", null, { source: src });
}

// ------------------------------------------------------------- Standard Webhooks (npm standardwebhooks)
function standardWebhooksCases() {
  const src = `standardwebhooks (npm) ${version("standardwebhooks")} Webhook.sign`;
  const secret = "whsec_" + Buffer.from("node conformance key, 32 bytes!!").toString("base64");
  const other = "whsec_" + Buffer.from("a different key for the node run").toString("base64");
  const verifyBlock = { provider: "standard-webhooks", secrets: [secret] };
  const body = '{"type":"invoice.paid","data":{"id":"inv_1","amount":1200}}';
  const msgId = "msg_node_2KWPBgLlAfxdpx2AI54pPJ85f4W";

  const hdrs = (t, s = secret, b = body) => ({
    "webhook-id": msgId,
    "webhook-timestamp": String(t),
    "webhook-signature": new Webhook(s).sign(msgId, new Date(t * 1000), b),
  });
  // What the library says about a request: null if it verifies, else its error message.
  const judge = (h, b = body) => {
    try {
      new Webhook(secret).verify(b, h);
      return null;
    } catch (e) {
      return e.message;
    }
  };

  const h = hdrs(NOW);
  sdkAgrees("standard-webhooks/node-valid", judge(h) === null);
  add("standard-webhooks/node-valid", verifyBlock, h, body, "accept", null, { source: src });

  sdkAgrees("standard-webhooks/node-tampered-body", judge(h, tampered(body)) === "No matching signature found");
  add("standard-webhooks/node-tampered-body", verifyBlock, h, tampered(body), "refuse", "mismatch", { source: src });

  const o = hdrs(NOW, other);
  sdkAgrees("standard-webhooks/node-other-secret", judge(o) === "No matching signature found");
  add("standard-webhooks/node-other-secret", verifyBlock, o, body, "refuse", "mismatch", { source: src });

  const stale = hdrs(NOW - HOUR);
  sdkAgrees("standard-webhooks/node-stale", judge(stale) === "Message timestamp too old");
  add("standard-webhooks/node-stale", verifyBlock, stale, body, "refuse", "expired", { source: src });

  const future = hdrs(NOW + HOUR);
  sdkAgrees("standard-webhooks/node-future", judge(future) === "Message timestamp too new");
  add("standard-webhooks/node-future", verifyBlock, future, body, "refuse", "future", { source: src });

  const noTs = { "webhook-id": h["webhook-id"], "webhook-signature": h["webhook-signature"] };
  sdkAgrees("standard-webhooks/node-missing-timestamp", judge(noTs) === "Missing required headers");
  add("standard-webhooks/node-missing-timestamp", verifyBlock, noTs, body, "refuse", "missing", { source: src });

  // Rotation on the sender side: several space-separated v1 entries, one of them valid.
  const listed = { ...h, "webhook-signature": `${o["webhook-signature"]} ${h["webhook-signature"]}` };
  sdkAgrees("standard-webhooks/node-signature-list-one-good", judge(listed) === null);
  add("standard-webhooks/node-signature-list-one-good", verifyBlock, listed, body, "accept", null, { source: src });
}

await githubCases();
standardWebhooksCases();
process.stdout.write(JSON.stringify(CASES, null, 1) + "\n");
