// Conformance cases signed with official npm webhook libraries, printed as a JSON list on stdout
// in exactly the case format of ../sdk_cases.py (which runs this script and merges the list, so
// the Rust test sees one list). Same rules as there: no network, no gateway, timestamps from the
// clock when the script runs; every case the library can judge is judged by it first (accept
// cases must verify, refuse cases must be refused), and the script exits non-zero on any
// disagreement.
//
// Usage: npm ci --prefix tests/conformance/node && node tests/conformance/node/cases.mjs

import { createHmac, generateKeyPairSync, sign as edSign } from "node:crypto";
import { readFileSync } from "node:fs";
import { sign, verify, verifyWithFallback } from "@octokit/webhooks-methods";
import { Webhook } from "standardwebhooks";
import "@shopify/shopify-api/adapters/web-api";
import { ApiVersion, LogSeverity, shopifyApi } from "@shopify/shopify-api";
import { LinearWebhookClient } from "@linear/sdk/webhooks";
import { verifyKey, InteractionType, WebhookType } from "discord-interactions";
import { AwsLambdaReceiver } from "@zoom/rivet/users";
import { EventSubMiddleware } from "@twurple/eventsub-http";
import { verifyWebhook as clerkVerifyWebhook } from "@clerk/backend/webhooks";
import { Resend } from "resend";

// The installed version, read from node_modules (not every package exports its package.json).
const version = (pkg) =>
  JSON.parse(readFileSync(new URL(`node_modules/${pkg}/package.json`, import.meta.url), "utf8")).version;

const NOW = Math.floor(Date.now() / 1000);
const HOUR = 3600;
const CASES = [];

