#![no_main]
//! Fuzz target `socketio`: see `ringhub::fuzz_support::socketio` for what it drives and checks.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringhub::fuzz_support::socketio(data);
});
