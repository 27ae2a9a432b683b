#![no_main]
//! Fuzz target `settings`: see `ringhub::fuzz_support::settings` for what it drives and checks.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringhub::fuzz_support::settings(data);
});
