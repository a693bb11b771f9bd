#!/usr/bin/env python3
"""Conformance cases for hookgate's signature presets, made with the providers' official SDKs.

One job: sign requests the way each provider's own library does, and print them as a JSON list of
cases on stdout, each saying whether a correct gateway must accept or refuse it (and why). It never
talks to the network or to the gateway; feeding the cases through a running gateway is the job of
the Rust integration test. Timestamps are taken from the clock when the script runs, so feed the
cases promptly (the `verify` block of each case widens only Paddle's 5 s window, to 2 minutes).

Case fields:
  name       unique, readable: "<provider>/<what>"
  provider   hookgate provider id
  verify     the route's whole `verify:` block (provider, secrets, public_url, public_key, ...)
  secrets    same as verify.secrets (kept for convenience)
  public_url the public_url to configure (None unless the provider signs the URL)
  method     HTTP method
  query      query string to send (without "?"), or None
  headers    {name: value} to send
  body_b64   raw body, base64
  expect     "accept" | "refuse"
  reason     expected hookgate Reason for a refusal ("mismatch", "expired", ...), else None
  source     which library produced the signature
  status     for an accepted handshake, the status the gateway must answer (None: 200)
  reply      for an accepted handshake, the exact body the gateway must answer, as the provider's
             library computes it (None: not checked)
Every "accept" case of an SDK that can also verify is checked with that SDK before printing, and
the script exits non-zero if the SDK disagrees.

Some official libraries exist only on npm (GitHub's @octokit/webhooks-methods, the Standard Webhooks
TypeScript package): tests/conformance/node/cases.mjs signs with them and prints cases in the same
format, and this script runs it (after `npm ci` there when node_modules is missing or older than the
lock file) and merges its list. Node.js and npm are required: without them the script fails.

Usage: pip install -r tests/conformance/requirements.txt && python3 tests/conformance/sdk_cases.py
"""

import base64
import hashlib
import hmac
import json
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlencode

import discord_interactions
import nacl.signing
import slack_sdk.signature
import standardwebhooks
import stripe
import svix.webhooks
import twilio.request_validator
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hubspot.exceptions import InvalidSignatureTimestampError
from hubspot.utils.signature import Signature as HubSpotSignature
from mailgun.security import SecurityGuard as MailgunGuard
from paddle_billing.Notifications.PaddleSignature import PaddleSignature
from sendgrid.helpers.eventwebhook import EventWebhook
from square.utils.webhooks_helper import verify_signature as square_verify_signature

NOW = int(time.time())
HOUR = 3600
CASES = []


def add(name, verify, headers, body, expect, reason=None, method="POST", query=None, source="", status=None,
        reply=None):
    if isinstance(body, str):
        body = body.encode()
    CASES.append(
        {
            "name": name,
            "provider": verify["provider"],
            "verify": verify,
            "secrets": verify.get("secrets", []),
            "public_url": verify.get("public_url"),
            "method": method,
            "query": query,
            "headers": headers,
            "body_b64": base64.b64encode(body).decode(),
            "expect": expect,
            "reason": reason,
            "source": source,
            "status": status,
            "reply": reply,
        }
    )


def sdk_agrees(name, ok):
    if not ok:
        sys.stderr.write(f"the official SDK refuses its own accept case {name}\n")
        sys.exit(1)


def tampered(body):
    return body.replace("1", "2", 1) if "1" in body else body + " "


