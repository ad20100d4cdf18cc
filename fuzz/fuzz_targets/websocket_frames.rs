//! Bytes a WebSocket client sends after the upgrade, through the server transport's real
//! frame parser and message assembly, cut into reads at every size
//! (`wshub::fuzzing::client_bytes` checks the invariants).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = wshub::fuzzing::client_bytes(data);
});
