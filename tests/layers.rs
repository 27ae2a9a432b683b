//! The layer order of `src/`, enforced: DESIGN.md ("Layers") names the order, this test reads
//! every source file and fails on a `crate::` path that points up the order, and on files of one
//! folder that use each other in a circle. Comments are skipped; test code is not (a test that
//! needs a higher layer lives in that layer).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Lowest first. A module may use the modules before it and itself, never one after it.
/// The adapters on top (`axum`, `bench_support`, `fuzz_support`) may use everything; the crate
/// root (`lib.rs`, `main.rs`) only re-exports and wires, and is not checked.
const ORDER: &[&str] = &[
    "proto",  // sans-IO protocol core: envelopes, frames, patterns, errors, the node wire format
    "store",  // history and inboxes behind the `Store` trait: memory, redb, Redis
    "policy", // the door: auth, origins, IP lists, rate limits, and their settings sections
    "config", // engine configuration and the settings file
    "shard",  // the sans-IO shard: connections, routing, delivery; the interfaces it needs
    "transport", // the io_uring and epoll shells around the shard
    "cluster", // the Redis broker (implements the shard's `Broker`)
    "http",   // the HTTP API, metrics, pages
    "runtime", // threads that wire everything: shards, pool, API thread, store thread
    "axum",
    "bench_support",
    "fuzz_support",
];
const ADAPTERS: usize = 9;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).expect("read src") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The text without comments (line and block), strings kept: a path in a doc comment or in
/// prose is not a dependency.
fn strip_comments(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut in_str = false;
    while i < b.len() {
        if in_str {
            if b[i] == b'\\' && i + 1 < b.len() {
                out.push_str(&text[i..i + 2]);
                i += 2;
                continue;
            }
            if b[i] == b'"' {
                in_str = false;
            }
            out.push(b[i] as char);
            i += 1;
        } else if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            while i < b.len() && !b[i..].starts_with(b"*/") {
                if b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 2;
        } else {
            // Not a char literal like '"' (a string start would swallow the file).
            if b[i] == b'\'' && i + 2 < b.len() && b[i + 2] == b'\'' {
                out.push_str(&text[i..i + 3]);
                i += 3;
                continue;
            }
            if b[i] == b'"' {
                in_str = true;
            }
            let ch = text[i..].chars().next().expect("char");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// `(line, first path segment after prefix, second segment)` of every `prefix` path, the
/// top-level names inside a `prefix{a, b::c}` group included.
fn paths<'a>(text: &'a str, prefix: &str) -> Vec<(usize, &'a str, &'a str)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(k) = text[from..].find(prefix) {
        let at = from + k;
        from = at + prefix.len();
        // `foo_crate::x` or `self::crate` are not ours.
        if at > 0 {
            let prev = text.as_bytes()[at - 1];
            if prev.is_ascii_alphanumeric() || prev == b'_' {
                continue;
            }
        }
        let line = text[..at].matches('\n').count() + 1;
        let rest = &text[from..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut start = true;
            let mut i = 0;
            let g = group.as_bytes();
            while i < g.len() && depth > 0 {
                match g[i] {
                    b'{' => depth += 1,
                    b'}' => depth -= 1,
                    b',' if depth == 1 => start = true,
                    c if depth == 1 && start && (c.is_ascii_alphanumeric() || c == b'_') => {
                        let name = ident_at(&group[i..]);
                        let after = &group[i + name.len()..];
                        let second = after.strip_prefix("::").map(ident_at).unwrap_or("");
                        out.push((line, name, second));
                        start = false;
                        i += name.len();
                        continue;
                    }
                    _ => {}
                }
                i += 1;
            }
        } else {
            let name = ident_at(rest);
            let second = rest[name.len()..]
                .strip_prefix("::")
                .map(ident_at)
                .unwrap_or("");
            out.push((line, name, second));
        }
    }
    out
}

struct Source {
    rel: Vec<String>,
    text: String,
}

fn sources() -> Vec<Source> {
    let root = src();
    let mut all = Vec::new();
    files(&root, &mut all);
    all.sort();
    all.into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(&root)
                .expect("under src")
                .iter()
                .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
                .collect();
            let text = strip_comments(&fs::read_to_string(&p).expect("read source"));
            Source { rel, text }
        })
        .collect()
}

