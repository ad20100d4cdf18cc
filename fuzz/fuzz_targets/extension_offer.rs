//! `Sec-WebSocket-Extensions` offers through the server's permessage-deflate negotiation
//! (`wshub::fuzzing::extension_offer` checks what an accepted offer gives).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = wshub::fuzzing::extension_offer(data);
});
