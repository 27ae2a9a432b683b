#![no_main]
//! Fuzz target `v2_requests`: see `ringhub::fuzz_support::v2_requests` for what it drives and checks.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringhub::fuzz_support::v2_requests(data);
});
