#![no_main]
//! Fuzz target `inflate`: see `ringhub::fuzz_support::inflate` for what it drives and checks.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringhub::fuzz_support::inflate(data);
});