# ------------------------------------------------------------------------------------- Stripe
def stripe_cases():
    src = f"stripe {stripe.VERSION} WebhookSignature.generate_signature_header"
    secret, other = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_c29tZSBvdGhlciBzZWNyZXQ="
    verify = {"provider": "stripe", "secrets": [secret]}
    body = '{"id":"evt_1NG8Du2eZvKYlo2CUI79vXWy","object":"event","type":"charge.succeeded"}'
    WS = stripe.WebhookSignature

    def sig(t, s=secret, b=body):
        return {"Stripe-Signature": WS.generate_signature_header(b, s, timestamp=t)}

    h = sig(NOW)
    sdk_agrees("stripe/valid", WS.verify_header(body, h["Stripe-Signature"], secret, 300))
    add("stripe/valid", verify, h, body, "accept", source=src)
    add("stripe/tampered-body", verify, h, tampered(body), "refuse", "mismatch", source=src)
    add("stripe/other-secret", verify, sig(NOW, other), body, "refuse", "mismatch", source=src)
    add("stripe/stale", verify, sig(NOW - HOUR), body, "refuse", "expired", source=src)
    # stripe-python checks only the past: a future timestamp is accepted.
    add("stripe/future-accepted", verify, sig(NOW + HOUR), body, "accept", source=src)
    add("stripe/missing-header", verify, {}, body, "refuse", "missing", source=src)
    v1 = h["Stripe-Signature"].split("v1=")[1]
    add("stripe/only-v0", verify, {"Stripe-Signature": f"t={NOW},v0={v1}"}, body, "refuse",
        "unknown_version", source=src)
    add("stripe/two-v1-one-good", verify,
        {"Stripe-Signature": f"t={NOW},v1={'0' * 64},v1={v1}"}, body, "accept", source=src)
    add("stripe/rotated-secret", {"provider": "stripe", "secrets": [other, secret]}, h, body,
        "accept", source=src)


# ----------------------------------------------------------------- Standard Webhooks and Svix
def standard_webhooks_cases():
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    other = "whsec_" + base64.b64encode(b"another secret key").decode()
    body = '{"type":"user.created","data":{"id":1}}'
    for provider, lib, prefix in [
        ("standard-webhooks", standardwebhooks.Webhook, "webhook"),
        ("svix", svix.webhooks.Webhook, "svix"),
        ("clerk", svix.webhooks.Webhook, "svix"),
        ("resend", svix.webhooks.Webhook, "svix"),
    ]:
        src = f"{lib.__module__} Webhook.sign"
        verify = {"provider": provider, "secrets": [secret]}

        def hdrs(t, s=secret, b=body, msg_id="msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"):
            when = datetime.fromtimestamp(t, tz=timezone.utc)
            return {
                f"{prefix}-id": msg_id,
                f"{prefix}-timestamp": str(t),
                f"{prefix}-signature": lib(s).sign(msg_id, when, b),
            }

        h = hdrs(NOW)
        lib(secret).verify(body.encode(), dict(h))  # raises if the SDK disagrees
        add(f"{provider}/valid", verify, h, body, "accept", source=src)
        add(f"{provider}/tampered-body", verify, h, tampered(body), "refuse", "mismatch", source=src)
        add(f"{provider}/other-secret", verify, hdrs(NOW, other), body, "refuse", "mismatch", source=src)
        add(f"{provider}/stale", verify, hdrs(NOW - HOUR), body, "refuse", "expired", source=src)
        add(f"{provider}/future", verify, hdrs(NOW + HOUR), body, "refuse", "future", source=src)
        changed_id = dict(h)
        changed_id[f"{prefix}-id"] = "msg_other"
        add(f"{provider}/changed-id", verify, changed_id, body, "refuse", "mismatch", source=src)
        listed = dict(h)
        listed[f"{prefix}-signature"] = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= " + h[f"{prefix}-signature"]
        add(f"{provider}/signature-list-one-good", verify, listed, body, "accept", source=src)
        only_v1a = dict(h)
        only_v1a[f"{prefix}-signature"] = h[f"{prefix}-signature"].replace("v1,", "v1a,")
        add(f"{provider}/only-v1a", verify, only_v1a, body, "refuse", "unknown_version", source=src)