#[test]
fn modules_use_only_the_layers_below_them() {
    let rank = |m: &str| ORDER.iter().position(|o| *o == m);
    let mut bad = Vec::new();
    let mut seen = 0;
    for s in sources() {
        let module = s.rel[0].as_str();
        if matches!(module, "lib" | "main") {
            continue;
        }
        let Some(mine) = rank(module) else {
            bad.push(format!(
                "src/{}: module `{module}` is not in the layer order (tests/layers.rs, DESIGN.md)",
                s.rel.join("/")
            ));
            continue;
        };
        for (line, target, _) in paths(&s.text, "crate::") {
            seen += 1;
            let Some(theirs) = rank(target) else { continue }; // a crate-root item (ConnId, ...)
            if theirs > mine && mine < ADAPTERS {
                bad.push(format!(
                    "src/{}.rs:{line}: `{module}` uses `{target}`, a layer above it",
                    s.rel.join("/")
                ));
            }
        }
    }
    assert!(
        seen > 100,
        "the scan found only {seen} crate:: paths: is it reading src/?"
    );
    assert!(
        bad.is_empty(),
        "imports against the layer order:\n{}",
        bad.join("\n")
    );
}

/// Files of one folder (`src/http/*.rs`, ...) must not use each other in a circle: within a
/// layer, too, one file builds on the others.
#[test]
fn files_of_a_folder_do_not_go_round_in_a_circle() {
    // Edges between sibling files: `folder/a.rs` -> `folder/b.rs` when `a` names `super::b` or
    // `crate::<path to folder>::b`. `mod.rs` is the folder itself and is left out.
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let srcs = sources();
    for s in &srcs {
        if s.rel.len() < 2 {
            continue;
        }
        let folder = &s.rel[..s.rel.len() - 1];
        let me = s.rel.last().expect("file").as_str();
        if me == "mod" {
            continue;
        }
        let siblings: BTreeSet<&str> = srcs
            .iter()
            .filter(|o| o.rel.len() == s.rel.len() && o.rel[..o.rel.len() - 1] == *folder)
            .map(|o| o.rel.last().expect("file").as_str())
            .filter(|n| *n != "mod" && *n != me)
            .collect();
        let key = |f: &str| format!("{}/{f}", folder.join("/"));
        let mut add = |to: &str| {
            if siblings.contains(to) {
                graph.entry(key(me)).or_default().insert(key(to));
            }
        };
        for (_, first, _) in paths(&s.text, "super::") {
            add(first);
        }
        let prefix = format!("crate::{}::", folder.join("::"));
        for (_, first, _) in paths(&s.text, &prefix) {
            add(first);
        }
    }
    // Depth-first search for a back edge.
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(n) {
            Some(1) => {
                let from = path.iter().position(|p| p == n).expect("on path");
                let mut c = path[from..].to_vec();
                c.push(n.to_string());
                return Some(c);
            }
            Some(_) => return None,
            None => {}
        }
        state.insert(n.to_string(), 1);
        path.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, g, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut circles = BTreeSet::new();
    for n in graph.keys() {
        if let Some(c) = visit(n, &graph, &mut BTreeMap::new(), &mut Vec::new()) {
            circles.insert(c.join(" -> "));
        }
    }
    assert!(
        circles.is_empty(),
        "files that use each other in a circle:\n{}",
        circles.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn the_scanner_sees_grouped_and_plain_paths_but_not_comments() {
    let text = strip_comments(
        "use crate::{shard::x, proto::{a, b}};\n// crate::http::no\nlet s = \"//\"; crate::store::Y;\n/* crate::runtime */",
    );
    let found: Vec<&str> = paths(&text, "crate::").into_iter().map(|p| p.1).collect();
    assert_eq!(found, ["shard", "proto", "store"]);
}
