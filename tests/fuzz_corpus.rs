//! Replays every file of the committed fuzz corpora (`fuzz/corpus/<target>/`) through the same
//! entry points the fuzz targets call, so a finding fixed once stays fixed under `cargo test`.

use std::path::Path;

use ringhub::fuzz_support::TARGETS;

#[test]
fn every_corpus_file_replays_without_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut total = 0;
    for (name, run) in TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "corpus {name} is empty");
        for f in &files {
            let data = std::fs::read(f).expect("read corpus file");
            let r = std::panic::catch_unwind(|| run(&data));
            assert!(r.is_ok(), "{name}: {} panicked", f.display());
        }
        total += files.len();
    }
    assert!(total >= 5 * 5, "only {total} corpus files");
}
