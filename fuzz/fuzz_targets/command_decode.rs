//! `Command::decode` on any text a client can send: never panics; an accepted command
//! encodes back to JSON that decodes to the same command; an error becomes a frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wshub_protocol::Command;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Command::decode(text) {
        Ok(command) => {
            let json = command.to_json();
            let again = Command::decode(&json)
                .unwrap_or_else(|e| panic!("{json} does not decode again: {e:?}"));
            assert_eq!(again, command, "{text} -> {json}");
        }
        Err(error) => {
            let frame = error.to_frame();
            assert!(serde_json::from_slice::<serde_json::Value>(&frame).is_ok());
        }
    }
});
