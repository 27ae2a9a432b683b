#![no_main]
//! Fuzz target `msgpack`: see `ringhub::fuzz_support::msgpack` for what it drives and checks.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringhub::fuzz_support::msgpack(data);
});
