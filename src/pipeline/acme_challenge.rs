//! Stage 1, on plain listeners when an `acme:` block uses HTTP-01: the ACME server's
//! validation request `GET /.well-known/acme-challenge/<token>` is answered with the key
//! authorization (RFC 8555 section 8.3), before any route. The tokens live in [`Http01Tokens`],
//! which the listener's ACME task (`server::acme`) fills while an order waits for validation and
//! empties after.

use std::collections::HashMap;
use std::sync::Mutex;

use http::{Method, Request};

use super::reject::GatewayAnswer;

const PREFIX: &str = "/.well-known/acme-challenge/";

/// The HTTP-01 challenges of the orders in progress: token -> key authorization. Shared by
/// every ACME task (tokens are unique per challenge, so they never collide).
#[derive(Debug, Default)]
pub struct Http01Tokens {
    open: Mutex<HashMap<String, String>>,
}

impl Http01Tokens {
    /// Serves `key_authorization` for `token` until the returned guard is dropped.
    pub fn publish(&self, token: &str, key_authorization: &str) -> Published<'_> {
        if let Ok(mut open) = self.open.lock() {
            open.insert(token.to_string(), key_authorization.to_string());
        }
        Published {
            tokens: self,
            token: token.to_string(),
        }
    }

    fn get(&self, token: &str) -> Option<String> {
        self.open.lock().ok()?.get(token).cloned()
    }
}

/// A published token; removed when this is dropped, however the order ends.
pub struct Published<'t> {
    tokens: &'t Http01Tokens,
    token: String,
}

impl Drop for Published<'_> {
    fn drop(&mut self) {
        if let Ok(mut open) = self.tokens.open.lock() {
            open.remove(&self.token);
        }
    }
}

/// `Err` with the answer for a challenge request (the key authorization, or a 404 for a token
/// no order has open); `Ok` for every other request, which goes on to the routes.
pub fn answer<B>(tokens: &Http01Tokens, request: &Request<B>) -> Result<(), GatewayAnswer> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return Ok(());
    }
    let Some(token) = request.uri().path().strip_prefix(PREFIX) else {
        return Ok(());
    };
    Err(GatewayAnswer::AcmeChallenge {
        key_authorization: tokens.get(token),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Request<()> {
        Request::get(path).body(()).unwrap()
    }

    #[test]
    fn answers_open_tokens_only_and_forgets_them_when_the_guard_drops() {
        let tokens = Http01Tokens::default();
        let answered = |path: &str| match answer(&tokens, &get(path)) {
            Ok(()) => None,
            Err(GatewayAnswer::AcmeChallenge { key_authorization }) => Some(key_authorization),
            Err(other) => panic!("{other:?}"),
        };
        {
            let _open = tokens.publish("tok", "tok.thumb");
            assert_eq!(
                answered("/.well-known/acme-challenge/tok"),
                Some(Some("tok.thumb".to_string()))
            );
            assert_eq!(answered("/.well-known/acme-challenge/other"), Some(None));
            assert_eq!(answered("/hooks/github"), None);
            let post = Request::post("/.well-known/acme-challenge/tok")
                .body(())
                .unwrap();
            assert!(answer(&tokens, &post).is_ok(), "only GET and HEAD");
        }
        assert_eq!(answered("/.well-known/acme-challenge/tok"), Some(None));
    }
}
