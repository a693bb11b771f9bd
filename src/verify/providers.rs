//! The provider presets, as data: for each provider id its header, signed bytes, encoding,
//! timestamp rule and default tolerance, delivery-id source and handshake, in one table. This is
//! the one place that knows each provider's scheme; it holds no secrets and runs no crypto. A
//! provider that does not fit the declarative scheme points at its own module (twilio, mailgun,
//! discord, sendgrid) instead of growing special cases here.
//!
//! Sources each row was checked against are listed in the row's comment ("SDK" = the provider's
//! official PyPI package, read and run on this machine; "docs" = the provider's documentation).

use super::config::SecretEncoding;
use super::encoding::Encoding;
use super::handshake::Handshake;
use super::hmac_spec::Algorithm;
use super::template::UrlMode;
use super::timestamp::TsFormat;

/// Where the timestamp of a preset comes from.
#[derive(Debug, Clone, Copy)]
pub enum TsAt {
    Header(&'static str),
    /// The timestamp entry of the structured signature header.
    Structured,
    /// A top-level numeric field of the JSON body.
    BodyJson(&'static str),
}

/// A preset's timestamp rule. Tolerances in seconds; `None` = that side is unchecked.
#[derive(Debug, Clone, Copy)]
pub struct TsPreset {
    pub at: TsAt,
    pub format: TsFormat,
    pub past: Option<u64>,
    pub future: Option<u64>,
}

/// Structured signature header: entry separator, key/value separator, signature key, timestamp key.
#[derive(Debug, Clone, Copy)]
pub struct Structured {
    pub separator: &'static str,
    pub key_sep: &'static str,
    pub sig_key: &'static str,
    pub ts_key: Option<&'static str>,
}

/// An HMAC preset.
#[derive(Debug, Clone, Copy)]
pub struct HmacPreset {
    pub algorithm: Algorithm,
    pub header: &'static str,
    /// The same header under another name, read when `header` is absent.
    pub header_alias: Option<&'static str>,
    /// The delivery-id header under another name, read when `id_header` is absent.
    pub id_alias: Option<&'static str>,
    /// Prefix of a plain signature (`sha256=`); unused when `structured` is set.
    pub prefix: &'static str,
    pub structured: Option<Structured>,
    pub encoding: Encoding,
    pub signed: &'static str,
    pub timestamp: Option<TsPreset>,
    pub id_header: Option<&'static str>,
    pub secret_encoding: SecretEncoding,
    pub url_mode: UrlMode,
}

/// What kind of verifier a preset compiles to.
// The presets are a static table read once per config load; no Shape is moved on a request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    Hmac(HmacPreset),
    /// GitLab's secret token or signing token (see gitlab.rs).
    Gitlab,
    BasicAuth,
    Twilio,
    Mailgun,
    Discord,
    Sendgrid,
}

/// One provider.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    pub id: &'static str,
    pub shape: Shape,
    pub handshake: Handshake,
    /// Path of the delivery id in a JSON body, when the provider sends no id header.
    pub id_json: Option<&'static [&'static str]>,
}

const fn plain(
    algorithm: Algorithm,
    header: &'static str,
    prefix: &'static str,
    encoding: Encoding,
    id_header: Option<&'static str>,
) -> HmacPreset {
    HmacPreset {
        algorithm,
        header,
        header_alias: None,
        id_alias: None,
        prefix,
        structured: None,
        encoding,
        signed: "{body}",
        timestamp: None,
        id_header,
        secret_encoding: SecretEncoding::Utf8,
        url_mode: UrlMode::Raw,
    }
}

const fn preset(id: &'static str, shape: Shape) -> Preset {
    Preset {
        id,
        shape,
        handshake: Handshake::None,
        id_json: None,
    }
}

