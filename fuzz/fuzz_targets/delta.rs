#![no_main]
//! Fuzz target `delta`: see `ringhub::fuzz_support::delta` for what it drives and checks.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringhub::fuzz_support::delta(data);
});
