#![no_main]
//! Fuzz target `store_codecs`: see `ringhub::fuzz_support::store_codecs` for what it drives and checks.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringhub::fuzz_support::store_codecs(data);
});
