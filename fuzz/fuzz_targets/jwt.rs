#![no_main]
//! Fuzz target `jwt`: see `ringhub::fuzz_support::jwt` for what it drives and checks.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringhub::fuzz_support::jwt(data);
});
