//! The transport's incremental UTF-8 validator against the standard library, and the
//! close-frame payload parser.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = wshub::fuzzing::utf8_pieces(data);
    let _ = wshub::fuzzing::close_payload(data);
});