# -------------------------------------------------------------------------------------- Slack
def slack_cases():
    src = "slack_sdk SignatureVerifier.generate_signature"
    secret = "8f742231b10e8888abcd99yyyzzz85a5"
    verify = {"provider": "slack", "secrets": [secret]}
    body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&command=%2Fwebhook-collect&text=1"

    def hdrs(t, s=secret):
        sv = slack_sdk.signature.SignatureVerifier(s)
        return {"X-Slack-Request-Timestamp": str(t),
                "X-Slack-Signature": sv.generate_signature(timestamp=str(t), body=body)}

    h = hdrs(NOW)
    sdk_agrees("slack/valid", slack_sdk.signature.SignatureVerifier(secret).is_valid(
        body, h["X-Slack-Request-Timestamp"], h["X-Slack-Signature"]))
    add("slack/valid", verify, h, body, "accept", source=src)
    add("slack/tampered-body", verify, h, tampered(body), "refuse", "mismatch", source=src)
    add("slack/other-secret", verify, hdrs(NOW, "another-signing-secret"), body, "refuse", "mismatch", source=src)
    add("slack/stale", verify, hdrs(NOW - HOUR), body, "refuse", "expired", source=src)
    add("slack/future", verify, hdrs(NOW + HOUR), body, "refuse", "future", source=src)
    challenge = json.dumps({"token": "x", "challenge": "c-123", "type": "url_verification"})
    sv = slack_sdk.signature.SignatureVerifier(secret)
    add("slack/url-verification", verify,
        {"X-Slack-Request-Timestamp": str(NOW),
         "X-Slack-Signature": sv.generate_signature(timestamp=str(NOW), body=challenge),
         "Content-Type": "application/json"},
        challenge, "accept", source=src + " (handshake: gateway replies {\"challenge\":\"c-123\"})")


# ------------------------------------------------------------------------------------- Twilio
def twilio_cases():
    src = "twilio RequestValidator.compute_signature"
    token, other = "12345", "54321"
    public_url = "https://mycompany.com/myapp.php"
    verify = {"provider": "twilio", "secrets": [token], "public_url": public_url}
    params = {"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030", "Digits": "1234",
              "From": "+12349013030", "To": "+18005551212"}
    body = urlencode(params)
    url = public_url + "?foo=1&bar=2"
    rv = twilio.request_validator.RequestValidator(token)
    sig = rv.compute_signature(url, params)
    sdk_agrees("twilio/form-valid", rv.validate(url, params, sig))
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    add("twilio/form-valid", verify, {**form, "X-Twilio-Signature": sig}, body, "accept",
        query="foo=1&bar=2", source=src)
    add("twilio/form-tampered", verify, {**form, "X-Twilio-Signature": sig},
        body.replace("1234", "9999", 1), "refuse", "mismatch", query="foo=1&bar=2", source=src)
    add("twilio/form-other-token", verify,
        {**form, "X-Twilio-Signature": twilio.request_validator.RequestValidator(other).compute_signature(url, params)},
        body, "refuse", "mismatch", query="foo=1&bar=2", source=src)
    add("twilio/form-other-query", verify, {**form, "X-Twilio-Signature": sig}, body, "refuse",
        "mismatch", query="foo=1", source=src)
    jbody = '{"property":"value","boolean":true}'
    q = "bodySHA256=" + rv.compute_hash(jbody)
    jsig = rv.compute_signature(public_url + "?" + q, {})
    sdk_agrees("twilio/json-valid", rv.validate(public_url + "?" + q, jbody, jsig))
    js = {"Content-Type": "application/json"}
    add("twilio/json-valid", verify, {**js, "X-Twilio-Signature": jsig}, jbody, "accept", query=q,
        source=src + " + compute_hash (bodySHA256)")
    add("twilio/json-tampered", verify, {**js, "X-Twilio-Signature": jsig}, jbody.replace("true", "false"),
        "refuse", "mismatch", query=q, source=src)