const fn svix_like(id_h: &'static str, ts_h: &'static str, sig_h: &'static str) -> HmacPreset {
    HmacPreset {
        algorithm: Algorithm::Sha256,
        header: sig_h,
        header_alias: None,
        id_alias: None,
        prefix: "",
        structured: Some(Structured {
            separator: " ",
            key_sep: ",",
            sig_key: "v1",
            ts_key: None,
        }),
        encoding: Encoding::Base64,
        signed: "{id}.{timestamp}.{body}",
        timestamp: Some(TsPreset {
            at: TsAt::Header(ts_h),
            format: TsFormat::Seconds,
            past: Some(300),
            future: Some(300),
        }),
        id_header: Some(id_h),
        secret_encoding: SecretEncoding::Base64,
        url_mode: UrlMode::Raw,
    }
}

/// How GitLab's signing tokens sign: the Standard Webhooks scheme and headers.
pub const GITLAB_SIGNING: HmacPreset =
    svix_like("webhook-id", "webhook-timestamp", "webhook-signature");

/// GitLab's delivery id, whichever way the delivery authenticates.
pub const GITLAB_ID_HEADER: &str = "x-gitlab-event-uuid";

use Algorithm::{Sha1, Sha256};
use Encoding::{Base64, Hex};

/// Every provider id, with its scheme.
pub const PRESETS: &[Preset] = &[
    // GitHub. X-Hub-Signature-256: sha256=hex(HMAC-SHA256(secret, body)). No timestamp.
    // Checked: docs example ("It's a Secret to Everybody", test below).
    preset(
        "github",
        Shape::Hmac(plain(
            Sha256,
            "x-hub-signature-256",
            "sha256=",
            Hex,
            Some("x-github-delivery"),
        )),
    ),
    // GitLab. X-Gitlab-Token carries the secret token itself; a signing token (`whsec_...`)
    // signs as Standard Webhooks does (GITLAB_SIGNING). See gitlab.rs.
    preset("gitlab", Shape::Gitlab),
    // Shopify. X-Shopify-Hmac-Sha256: base64(HMAC-SHA256(secret, body)); newer deliveries send
    // the same headers without `X-` (shopify-hmac-sha256, shopify-webhook-id), which
    // @shopify/shopify-api also accepts. Checked: SDK (npm @shopify/shopify-api webhooks.validate).
    preset(
        "shopify",
        Shape::Hmac(HmacPreset {
            header_alias: Some("shopify-hmac-sha256"),
            id_alias: Some("shopify-webhook-id"),
            ..plain(
                Sha256,
                "x-shopify-hmac-sha256",
                "",
                Base64,
                Some("x-shopify-webhook-id"),
            )
        }),
    ),
    // Slack. X-Slack-Signature: v0=hex(HMAC-SHA256(secret, "v0:" ts ":" body)),
    // X-Slack-Request-Timestamp seconds, 5 minutes both ways (slack_sdk SignatureVerifier:
    // abs(now - ts) > 300). Checked: SDK + docs example vector.
    Preset {
        id: "slack",
        shape: Shape::Hmac(HmacPreset {
            algorithm: Sha256,
            header: "x-slack-signature",
            header_alias: None,
            id_alias: None,
            prefix: "v0=",
            structured: None,
            encoding: Hex,
            signed: "v0:{timestamp}:{body}",
            timestamp: Some(TsPreset {
                at: TsAt::Header("x-slack-request-timestamp"),
                format: TsFormat::Seconds,
                past: Some(300),
                future: Some(300),
            }),
            id_header: None,
            secret_encoding: SecretEncoding::Utf8,
            url_mode: UrlMode::Raw,
        }),
        handshake: Handshake::Slack,
        id_json: Some(&["event_id"]),
    },
    // Stripe. Stripe-Signature: t=<ts>,v1=<hex>[,v1=..][,v0=..]; HMAC-SHA256 keyed with the
    // whole `whsec_...` string as UTF-8 over "ts.body"; only the past is checked, 300 s
    // (stripe-python WebhookSignature.verify_header). Checked: SDK.
    Preset {
        id: "stripe",
        shape: Shape::Hmac(HmacPreset {
            algorithm: Sha256,
            header: "stripe-signature",
            header_alias: None,
            id_alias: None,
            prefix: "",
            structured: Some(Structured {
                separator: ",",
                key_sep: "=",
                sig_key: "v1",
                ts_key: Some("t"),
            }),
            encoding: Hex,
            signed: "{timestamp}.{body}",
            timestamp: Some(TsPreset {
                at: TsAt::Structured,
                format: TsFormat::Seconds,
                past: Some(300),
                future: None,
            }),
            id_header: None,
            secret_encoding: SecretEncoding::Utf8,
            url_mode: UrlMode::Raw,
        }),
        handshake: Handshake::None,
        id_json: Some(&["id"]),
    },
    // Standard Webhooks. webhook-id / webhook-timestamp / webhook-signature ("v1,<b64>" entries
    // separated by spaces); key = base64 after `whsec_`; "id.ts.body"; 5 minutes both ways.
    // Checked: SDK (standardwebhooks) + the libraries' shared test vector.
    preset(
        "standard-webhooks",
        Shape::Hmac(svix_like(
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
        )),
    ),
    // Svix and the providers that deliver through it (Clerk, Resend): same scheme, svix-* headers.
    // Checked: SDK (svix).
    preset(
        "svix",
        Shape::Hmac(svix_like("svix-id", "svix-timestamp", "svix-signature")),
    ),
    preset(
        "clerk",
        Shape::Hmac(svix_like("svix-id", "svix-timestamp", "svix-signature")),
    ),
    preset(
        "resend",
        Shape::Hmac(svix_like("svix-id", "svix-timestamp", "svix-signature")),
    ),
    // Zoom. x-zm-signature: v0=hex(HMAC-SHA256(secret token, "v0:" ts ":" body)),
    // x-zm-request-timestamp seconds. endpoint.url_validation answered with the HMAC of
    // plainToken. Tolerance 5 minutes both ways (our choice; Zoom publishes none).
    Preset {
        id: "zoom",
        shape: Shape::Hmac(HmacPreset {
            algorithm: Sha256,
            header: "x-zm-signature",
            header_alias: None,
            id_alias: None,
            prefix: "v0=",
            structured: None,
            encoding: Hex,
            signed: "v0:{timestamp}:{body}",
            timestamp: Some(TsPreset {
                at: TsAt::Header("x-zm-request-timestamp"),
                format: TsFormat::Seconds,
                past: Some(300),
                future: Some(300),
            }),
            id_header: None,
            secret_encoding: SecretEncoding::Utf8,
            url_mode: UrlMode::Raw,
        }),
        handshake: Handshake::Zoom,
        id_json: None,
    },
    // Paddle Billing. Paddle-Signature: ts=<ts>;h1=<hex>[;h1=..]; HMAC-SHA256 over "ts:body".
    // paddle-python-sdk 1.16 Verifier: maximum_variance 5 s, checked in BOTH directions.
    // Checked: SDK.
    Preset {
        id: "paddle",
        shape: Shape::Hmac(HmacPreset {
            algorithm: Sha256,
            header: "paddle-signature",
            header_alias: None,
            id_alias: None,
            prefix: "",
            structured: Some(Structured {
                separator: ";",
                key_sep: "=",
                sig_key: "h1",
                ts_key: Some("ts"),
            }),
            encoding: Hex,
            signed: "{timestamp}:{body}",
            timestamp: Some(TsPreset {
                at: TsAt::Structured,
                format: TsFormat::Seconds,
                past: Some(5),
                future: Some(5),
            }),
            id_header: None,
            secret_encoding: SecretEncoding::Utf8,
            url_mode: UrlMode::Raw,
        }),
        handshake: Handshake::None,
        id_json: Some(&["event_id"]),
    },
    // Linear. Linear-Signature: hex(HMAC-SHA256(secret, body)); the body's webhookTimestamp
    // (ms) must be within a minute. Linear-Delivery is the delivery id.
    preset(
        "linear",
        Shape::Hmac(HmacPreset {
            timestamp: Some(TsPreset {
                at: TsAt::BodyJson("webhookTimestamp"),
                format: TsFormat::Milliseconds,
                past: Some(60),
                future: Some(60),
            }),
            ..plain(Sha256, "linear-signature", "", Hex, Some("linear-delivery"))
        }),
    ),
    // Intercom. X-Hub-Signature: sha1=hex(HMAC-SHA1(client secret, body)). Intercom checks a
    // webhook URL with an unsigned HEAD, answered 200 by the gateway.
    Preset {
        id: "intercom",
        shape: Shape::Hmac(plain(Sha1, "x-hub-signature", "sha1=", Hex, None)),
        handshake: Handshake::Intercom,
        id_json: None,
    },
    // Square. x-square-hmacsha256-signature: base64(HMAC-SHA256(key, notification URL + body)).
    Preset {
        id: "square",
        shape: Shape::Hmac(HmacPreset {
            signed: "{url}{body}",
            ..plain(Sha256, "x-square-hmacsha256-signature", "", Base64, None)
        }),
        handshake: Handshake::None,
        id_json: Some(&["event_id"]),
    },
    // Twitch EventSub. Twitch-Eventsub-Message-Signature: sha256=hex(HMAC-SHA256(secret,
    // message id + timestamp + body)); timestamp RFC 3339, refused when older than 10 minutes.
    // webhook_callback_verification answered with the challenge.
    Preset {
        id: "twitch",
        shape: Shape::Hmac(HmacPreset {
            signed: "{id}{timestamp}{body}",
            timestamp: Some(TsPreset {
                at: TsAt::Header("twitch-eventsub-message-timestamp"),
                format: TsFormat::Rfc3339,
                past: Some(600),
                future: None,
            }),
            ..plain(
                Sha256,
                "twitch-eventsub-message-signature",
                "sha256=",
                Hex,
                Some("twitch-eventsub-message-id"),
            )
        }),
        handshake: Handshake::Twitch,
        id_json: None,
    },
    // HubSpot v3. X-HubSpot-Signature-v3: base64(HMAC-SHA256(client secret,
    // method + uri + body + timestamp)); X-HubSpot-Request-Timestamp in ms, refused when older
    // than 5 minutes; some escapes in the URI are decoded first. Checked: docs.
    preset(
        "hubspot",
        Shape::Hmac(HmacPreset {
            signed: "{method}{url}{body}{timestamp}",
            timestamp: Some(TsPreset {
                at: TsAt::Header("x-hubspot-request-timestamp"),
                format: TsFormat::Milliseconds,
                past: Some(300),
                future: None,
            }),
            url_mode: UrlMode::HubspotDecoded,
            ..plain(Sha256, "x-hubspot-signature-v3", "", Base64, None)
        }),
    ),
    // Typeform. Typeform-Signature: sha256=base64(HMAC-SHA256(secret, body)).
    preset(
        "typeform",
        Shape::Hmac(plain(Sha256, "typeform-signature", "sha256=", Base64, None)),
    ),
    // Calendly. Calendly-Webhook-Signature: t=<ts>,v1=<hex>; "ts.body"; 3 minutes (their
    // example's tolerance), past only.
    preset(
        "calendly",
        Shape::Hmac(HmacPreset {
            structured: Some(Structured {
                separator: ",",
                key_sep: "=",
                sig_key: "v1",
                ts_key: Some("t"),
            }),
            signed: "{timestamp}.{body}",
            timestamp: Some(TsPreset {
                at: TsAt::Structured,
                format: TsFormat::Seconds,
                past: Some(180),
                future: None,
            }),
            ..plain(Sha256, "calendly-webhook-signature", "", Hex, None)
        }),
    ),
    // PagerDuty v3. X-PagerDuty-Signature: v1=<hex>[,v1=<hex>] (one per active secret).
    preset(
        "pagerduty",
        Shape::Hmac(HmacPreset {
            structured: Some(Structured {
                separator: ",",
                key_sep: "=",
                sig_key: "v1",
                ts_key: None,
            }),
            ..plain(
                Sha256,
                "x-pagerduty-signature",
                "",
                Hex,
                Some("x-webhook-id"),
            )
        }),
    ),
    // Dropbox. X-Dropbox-Signature: hex(HMAC-SHA256(app secret, body)); GET ?challenge= echoed.
    Preset {
        id: "dropbox",
        shape: Shape::Hmac(plain(Sha256, "x-dropbox-signature", "", Hex, None)),
        handshake: Handshake::Dropbox,
        id_json: None,
    },
    // Jira (Cloud webhooks with a secret). X-Hub-Signature: sha256=<hex>.
    preset(
        "jira",
        Shape::Hmac(plain(
            Sha256,
            "x-hub-signature",
            "sha256=",
            Hex,
            Some("x-atlassian-webhook-identifier"),
        )),
    ),
    // Bitbucket Cloud. X-Hub-Signature: sha256=<hex>; X-Request-UUID per delivery.
    preset(
        "bitbucket",
        Shape::Hmac(plain(
            Sha256,
            "x-hub-signature",
            "sha256=",
            Hex,
            Some("x-request-uuid"),
        )),
    ),
    // Vercel. x-vercel-signature: hex(HMAC-SHA1(secret, body)).
    Preset {
        id: "vercel",
        shape: Shape::Hmac(plain(Sha1, "x-vercel-signature", "", Hex, None)),
        handshake: Handshake::None,
        id_json: Some(&["id"]),
    },
    // WooCommerce. X-WC-Webhook-Signature: base64(HMAC-SHA256(secret, body)). When a webhook
    // is set active, WooCommerce POSTs an unsigned `webhook_id=N` and wants 200 (handshake.rs).
    Preset {
        id: "woocommerce",
        shape: Shape::Hmac(plain(
            Sha256,
            "x-wc-webhook-signature",
            "",
            Base64,
            Some("x-wc-webhook-delivery-id"),
        )),
        handshake: Handshake::Woocommerce,
        id_json: None,
    },
    // X / Twitter Account Activity. x-twitter-webhooks-signature: sha256=base64(HMAC-SHA256(
    // consumer secret, body)); GET ?crc_token= answered with the HMAC of the token.
    Preset {
        id: "twitter",
        shape: Shape::Hmac(plain(
            Sha256,
            "x-twitter-webhooks-signature",
            "sha256=",
            Base64,
            None,
        )),
        handshake: Handshake::Twitter,
        id_json: None,
    },
    // Postmark. HTTP basic auth in the webhook URL; secrets are `user:password`.
    preset("postmark", Shape::BasicAuth),
    // Mailgun. signature.{timestamp,token,signature} in the body: hex(HMAC-SHA256(signing key,
    // timestamp + token)); 15 minutes both ways, as the mailgun SDK's verify_webhook. The token
    // is the delivery id (Mailgun's advice against replays). See mailgun.rs.
    Preset {
        id: "mailgun",
        shape: Shape::Mailgun,
        handshake: Handshake::None,
        id_json: Some(&["signature", "token"]),
    },
    // Twilio. X-Twilio-Signature: base64(HMAC-SHA1(auth token, URL + sorted form params)), or
    // bodySHA256 in the URL for JSON. See twilio.rs. Checked: SDK + docs example vector.
    preset("twilio", Shape::Twilio),
    // SendGrid Event Webhook. ECDSA P-256 / SHA-256, DER signature in base64, over
    // timestamp header + body. See sendgrid.rs. Checked: SDK (sendgrid EventWebhook).
    preset("sendgrid", Shape::Sendgrid),
    // Discord interactions. Ed25519 over X-Signature-Timestamp + body, hex. See discord.rs.
    Preset {
        id: "discord",
        shape: Shape::Discord,
        handshake: Handshake::Discord,
        id_json: Some(&["id"]),
    },
];

/// The preset for a provider id.
pub fn find(id: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.id == id)
}

/// Every preset id plus the generic ones, for error messages.
pub fn known_ids() -> String {
    let mut ids: Vec<&str> = PRESETS.iter().map(|p| p.id).collect();
    ids.extend(["hmac", "token", "basic-auth"]);
    ids.join(", ")
}
