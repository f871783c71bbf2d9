//! The binaries' top-level modules depend on each other in one direction
//! only, in the order written down here (and in each crate's docs): a
//! module may name (`crate::X`, or `ztssh_proxy::X` from the binary) only
//! modules in a layer below its own. A new top-level module must be given
//! a layer; an import against the order fails with the file and the path.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// ztssh-proxy, lowest layer first (the order in `proxy/src/lib.rs`).
const PROXY: &[&[&str]] = &[
    &["trust"],
    &["ops"],
    &["admission"],
    &["config"],
    &["state"],
    &["revocation", "sshd"],
    &["session"],
    &["server"],
];

/// ztssh-sidecar, lowest layer first.
const SIDECAR: &[&[&str]] = &[
    &["platform"],
    &["explain", "settings", "revocation"],
    &["agent", "discover", "lastkey", "link", "setup"],
    &["identity", "usercert", "token"],
    &["pump"],
    &["connect"],
];

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
}

/// Every `.rs` file under `dir` (bounded: the tree is small).
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for p in entries {
        assert!(out.len() < 1000, "more than 1000 source files");
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to: `admission.rs` and
/// `admission/limits.rs` both to `admission`; `platform/mod.rs` to
/// `platform`. `None` for the crate roots (`lib.rs`, `main.rs`).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    match first.strip_suffix(".rs") {
        Some("lib" | "main") => None,
        Some(stem) => Some(stem.to_owned()),
        None => Some(first),
    }
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The top-level modules `text` names through any of `roots` (`crate::X`,
/// `crate::{X, Y::Z}`), comments left out.
fn named_modules(text: &str, roots: &[&str]) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = BTreeSet::new();
    for root in roots {
        let needle = format!("{root}::");
        let mut from = 0;
        while let Some(at) = code.get(from..).and_then(|s| s.find(&needle)) {
            let start = from + at;
            from = start + needle.len();
            let before = code.get(..start).and_then(|s| s.chars().last());
            if before.is_some_and(|c| is_ident(c) || c == '$') {
                continue;
            }
            let rest = code.get(from..).unwrap_or_default();
            if let Some(group) = rest.strip_prefix('{') {
                // `crate::{a, b::c, d::{e, f}}`: the first word of each
                // item at the group's own depth.
                let (mut depth, mut item_start) = (0usize, true);
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => item_start = true,
                        c if item_start && is_ident(c) => {
                            let word: String = group
                                .get(i..)
                                .unwrap_or_default()
                                .chars()
                                .take_while(|&c| is_ident(c))
                                .collect();
                            out.insert(word);
                            item_start = false;
                        }
                        _ => {}
                    }
                }
            } else {
                let word: String = rest.chars().take_while(|&c| is_ident(c)).collect();
                out.insert(word);
            }
        }
    }
    out.remove("self");
    out
}

/// Checks one crate: every top-level module has a layer, and every module
/// it names from another is in a lower one.
fn check(crate_dir: &str, roots: &[&str], layers: &[&[&str]]) {
    let src = repo(crate_dir).join("src");
    let layer_of = |m: &str| layers.iter().position(|l| l.contains(&m));
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(!files.is_empty(), "no sources under {}", src.display());
    let mut bad = Vec::new();
    for file in &files {
        let Some(module) = top_module(&src, file) else {
            continue;
        };
        let shown = format!(
            "{crate_dir}/src/{}",
            file.strip_prefix(&src).expect("under src").display()
        );
        let Some(own) = layer_of(&module) else {
            bad.push(format!(
                "{shown}: module {module} has no layer in tests/tests/layout.rs"
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read");
        for named in named_modules(&text, roots) {
            if named == module {
                continue;
            }
            match layer_of(&named) {
                Some(l) if l < own => {}
                Some(_) => bad.push(format!(
                    "{shown}: {module} names {named}, which is not below it"
                )),
                None => bad.push(format!(
                    "{shown}: {module} names {named}, which has no layer"
                )),
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn proxy_modules_depend_downwards_only() {
    check("proxy", &["crate", "ztssh_proxy"], PROXY);
}

#[test]
fn sidecar_modules_depend_downwards_only() {
    check("sidecar-client", &["crate", "ztssh_sidecar"], SIDECAR);
}

#[test]
fn the_reader_finds_every_form_of_path() {
    let text = "use crate::a::B;\nuse crate::{b, c::{D, E}, self};\nlet x = crate::d::f();\n\
                // crate::commented\nlet y = $crate::macro_path; notcrate::x;\n\
                use ztssh_proxy::e;";
    let got = named_modules(text, &["crate", "ztssh_proxy"]);
    let want: BTreeSet<String> = ["a", "b", "c", "d", "e"].map(String::from).into();
    assert_eq!(got, want);
}
