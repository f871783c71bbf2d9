//! Unknown keys in a TOML config file (proxy.toml, sidecar.toml), as people should read them: each at its
//! `FILE:LINE`, with the known key it is most likely a typo of, all of
//! them at once (serde stops at the first).

use std::path::Path;

/// Every key of the table at `table` (a dotted path; empty: the top) in
/// `text` that is not in `known`, as `FILE:LINE: ...` lines. Empty when the
/// text does not parse or holds no such key.
pub fn unknown(path: &Path, text: &str, table: &[String], known: &[&str]) -> Vec<String> {
    let Ok(doc) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let mut at = &doc;
    for t in table {
        match at.get(t).and_then(toml::Value::as_table) {
            Some(inner) => at = inner,
            None => return Vec::new(),
        }
    }
    let mut found: Vec<(Option<usize>, String)> = at
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| {
            let name = table
                .iter()
                .chain(std::iter::once(k))
                .cloned()
                .collect::<Vec<_>>()
                .join(".");
            let line = line_of(text, table, k);
            let place = match line {
                Some(n) => format!("{}:{n}", path.display()),
                None => path.display().to_string(),
            };
            let hint = match did_you_mean(k, known) {
                Some(m) => format!("did you mean `{m}`?"),
                None => "remove it (config-examples/ has every key, commented)".into(),
            };
            (line, format!("{place}: unknown key `{name}`; {hint}"))
        })
        .collect();
    // In the file's order (a table's keys may come sorted or as written).
    found.sort();
    found.into_iter().map(|(_, m)| m).collect()
}

/// The known word nearest to `word` by edit distance, if it is close
/// enough to be a typo (at most a third of its length, and 3).
pub fn did_you_mean<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).clamp(1, 3);
    known
        .iter()
        .map(|k| (distance(word, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The line where `key` of the table `table` is written: `key =` under a
/// `[table]` header, or `table.key =` anywhere.
fn line_of(text: &str, table: &[String], key: &str) -> Option<usize> {
    let header = format!("[{}]", table.join("."));
    let dotted = table
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(key))
        .collect::<Vec<_>>()
        .join(".");
    let mut current = String::from("[]");
    let assigns = |line: &str, k: &str| {
        [k.to_owned(), format!("\"{k}\"")].iter().any(|k| {
            line.strip_prefix(k.as_str())
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
    };
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('[') {
            current = line.split('#').next().unwrap_or("").replace(' ', "");
            continue;
        }
        let top = current == "[]";
        let here = (table.is_empty() && top) || current == header;
        if (here && assigns(line, key)) || (top && assigns(line, &dotted)) {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unknown_key_is_named_at_its_line_with_the_nearest_known_one() {
        let text = "listen = \"x\"\nlisen = \"y\"\n\n# c\nupstrem = 1\nzzzzzzzz = 2\n[limits]\nrate_per_minut = 3\n";
        let known = ["listen", "upstream", "limits"];
        let out = unknown(Path::new("p.toml"), text, &[], &known);
        assert_eq!(
            out,
            vec![
                "p.toml:2: unknown key `lisen`; did you mean `listen`?",
                "p.toml:5: unknown key `upstrem`; did you mean `upstream`?",
                "p.toml:6: unknown key `zzzzzzzz`; remove it (config-examples/ has every key, commented)",
            ]
        );
        let out = unknown(
            Path::new("p.toml"),
            text,
            &["limits".into()],
            &["rate_per_minute"],
        );
        assert_eq!(
            out,
            vec!["p.toml:8: unknown key `limits.rate_per_minut`; did you mean `rate_per_minute`?"]
        );
        let dotted = "limits.rate_burts = 1\n";
        let out = unknown(Path::new("p"), dotted, &["limits".into()], &["rate_burst"]);
        assert_eq!(
            out,
            vec!["p:1: unknown key `limits.rate_burts`; did you mean `rate_burst`?"]
        );
    }
}
