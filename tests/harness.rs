//! The test harness itself: one test per shell, and io_uring missing on CI is a failure.

mod common;

use common::*;

#[test]
#[should_panic(expected = "io_uring is unavailable on CI")]
fn uring_missing_fails_on_ci() {
    uring_missing_on(true, "probe refused");
}

#[test]
fn uring_missing_skips_off_ci() {
    uring_missing_on(false, "probe refused");
}

#[test]
fn epoll_is_always_available() {
    assert!(shell_available(ringhub::IoMode::Epoll));
}

fn records_shell(io: ringhub::IoMode) {
    assert!(matches!(
        io,
        ringhub::IoMode::Uring | ringhub::IoMode::Epoll
    ));
    if io == ringhub::IoMode::Uring {
        // Reaching here means the probe succeeded: the server must then start on io_uring too.
        let h =
            start(builder(io).pubsub()).expect("io_uring probed fine but the server refused it");
        h.shutdown();
        h.join();
    }
}
per_shell!(fn records_shell);
