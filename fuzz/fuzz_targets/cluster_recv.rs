#![no_main]
//! Fuzz target `cluster_recv`: see `ringhub::fuzz_support::cluster_recv` for what it drives and checks.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringhub::fuzz_support::cluster_recv(data);
});
