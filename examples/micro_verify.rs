//! Micro-benchmark: what verifying a 2 KiB body costs next to a bare HMAC-SHA256 of the same
//! bytes, in the same run (issue 3's budget: at most 1.3x). GitHub (hex, no timestamp) and
//! Stripe (structured header, timestamp, `{timestamp}.{body}`). Medians over rounds.
//! Run: cargo run --release --example micro_verify
use std::hint::black_box;
use std::time::{Instant, SystemTime};

use hookgate::verify::{RawVerify, Secret, SignedRequest, Verifier};
use http::{HeaderMap, HeaderName};

fn headers(pairs: Vec<(String, String)>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            value.parse().expect("value"),
        );
    }
    map
}

fn verifier(provider: &str, secret: &str) -> Verifier {
    let raw = RawVerify {
        provider: provider.into(),
        secrets: vec![Secret::new(secret)],
        ..Default::default()
    };
    Verifier::from_raw(&raw).expect("preset")
}

fn ns_per_op(n: u32, mut op: impl FnMut()) -> f64 {
    let started = Instant::now();
    for _ in 0..n {
        op();
    }
    started.elapsed().as_nanos() as f64 / f64::from(n)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let body = vec![b'x'; 2048];
    let now = SystemTime::now();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"secret");
    let tag = ring::hmac::sign(&key, &body);
    let github = verifier("github", "secret");
    let github_headers = headers(github.sign(&body, now, None).expect("sign"));
    let stripe = verifier("stripe", "whsec_secret");
    let stripe_headers = headers(stripe.sign(&body, now, None).expect("sign"));
    let request = |h| SignedRequest {
        method: "POST",
        public_url: None,
        query: None,
        headers: h,
        body: body.as_slice().into(),
    };
    let (gh_req, st_req) = (request(&github_headers), request(&stripe_headers));
    assert!(github.verify(&gh_req, now).is_ok() && stripe.verify(&st_req, now).is_ok());

    let n = 100_000;
    let (mut bare, mut gh, mut st) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..7 {
        bare.push(ns_per_op(n, || {
            black_box(ring::hmac::verify(&key, black_box(&body), tag.as_ref()).is_ok());
        }));
        gh.push(ns_per_op(n, || {
            black_box(github.verify(black_box(&gh_req), now).is_ok());
        }));
        st.push(ns_per_op(n, || {
            black_box(stripe.verify(black_box(&st_req), now).is_ok());
        }));
    }
    let ratios = |v: &[f64]| v.iter().zip(&bare).map(|(x, b)| x / b).collect::<Vec<_>>();
    let (gh_r, st_r) = (ratios(&gh), ratios(&st));
    let span = |v: &[f64]| {
        (
            v.iter().copied().fold(f64::MAX, f64::min),
            v.iter().copied().fold(0.0, f64::max),
        )
    };
    println!("2 KiB body, 7 rounds of {n}; median (min..max)");
    println!("bare HMAC-SHA256 verify : {:7.0} ns", median(bare.clone()));
    let (lo, hi) = span(&gh_r);
    println!(
        "github preset           : {:7.0} ns  ratio {:.2} ({lo:.2}..{hi:.2})",
        median(gh.clone()),
        median(gh_r.clone())
    );
    let (lo, hi) = span(&st_r);
    println!(
        "stripe preset           : {:7.0} ns  ratio {:.2} ({lo:.2}..{hi:.2})",
        median(st.clone()),
        median(st_r.clone())
    );
}
