//! `ServerFrame::decode_bytes` on any bytes a server (or an attacker posing as one) can send
//! a client: never panics; an accepted frame encodes back to JSON that decodes to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wshub_protocol::ServerFrame;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = ServerFrame::decode_bytes(data) {
        let json = frame.to_json();
        let again = ServerFrame::decode(&json)
            .unwrap_or_else(|e| panic!("{json} does not decode again: {e:?}"));
        assert_eq!(again, frame, "{json}");
        let _ = frame.reply_id();
    }
});