# ------------------------------------------------------------------------------------- Paddle
def paddle_cases():
    src = "paddle-python-sdk PaddleSignature.calculate_hmac"
    secret = "pdl_ntfset_01gkpjp8bkm3tm53kdgkx6sms7_6h3qd3uFSi9YCD3OLYAShQI90XTI5vEI"
    # The SDK's window is 5 s each way; widened so the cases survive being fed to a gateway.
    verify = {"provider": "paddle", "secrets": [secret], "tolerance": "2m", "future_tolerance": "2m"}
    body = '{"event_id":"evt_01h8441jx8x1q971q9ksksqh82","event_type":"transaction.paid"}'

    def hdrs(t, s=secret, extra=""):
        h1 = PaddleSignature.calculate_hmac(s, f"{t}:{body}".encode()).hexdigest()
        return {"Paddle-Signature": f"ts={t};{extra}h1={h1}"}

    h = hdrs(NOW)
    ts, sigs = PaddleSignature.parse(h["Paddle-Signature"])
    sdk_agrees("paddle/valid", ts == NOW and len(sigs["h1"]) == 1)
    add("paddle/valid", verify, h, body, "accept", source=src)
    add("paddle/tampered-body", verify, h, tampered(body), "refuse", "mismatch", source=src)
    add("paddle/other-secret", verify, hdrs(NOW, "pdl_ntfset_other"), body, "refuse", "mismatch", source=src)
    add("paddle/stale", verify, hdrs(NOW - HOUR), body, "refuse", "expired", source=src)
    add("paddle/future", verify, hdrs(NOW + HOUR), body, "refuse", "future", source=src)
    add("paddle/two-h1-one-good", verify, hdrs(NOW, extra=f"h1={'0' * 64};"), body, "accept", source=src)


# ----------------------------------------------------------------------------------- SendGrid
def sendgrid_cases():
    src = "cryptography ECDSA P-256 signature, checked with sendgrid EventWebhook.verify_signature"
    key = ec.generate_private_key(ec.SECP256R1())
    pub = base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    verify = {"provider": "sendgrid", "public_key": pub}
    body = '[{"email":"example@test.com","event":"processed","sg_event_id":"rbtnWrG1DVDGGGFHFyun0A=="}]\r\n'

    def hdrs(t, k=key, b=body):
        sig = base64.b64encode(k.sign((str(t) + b).encode(), ec.ECDSA(hashes.SHA256()))).decode()
        return {"X-Twilio-Email-Event-Webhook-Signature": sig,
                "X-Twilio-Email-Event-Webhook-Timestamp": str(t)}

    h = hdrs(NOW)
    sdk_agrees("sendgrid/valid", EventWebhook(pub).verify_signature(
        body, h["X-Twilio-Email-Event-Webhook-Signature"], h["X-Twilio-Email-Event-Webhook-Timestamp"]))
    add("sendgrid/valid", verify, h, body, "accept", source=src)
    add("sendgrid/tampered-body", verify, h, tampered(body), "refuse", "mismatch", source=src)
    add("sendgrid/other-key", verify, hdrs(NOW, ec.generate_private_key(ec.SECP256R1())), body,
        "refuse", "mismatch", source=src)
    add("sendgrid/missing-timestamp", verify,
        {"X-Twilio-Email-Event-Webhook-Signature": h["X-Twilio-Email-Event-Webhook-Signature"]},
        body, "refuse", "missing", source=src)


# ------------------------------------------------------------------------------------ Discord
def discord_cases():
    src = f"PyNaCl Ed25519, checked with discord-interactions {version('discord-interactions')} verify_key"
    key = nacl.signing.SigningKey.generate()
    verify = {"provider": "discord", "public_key": key.verify_key.encode().hex(), "on_failure": 401}
    ping = '{"type":1,"id":"1","application_id":"2","token":"t","version":1}'

    def hdrs(t, k=key, b=ping):
        return {"X-Signature-Ed25519": k.sign((str(t) + b).encode()).signature.hex(),
                "X-Signature-Timestamp": str(t)}

    h = hdrs(NOW)
    key.verify_key.verify((str(NOW) + ping).encode(), bytes.fromhex(h["X-Signature-Ed25519"]))
    sdk_agrees("discord/ping (discord-interactions)", discord_interactions.verify_key(
        ping.encode(), h["X-Signature-Ed25519"], h["X-Signature-Timestamp"], verify["public_key"]))
    add("discord/ping", verify, h, ping, "accept", source=src + " (handshake: gateway replies {\"type\":1})")
    add("discord/tampered-body", verify, h, ping.replace('"1"', '"3"', 1), "refuse", "mismatch", source=src)
    add("discord/other-key", verify, hdrs(NOW, nacl.signing.SigningKey.generate()), ping, "refuse",
        "mismatch", source=src)
    add("discord/changed-timestamp", verify, {**h, "X-Signature-Timestamp": str(NOW + 1)}, ping,
        "refuse", "mismatch", source=src)


