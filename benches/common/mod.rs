//! Settings shared by every bench: short runs, sized for a 2-core shared machine.

use std::time::Duration;

use criterion::Criterion;

/// 30 samples, 1 s warm-up, 3 s measurement.
pub fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30)
}
