#![no_main]
//! Fuzz target `envelope`: see `ringhub::fuzz_support::envelope` for what it drives and checks.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringhub::fuzz_support::envelope(data);
});
