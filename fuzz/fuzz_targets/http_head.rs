#![no_main]
//! Fuzz target `http_head`: see `ringhub::fuzz_support::http_head` for what it drives and checks.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringhub::fuzz_support::http_head(data);
});
