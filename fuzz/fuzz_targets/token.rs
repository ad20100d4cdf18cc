//! Tokens as a client presents them: the `Authorization` header and `token` parameter
//! pick-up, HS256 verification against a fixed secret (a forged token must never pass), and
//! the claims path after verification, reached here without the secret by decoding the
//! claims JSON directly and asking what it permits.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wshub_protocol::Claims;
use wshub_server::token::{TokenVerifier, credentials, may_publish, may_subscribe};

fn verifier() -> &'static TokenVerifier {
    static VERIFIER: OnceLock<TokenVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| TokenVerifier::new(b"fuzz secret that no input knows"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (header, rest) = text.split_once('\n').unwrap_or((text, ""));
    let (query, room) = rest.split_once('\n').unwrap_or((rest, "room"));
    if let Ok(token) = credentials(Some(header).filter(|h| !h.is_empty()), Some(query)) {
        assert!(verifier().verify(token).is_err(), "a forged token passed: {token:?}");
    }
    assert!(verifier().verify(text).is_err());
    if let Ok(claims) = serde_json::from_str::<Claims>(query) {
        let subscribe = may_subscribe(Some(&claims), room);
        let publish = may_publish(Some(&claims), room);
        assert_eq!(subscribe, claims.may_subscribe(room));
        if claims.publish.is_none() {
            assert_eq!(publish, subscribe);
        }
        let _ = claims.expires_at();
    }
});
