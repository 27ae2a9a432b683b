#![no_main]
//! Fuzz target `frames`: see `ringhub::fuzz_support::frames` for what it drives and checks.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ringhub::fuzz_support::frames(data);
});