# ------------------------------------------------------------------------------------- GitHub
def github_cases():
    src = "GitHub docs example vector (no official Python SDK verifies webhooks)"
    verify = {"provider": "github", "secrets": ["It's a Secret to Everybody"]}
    sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    h = {"X-Hub-Signature-256": sig, "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}
    assert hmac.compare_digest(
        "sha256=" + hmac.new(b"It's a Secret to Everybody", b"Hello, World!", hashlib.sha256).hexdigest(), sig)
    add("github/docs-example", verify, h, "Hello, World!", "accept", source=src)
    add("github/tampered-body", verify, h, "Hello, World?", "refuse", "mismatch", source=src)
    add("github/missing-header", verify, {"X-GitHub-Delivery": "x"}, "Hello, World!", "refuse", "missing", source=src)


# ------------------------------------------------------------------------------------ HubSpot
def hubspot_cases():
    src = f"hubspot-api-client {version('hubspot-api-client')} Signature.get_signature v3"
    secret, other = "a1b2c3d4-e5f6-4711-8899-aabbccddeeff", "ffeeddcc-bbaa-4998-8117-6f5e4d3c2b1a"
    public_url = "https://hooks.example.com/hubspot/webhook"
    verify = {"provider": "hubspot", "secrets": [secret], "public_url": public_url}
    body = '[{"eventId":1,"subscriptionId":4711,"portalId":62515,"occurredAt":1700000000000,' \
           '"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123}]'
    json_ct = {"Content-Type": "application/json"}

    def hdrs(ts_ms, s=secret, b=body, uri=public_url, method="POST"):
        sig = HubSpotSignature.get_signature(s, b, "v3", uri, method, str(ts_ms))
        return {**json_ct, "X-HubSpot-Signature-v3": sig, "X-HubSpot-Request-Timestamp": str(ts_ms)}

    def sdk_judges(h, b=body, uri=public_url):
        """True/False from Signature.is_valid, or "timestamp" when it refuses the timestamp."""
        try:
            return HubSpotSignature.is_valid(
                h.get("X-HubSpot-Signature-v3"), secret, b, uri, "POST", "v3",
                h.get("X-HubSpot-Request-Timestamp"))
        except InvalidSignatureTimestampError:
            return "timestamp"

    now_ms = NOW * 1000 + 123
    h = hdrs(now_ms)
    sdk_agrees("hubspot/valid", sdk_judges(h) is True)
    add("hubspot/valid", verify, h, body, "accept", source=src)
    # The gateway appends the request's query string to public_url; HubSpot signs the full URI.
    q = "portalId=62515&appId=1234"
    hq = hdrs(now_ms, uri=f"{public_url}?{q}")
    sdk_agrees("hubspot/valid-with-query", sdk_judges(hq, uri=f"{public_url}?{q}") is True)
    add("hubspot/valid-with-query", verify, hq, body, "accept", query=q, source=src)
    add("hubspot/other-query", verify, hq, body, "refuse", "mismatch", query="portalId=62515&appId=9999",
        source=src)
    add("hubspot/tampered-body", verify, h, tampered(body), "refuse", "mismatch", source=src)
    add("hubspot/other-secret", verify, hdrs(now_ms, other), body, "refuse", "mismatch", source=src)
    add("hubspot/other-url", verify, hdrs(now_ms, uri="https://hooks.example.com/hubspot/other"), body,
        "refuse", "mismatch", source=src)
    stale = hdrs(now_ms - HOUR * 1000)
    sdk_agrees("hubspot/stale (SDK must refuse)", sdk_judges(stale) == "timestamp")
    add("hubspot/stale", verify, stale, body, "refuse", "expired", source=src)
    # Signature.is_valid only checks the past (now - ts < 300 s): a future timestamp passes.
    future = hdrs(now_ms + HOUR * 1000)
    sdk_agrees("hubspot/future-accepted", sdk_judges(future) is True)
    add("hubspot/future-accepted", verify, future, body, "accept", source=src)
    no_ts = {k: v for k, v in h.items() if k != "X-HubSpot-Request-Timestamp"}
    sdk_agrees("hubspot/missing-timestamp (SDK must refuse)", sdk_judges(no_ts) == "timestamp")
    add("hubspot/missing-timestamp", verify, no_ts, body, "refuse", "missing", source=src)
    add("hubspot/missing-signature", verify, {k: v for k, v in h.items() if k != "X-HubSpot-Signature-v3"},
        body, "refuse", "missing", source=src)
    # HubSpot's v3 docs: the URI is signed with %3A %2F %3F %40 %21 %24 %27 %28 %29 %2A %2C %3B
    # decoded (the SDK takes the URI as given, so the decoded one is handed to it).
    eq = "redirect=https%3A%2F%2Fapp.example.com%2Fdone%3Fx%3D1&tags=a%2Cb"
    decoded = f"{public_url}?redirect=https://app.example.com/done?x%3D1&tags=a,b"
    he = hdrs(now_ms, uri=decoded)
    sdk_agrees("hubspot/escaped-query", sdk_judges(he, uri=decoded) is True)
    add("hubspot/escaped-query", verify, he, body, "accept", query=eq,
        source=src + " over the URI decoded per HubSpot v3 docs")


# ------------------------------------------------------------------------------------- Square
def square_cases():
    src = f"stdlib HMAC-SHA256, checked with squareup {version('squareup')} webhooks_helper.verify_signature"
    key, other = "Wz9tdHmN3Y8bQkXcEa1LpQ", "another-square-signature-key"
    public_url = "https://hooks.example.com/square/webhook"
    verify = {"provider": "square", "secrets": [key], "public_url": public_url}
    body = '{"merchant_id":"6SSW7HV8K2ST5","type":"payment.created",' \
           '"event_id":"13b867cf-db3d-4b1c-90b6-2f32a9d78124","created_at":"2024-02-28T21:49:29.714Z",' \
           '"data":{"type":"payment","id":"KkAkhdMsgzn59SM8A89WgKwekxLZY","object":{"amount":1000}}}'

    def hdrs(url, k=key, b=body):
        mac = hmac.new(k.encode(), (url + b).encode(), hashlib.sha256).digest()
        return {"Content-Type": "application/json",
                "x-square-hmacsha256-signature": base64.b64encode(mac).decode()}

    def sdk_says(h, url, b=body):
        return square_verify_signature(request_body=b, signature_header=h["x-square-hmacsha256-signature"],
                                       signature_key=key, notification_url=url)

    h = hdrs(public_url)
    sdk_agrees("square/valid", sdk_says(h, public_url))
    add("square/valid", verify, h, body, "accept", source=src)
    sdk_agrees("square/tampered-body (SDK must refuse)", not sdk_says(h, public_url, tampered(body)))
    add("square/tampered-body", verify, h, tampered(body), "refuse", "mismatch", source=src)
    o = hdrs(public_url, other)
    sdk_agrees("square/other-key (SDK must refuse)", not sdk_says(o, public_url))
    add("square/other-key", verify, o, body, "refuse", "mismatch", source=src)
    wrong_url = hdrs("https://hooks.example.com/square/other")
    sdk_agrees("square/other-url (SDK must refuse)", not sdk_says(wrong_url, public_url))
    add("square/other-url", verify, wrong_url, body, "refuse", "mismatch", source=src)
    # A notification URL with a query string: the gateway appends the request's query.
    q = "tenant=acme&env=prod"
    hq = hdrs(f"{public_url}?{q}")
    sdk_agrees("square/valid-with-query", sdk_says(hq, f"{public_url}?{q}"))
    add("square/valid-with-query", verify, hq, body, "accept", query=q, source=src)
    add("square/other-query", verify, hq, body, "refuse", "mismatch", query="tenant=evil&env=prod", source=src)
    add("square/missing-header", verify, {"Content-Type": "application/json"}, body, "refuse", "missing",
        source=src)


# ------------------------------------------------------------------------------------ Mailgun
def mailgun_cases():
    src = f"stdlib HMAC-SHA256, checked with mailgun {version('mailgun')} SecurityGuard.verify_webhook"
    parent_key, sub_key = "key-parent-0123456789abcdef", "key-subaccount-fedcba9876543210"
    verify = {"provider": "mailgun", "secrets": [parent_key]}

    def signature(key, t, token):
        mac = hmac.new(key.encode(), f"{t}{token}".encode(), hashlib.sha256).hexdigest()
        return {"timestamp": str(t), "token": token, "signature": mac}

    def sdk_says(key, sig):
        return MailgunGuard.verify_webhook(key, sig["token"], sig["timestamp"], sig["signature"])

    def event(sig, parent=None):
        body = {"signature": sig, "event-data": {"event": "delivered", "id": "CPgfbmQMTCKtHW6uIWtuVe"}}
        if parent:
            body["parent-signature"] = parent
        return json.dumps(body, separators=(",", ":"))

    json_ct = {"Content-Type": "application/json"}
    sig = signature(parent_key, NOW, "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0")
    sdk_agrees("mailgun/valid", sdk_says(parent_key, sig))
    add("mailgun/valid", verify, json_ct, event(sig), "accept", source=src)
    bad = {**sig, "token": sig["token"][:-1] + "1"}
    sdk_agrees("mailgun/tampered-token (SDK must refuse)", not sdk_says(parent_key, bad))
    add("mailgun/tampered-token", verify, json_ct, event(bad), "refuse", "mismatch", source=src)
    stale = signature(parent_key, NOW - 1200, "stale-token-0001")
    sdk_agrees("mailgun/stale (SDK must refuse)", not sdk_says(parent_key, stale))
    add("mailgun/stale", verify, json_ct, event(stale), "refuse", "expired", source=src)
    future = signature(parent_key, NOW + 1200, "future-token-0001")
    sdk_agrees("mailgun/future (SDK must refuse)", not sdk_says(parent_key, future))
    add("mailgun/future", verify, json_ct, event(future), "refuse", "future", source=src)
    # A subaccount's event: its own signature is the subaccount's key, parent-signature the parent's.
    own, parent = signature(sub_key, NOW, "subaccount-token-01"), signature(parent_key, NOW, "subaccount-token-01")
    sdk_agrees("mailgun/parent-signature", sdk_says(parent_key, parent) and not sdk_says(parent_key, own))
    add("mailgun/parent-signature", verify, json_ct, event(own, parent), "accept", source=src)
    other = signature("key-someone-else", NOW, "other-token-0001")
    add("mailgun/other-key", verify, json_ct, event(other), "refuse", "mismatch", source=src)
    # Legacy form-encoded webhooks carry the same three fields at the top level.
    legacy = signature(parent_key, NOW, "legacy-form-token-01")
    sdk_agrees("mailgun/legacy-form", sdk_says(parent_key, legacy))
    add("mailgun/legacy-form", verify, {"Content-Type": "application/x-www-form-urlencoded"},
        urlencode({**legacy, "event": "delivered"}), "accept", source=src)


# ----------------------------------------------------------------------------- X (Twitter)
def twitter_cases():
    src = "twitter-autohook test/signature.js vector (X's own webhook library)"
    verify = {"provider": "twitter", "secrets": ["test"]}
    body = '{"test_number":1,"test_string":"two"}'
    sig = "sha256=YWHphPn/JFq43jkF0y4/w8R/SelmLjvpunhVFY8JhlI="
    assert hmac.compare_digest(
        "sha256=" + base64.b64encode(hmac.new(b"test", body.encode(), hashlib.sha256).digest()).decode(), sig)
    h = {"x-twitter-webhooks-signature": sig}
    add("twitter/autohook-vector", verify, h, body, "accept", source=src)
    add("twitter/autohook-vector-tampered", verify, h, body.replace("two", "too"), "refuse", "mismatch", source=src)
    # The vector's other fixture signs a form body. X only POSTs JSON events, and a body that is not
    # a JSON object could be a CRC token, whose HMAC the gateway hands out: refused (issue 13).
    form_sig = "sha256=25Cu3iwbbiqBTwQRzcKJZwisjf736V2Q8UaTlkfLSoc="
    add("twitter/autohook-form-vector-refused", verify, {"x-twitter-webhooks-signature": form_sig},
        "test=1&other_test=2", "refuse", "malformed", source=src + " (a non-JSON body is refused)")
    # CRC: the reply X's docs define, sha256=base64(HMAC-SHA256(consumer secret, crc_token)).
    token = "dWp4a2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3ODk"
    mac = base64.b64encode(hmac.new(b"test", token.encode(), hashlib.sha256).digest()).decode()
    add("twitter/crc", verify, {}, "", "accept", method="GET", query=f"crc_token={token}",
        source="X docs: CRC response_token", reply=json.dumps({"response_token": f"sha256={mac}"},
                                                            separators=(",", ":")))
    # A crc_token that is not of X's shape (here a JSON event) is never answered (no signing oracle).
    add("twitter/crc-json-token-refused", verify, {}, "", "refuse", "missing", method="GET",
        query=urlencode({"crc_token": body}), source="issue 13: the CRC must not sign bodies")


# -------------------------------------------------------------------------------- PagerDuty
def pagerduty_cases():
    src = "go-pagerduty webhookv3 TestVerifySignature vector (PagerDuty's Go library)"
    secret = "lDQHScfUeXUKaQRNF+8XIiDKZ7XX3itBAYzwU0TARw8lJqRnkKl2iB1anSb0Z+IK"
    body = (Path(__file__).resolve().parent / "vectors" / "pagerduty_body.json").read_text().rstrip("\n")
    good = "v1=0c0b9495b893a39e70d1fea2fe11fbe0a825f88b9f67846f6cc07dd2bc5476cd"
    bad = "v1=7020c8a7ec668a9b7012bc3dd82e483394b038f4230acc6785efbf2a7d8bcaf5"
    assert hmac.compare_digest("v1=" + hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest(), good)
    verify = {"provider": "pagerduty", "secrets": [secret]}
    add("pagerduty/go-vector", verify, {"X-PagerDuty-Signature": good}, body, "accept", source=src)
    add("pagerduty/go-vector-mismatch", verify, {"X-PagerDuty-Signature": bad}, body, "refuse", "mismatch",
        source=src)
    add("pagerduty/go-vector-two-secrets-one-good", verify, {"X-PagerDuty-Signature": f"{bad},{good}"}, body,
        "accept", source=src + " (one v1 per active secret)")
    add("pagerduty/go-vector-missing", verify, {}, body, "refuse", "missing", source=src)


# ------------------------------------------------------------------------- npm (node/cases.mjs)
def node_cases():
    """Runs node/cases.mjs and merges its cases. Fails loudly when Node.js or npm is missing."""
    here = Path(__file__).resolve().parent / "node"
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        sys.stderr.write(
            "sdk_cases.py: Node.js and npm are required for the npm oracles in tests/conformance/node "
            f"(node: {node or 'not found'}, npm: {npm or 'not found'}); install them "
            "(Debian: apt-get install nodejs npm)\n")
        sys.exit(1)
    installed = here / "node_modules" / ".package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < (here / "package-lock.json").stat().st_mtime:
        done = subprocess.run([npm, "ci", "--prefix", str(here), "--silent", "--no-audit", "--no-fund"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            sys.stderr.write(f"sdk_cases.py: npm ci in {here} failed ({done.returncode}):\n"
                             f"{done.stdout}{done.stderr}")
            sys.exit(1)
    ran = subprocess.run([node, str(here / "cases.mjs")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    if ran.returncode != 0:
        sys.stderr.write(f"sdk_cases.py: node cases.mjs failed ({ran.returncode}):\n{ran.stderr}")
        sys.exit(1)
    cases = json.loads(ran.stdout)
    assert cases and all(c.keys() == CASES[0].keys() for c in cases), "node cases must use the same format"
    CASES.extend(cases)


def main():
    for make in (stripe_cases, standard_webhooks_cases, slack_cases, twilio_cases, paddle_cases,
                 sendgrid_cases, discord_cases, github_cases, hubspot_cases, square_cases, mailgun_cases,
                 twitter_cases, pagerduty_cases, node_cases):
        make()
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names)), "case names must be unique"
    json.dump(CASES, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