function add(name, verifyBlock, headers, body, expect, reason = null, { method = "POST", query = null, source = "", status = null, reply = null } = {}) {
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
    status,
    reply,
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


const hmacOf = (alg, key, data, enc) => createHmac(alg, key).update(data).digest(enc);

// ------------------------------------------------------------ Shopify (@shopify/shopify-api)
async function shopifyCases() {
  const src = `HMAC-SHA256, checked with @shopify/shopify-api ${version("@shopify/shopify-api")} webhooks.validate`;
  const secret = "shpss_conformance_secret";
  const shopify = shopifyApi({
    apiKey: "conformance", apiSecretKey: secret, apiVersion: ApiVersion.October25,
    hostName: "hooks.example.com", isEmbeddedApp: false,
    logger: { level: LogSeverity.Error, log: async () => {} },
  });
  const verifyBlock = { provider: "shopify", secrets: [secret] };
  const body = '{"id":820982911946154508,"email":"jon@example.com","total_price":"199.00"}';
  const judge = async (headers, b = body) => (await shopify.webhooks.validate({
    rawBody: b,
    rawRequest: new Request("https://hooks.example.com/hooks/shopify", { method: "POST", headers, body: b }),
  })).valid;
  const classic = (sig, id) => ({
    "X-Shopify-Hmac-Sha256": sig, "X-Shopify-Topic": "orders/create", "X-Shopify-Shop-Domain": "acme.myshopify.com",
    "X-Shopify-API-Version": "2025-10", "X-Shopify-Webhook-Id": id,
  });
  // Newer deliveries: the same headers without the X- prefix.
  const unprefixed = (sig, id) => ({
    "shopify-hmac-sha256": sig, "shopify-topic": "orders/create", "shopify-shop-domain": "acme.myshopify.com",
    "shopify-api-version": "2025-10", "shopify-webhook-id": id, "shopify-event-id": `event-${id}`,
  });
  const sig = hmacOf("sha256", secret, body, "base64");
  for (const [kind, make] of [["classic", classic], ["unprefixed", unprefixed]]) {
    const h = make(sig, `b54557e4-bdd9-4b37-8a5f-${kind}`);
    sdkAgrees(`shopify/${kind}-valid`, await judge(h));
    add(`shopify/${kind}-valid`, verifyBlock, h, body, "accept", null, { source: src });
    sdkAgrees(`shopify/${kind}-tampered-body`, !(await judge(h, tampered(body))));
    add(`shopify/${kind}-tampered-body`, verifyBlock, h, tampered(body), "refuse", "mismatch", { source: src });
    const other = make(hmacOf("sha256", "another secret", body, "base64"), `${kind}-other`);
    sdkAgrees(`shopify/${kind}-other-secret`, !(await judge(other)));
    add(`shopify/${kind}-other-secret`, verifyBlock, other, body, "refuse", "mismatch", { source: src });
  }
}

// ------------------------------------------------------------------------ Linear (@linear/sdk)
function linearCases() {
  const src = `HMAC-SHA256, checked with @linear/sdk ${version("@linear/sdk")} LinearWebhookClient.verify`;
  const secret = "lin_wh_conformance_secret";
  const client = new LinearWebhookClient(secret);
  const verifyBlock = { provider: "linear", secrets: [secret] };
  const judge = (b, sig) => {
    try {
      return client.verify(Buffer.from(b), sig) === true;
    } catch {
      return false;
    }
  };
  const event = (ts) => `{"action":"create","type":"Issue","data":{"id":"9f1c"},"webhookTimestamp":${ts}}`;
  const signed = (b, s = secret) => ({ "Linear-Signature": hmacOf("sha256", s, b, "hex"), "Linear-Delivery": "d-" + hmacOf("sha256", "id", b, "hex").slice(0, 12) });
  const nowMs = Date.now();
  const valid = event(nowMs);
  sdkAgrees("linear/valid", judge(valid, signed(valid)["Linear-Signature"]));
  add("linear/valid", verifyBlock, signed(valid), valid, "accept", null, { source: src });
  sdkAgrees("linear/tampered-body", !judge(tampered(valid), signed(valid)["Linear-Signature"]));
  add("linear/tampered-body", verifyBlock, signed(valid), valid.replace("Issue", "Issux"), "refuse", "mismatch", { source: src });
  const stale = event(nowMs - 10 * 60 * 1000);
  sdkAgrees("linear/stale", !judge(stale, signed(stale)["Linear-Signature"]));
  add("linear/stale", verifyBlock, signed(stale), stale, "refuse", "expired", { source: src });
  // The SDK requires webhookTimestamp to be a JSON number.
  const asString = event(`"${nowMs}"`);
  sdkAgrees("linear/timestamp-as-string", !judge(asString, signed(asString)["Linear-Signature"]));
  add("linear/timestamp-as-string", verifyBlock, signed(asString), asString, "refuse", "malformed", { source: src });
  const other = signed(valid, "another secret");
  sdkAgrees("linear/other-secret", !judge(valid, other["Linear-Signature"]));
  add("linear/other-secret", verifyBlock, other, valid, "refuse", "mismatch", { source: src });
}

// ---------------------------------------------------------- Discord (npm discord-interactions)
async function discordCases() {
  const src = `Ed25519 (node:crypto), checked with discord-interactions ${version("discord-interactions")} verifyKey`;
  const { publicKey, privateKey } = generateKeyPairSync("ed25519");
  const pubHex = Buffer.from(publicKey.export({ format: "jwk" }).x, "base64url").toString("hex");
  const other = generateKeyPairSync("ed25519").privateKey;
  const verifyBlock = { provider: "discord", public_key: pubHex };
  const signed = (b, key = privateKey, ts = String(NOW)) => ({
    "X-Signature-Ed25519": edSign(null, Buffer.from(ts + b), key).toString("hex"),
    "X-Signature-Timestamp": ts,
  });
  const judge = (b, h) => verifyKey(b, h["X-Signature-Ed25519"], h["X-Signature-Timestamp"], pubHex);
  // The library's two middlewares: an Interaction PING gets {"type":1}; a Webhook Events PING
  // (type 0) gets 204; a Webhook Event of type 1 carries `event` and goes on to the app.
  const cases = [
    ["interaction-ping", `{"type":${InteractionType.PING},"id":"1","application_id":"2","token":"t","version":1}`, 200, '{"type":1}'],
    ["webhook-event-ping", `{"version":1,"application_id":"2","type":${WebhookType.PING}}`, 204, ""],
    ["webhook-event", `{"version":1,"application_id":"2","type":${WebhookType.EVENT},"event":{"type":"APPLICATION_AUTHORIZED","timestamp":"2024-10-18T14:42:53.064834","data":{"user":{"id":"3"}}}}`, 200, null],
    ["interaction-command", `{"type":${InteractionType.APPLICATION_COMMAND},"id":"4","application_id":"2","token":"t","version":1,"data":{"name":"hello"}}`, 200, null],
  ];
  for (const [what, body, status, reply] of cases) {
    const h = signed(body);
    sdkAgrees(`discord/${what}`, await judge(body, h));
    add(`discord/${what}`, verifyBlock, h, body, "accept", null, { source: src, status, reply });
  }
  const body = cases[2][1];
  const h = signed(body);
  sdkAgrees("discord/node-tampered-body", !(await judge(tampered(body), h)));
  add("discord/node-tampered-body", verifyBlock, h, tampered(body), "refuse", "mismatch", { source: src });
  const o = signed(body, other);
  sdkAgrees("discord/node-other-key", !(await judge(body, o)));
  add("discord/node-other-key", verifyBlock, o, body, "refuse", "mismatch", { source: src });
}

// ----------------------------------------------- GitLab signing tokens (npm standardwebhooks)
function gitlabCases() {
  const src = `standardwebhooks (npm) ${version("standardwebhooks")} Webhook.sign (GitLab signs with the Standard Webhooks scheme)`;
  const signing = "whsec_" + Buffer.from("gitlab signing token conformance").toString("base64");
  const token = "glpat-like-secret-token";
  const verifyBlock = { provider: "gitlab", secrets: [signing, token] };
  const body = '{"object_kind":"push","ref":"refs/heads/main","project":{"id":15}}';
  const msgId = "msg_gitlab_2mEPLQ6cC3YBIXPXJhvkqeU8";
  const hdrs = (t, s = signing, b = body) => ({
    "webhook-id": msgId, "webhook-timestamp": String(t),
    "webhook-signature": new Webhook(s).sign(msgId, new Date(t * 1000), b),
    "X-Gitlab-Event": "Push Hook", "X-Gitlab-Event-UUID": `uuid-${t}-${s.length}`,
  });
  const judge = (h, b = body) => {
    try {
      new Webhook(signing).verify(b, h);
      return true;
    } catch {
      return false;
    }
  };
  const h = hdrs(NOW);
  sdkAgrees("gitlab/signing-token-valid", judge(h));
  add("gitlab/signing-token-valid", verifyBlock, h, body, "accept", null, { source: src });
  sdkAgrees("gitlab/signing-token-tampered", !judge(h, tampered(body)));
  add("gitlab/signing-token-tampered", verifyBlock, h, tampered(body), "refuse", "mismatch", { source: src });
  const stale = hdrs(NOW - HOUR);
  sdkAgrees("gitlab/signing-token-stale", !judge(stale));
  add("gitlab/signing-token-stale", verifyBlock, stale, body, "refuse", "expired", { source: src });
  const tokenSrc = "GitLab docs: X-Gitlab-Token carries the secret token itself";
  add("gitlab/secret-token", verifyBlock, { "X-Gitlab-Token": token, "X-Gitlab-Event-UUID": "uuid-token" }, body, "accept", null, { source: tokenSrc });
  add("gitlab/wrong-secret-token", verifyBlock, { "X-Gitlab-Token": "guess" }, body, "refuse", "mismatch", { source: tokenSrc });
}

// ---------------------------------------------------------------------- Zoom (@zoom/rivet)
async function zoomCases() {
  const src = `HMAC-SHA256, checked with @zoom/rivet ${version("@zoom/rivet")} AwsLambdaReceiver`;
  const secret = "zoom-webhook-secret-token";
  const receiver = new AwsLambdaReceiver({ webhooksSecretToken: secret });
  receiver.init({ eventEmitter: { emit: async () => {} } });
  const handle = receiver.start();
  const verifyBlock = { provider: "zoom", secrets: [secret] };
  const signed = (b, t = NOW, s = secret) => ({
    "x-zm-signature": "v0=" + hmacOf("sha256", s, `v0:${t}:${b}`, "hex"),
    "x-zm-request-timestamp": String(t),
  });
  // rivet answers 200 when it verifies, 400 when it does not; its reply body for a URL validation.
  const judge = async (h, b) => {
    const quiet = console.debug;
    console.debug = () => {};
    try {
      return await handle({ headers: h, body: b, isBase64Encoded: false }, {});
    } finally {
      console.debug = quiet;
    }
  };
  const event = `{"event":"meeting.started","event_ts":${NOW * 1000},"payload":{"account_id":"a1","object":{"id":"85"}}}`;
  let h = signed(event);
  sdkAgrees("zoom/valid", (await judge(h, event)).statusCode === 200);
  add("zoom/valid", verifyBlock, h, event, "accept", null, { source: src });
  sdkAgrees("zoom/tampered-body", (await judge(h, tampered(event))).statusCode === 400);
  add("zoom/tampered-body", verifyBlock, h, tampered(event), "refuse", "mismatch", { source: src });
  const other = signed(event, NOW, "another token");
  sdkAgrees("zoom/other-secret", (await judge(other, event)).statusCode === 400);
  add("zoom/other-secret", verifyBlock, other, event, "refuse", "mismatch", { source: src });
  const validation = `{"event":"endpoint.url_validation","event_ts":${NOW * 1000},"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"}}`;
  h = signed(validation);
  const answer = await judge(h, validation);
  sdkAgrees("zoom/url-validation", answer.statusCode === 200);
  // The gateway's reply must be what rivet answers (plainToken and encryptedToken).
  const expected = JSON.parse(answer.body);
  add("zoom/url-validation", verifyBlock, h, validation, "accept", null, {
    source: src + " (handshake: reply compared with rivet's)",
    reply: JSON.stringify({ encryptedToken: expected.encryptedToken, plainToken: expected.plainToken }),
  });
}

// ------------------------------------------------------ Twitch EventSub (@twurple/eventsub-http)
function twitchCases() {
  const src = `HMAC-SHA256, checked with @twurple/eventsub-http ${version("@twurple/eventsub-http")} (its internal _verifyData)`;
  const secret = "twitch-eventsub-secret-0123456789";
  const verifyBlock = { provider: "twitch", secrets: [secret] };
  const judge = (id, ts, b, sig) => EventSubMiddleware.prototype._verifyData.call({ _secret: secret }, id, ts, b, sig);
  const signed = (id, ts, b, type = "notification", s = secret) => ({
    "Twitch-Eventsub-Message-Id": id, "Twitch-Eventsub-Message-Timestamp": ts,
    "Twitch-Eventsub-Message-Type": type,
    "Twitch-Eventsub-Message-Signature": "sha256=" + hmacOf("sha256", s, id + ts + b, "hex"),
  });
  const ts = new Date(NOW * 1000).toISOString();
  const body = '{"subscription":{"id":"f1c2a387","type":"channel.follow","version":"2"},"event":{"user_id":"1337"}}';
  const h = signed("e76c6bd4-55c9-4987-8304-da1588d8988b", ts, body);
  sdkAgrees("twitch/valid", judge(h["Twitch-Eventsub-Message-Id"], ts, body, h["Twitch-Eventsub-Message-Signature"]));
  add("twitch/valid", verifyBlock, h, body, "accept", null, { source: src });
  sdkAgrees("twitch/tampered-body", !judge(h["Twitch-Eventsub-Message-Id"], ts, tampered(body), h["Twitch-Eventsub-Message-Signature"]));
  add("twitch/tampered-body", verifyBlock, h, tampered(body), "refuse", "mismatch", { source: src });
  const staleTs = new Date((NOW - HOUR) * 1000).toISOString();
  const stale = signed("a-stale-message-id", staleTs, body);
  sdkAgrees("twitch/stale (signature itself valid)", judge("a-stale-message-id", staleTs, body, stale["Twitch-Eventsub-Message-Signature"]));
  add("twitch/stale", verifyBlock, stale, body, "refuse", "expired", { source: src + "; Twitch docs: refuse older than 10 minutes" });
  const challenge = '{"challenge":"pogchamp-kappa-360noscope-vohiyo","subscription":{"id":"f1c2a387","type":"channel.follow","version":"2"}}';
  const v = signed("verification-message-id", ts, challenge, "webhook_callback_verification");
  sdkAgrees("twitch/callback-verification", judge("verification-message-id", ts, challenge, v["Twitch-Eventsub-Message-Signature"]));
  add("twitch/callback-verification", verifyBlock, v, challenge, "accept", null, {
    source: src + " (handshake: the challenge echoed)", reply: "pogchamp-kappa-360noscope-vohiyo",
  });
}

// ---------------------------------------------- Clerk (@clerk/backend) and Resend (resend)
async function svixBasedCases() {
  const secret = "whsec_" + Buffer.from("clerk and resend conformance key").toString("base64");
  const body = '{"type":"user.created","data":{"id":"user_29w83sxmDNGwOuEthce5gg56FcC"},"object":"event"}';
  const msgId = "msg_svix_based_p5jXN8AQM9LWM0D4loKWxJek";
  const hdrs = (t, b = body) => {
    const sig = new Webhook(secret).sign(msgId, new Date(t * 1000), b);
    return { "svix-id": msgId, "svix-timestamp": String(t), "svix-signature": sig };
  };
  const clerkJudge = async (h, b = body) => {
    try {
      await clerkVerifyWebhook(new Request("https://hooks.example.com/clerk", { method: "POST", headers: h, body: b }), { signingSecret: secret });
      return true;
    } catch {
      return false;
    }
  };
  const resend = new Resend("re_conformance_not_used");
  const resendJudge = (h, b = body) => {
    try {
      resend.webhooks.verify({ payload: b, headers: { id: h["svix-id"], timestamp: h["svix-timestamp"], signature: h["svix-signature"] }, webhookSecret: secret });
      return true;
    } catch {
      return false;
    }
  };
  for (const [provider, judge, lib] of [["clerk", clerkJudge, "@clerk/backend"], ["resend", resendJudge, "resend"]]) {
    const src = `standardwebhooks Webhook.sign, checked with ${lib} ${version(lib)} ${provider === "clerk" ? "verifyWebhook" : "webhooks.verify"}`;
    const verifyBlock = { provider, secrets: [secret] };
    const h = hdrs(NOW);
    sdkAgrees(`${provider}/sdk-valid`, await judge(h));
    add(`${provider}/sdk-valid`, verifyBlock, h, body, "accept", null, { source: src });
    sdkAgrees(`${provider}/sdk-tampered-body`, !(await judge(h, tampered(body))));
    add(`${provider}/sdk-tampered-body`, verifyBlock, h, tampered(body), "refuse", "mismatch", { source: src });
    const stale = hdrs(NOW - HOUR);
    sdkAgrees(`${provider}/sdk-stale`, !(await judge(stale)));
    add(`${provider}/sdk-stale`, verifyBlock, stale, body, "refuse", "expired", { source: src });
  }
}

await githubCases();
standardWebhooksCases();
await shopifyCases();
linearCases();
await discordCases();
gitlabCases();
await zoomCases();
twitchCases();
await svixBasedCases();
process.stdout.write(JSON.stringify(CASES, null, 1) + "\n");
