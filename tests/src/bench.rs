//! Bench history: every bench prints one machine-readable line per figure,
//! `docs/BENCHMARKS.md` keeps the last recorded value of each, and
//! `bench-history compare` flags a run's figure that reads more than
//! [`WORSE_BY`] worse than the record.
//!
//! A figure line is
//! `BENCH <key> <value> <unit> <lower|higher>`, for example
//! `BENCH kill/sessions=1000/p99 33.4 ms lower`: the key names the bench,
//! the parameters that make two runs comparable, and the figure; the last
//! word says which way is better. Figures of runs with other parameters
//! (a short run, another session count) have other keys and are never
//! compared with each other.
//!
//! The record is the table under the heading [`RECORD_HEADING`] in
//! `docs/BENCHMARKS.md`: `| key | value | unit | better | date | commit |`.

use std::collections::BTreeMap;
use std::fmt;

/// How much worse than the record a figure may read before it is flagged.
pub const WORSE_BY: f64 = 0.15;

/// The heading of the record's table in `docs/BENCHMARKS.md`.
pub const RECORD_HEADING: &str = "## Last recorded figures";

/// Which way a figure is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    /// Less is better (latency, CPU, memory).
    Lower,
    /// More is better (throughput, a ratio to direct).
    Higher,
}

impl Better {
    fn word(self) -> &'static str {
        match self {
            Better::Lower => "lower",
            Better::Higher => "higher",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "lower" => Some(Better::Lower),
            "higher" => Some(Better::Higher),
            _ => None,
        }
    }
}

/// One figure of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    /// `bench/parameters/figure`, with no spaces.
    pub key: String,
    /// The value, in `unit`.
    pub value: f64,
    /// The unit (`ms`, `µs`, `KiB`, `s`, `MiB/s`, `ratio`, …).
    pub unit: String,
    /// Which way is better.
    pub better: Better,
}

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "BENCH {} {} {} {}",
            self.key,
            trim(self.value),
            self.unit,
            self.better.word()
        )
    }
}

/// Prints one figure's machine-readable line (benches call this once per
/// figure, beside their human-readable table).
pub fn figure(key: &str, value: f64, unit: &str, better: Better) {
    let f = Figure {
        key: key.replace(' ', "_"),
        value,
        unit: unit.into(),
        better,
    };
    println!("{f}");
}

/// A value with no more digits than the figures carry.
fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// The figures in a run's output (every `BENCH` line; other lines are
/// skipped). A malformed `BENCH` line is an error naming its line number.
pub fn parse_run(text: &str) -> Result<Vec<Figure>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let Some(rest) = line.trim().strip_prefix("BENCH ") else {
            continue;
        };
        let w: Vec<&str> = rest.split_whitespace().collect();
        let bad = || {
            format!(
                "line {}: not `BENCH key value unit lower|higher`: {line}",
                n + 1
            )
        };
        let [key, value, unit, better] = w.as_slice() else {
            return Err(bad());
        };
        out.push(Figure {
            key: (*key).into(),
            value: value.parse().map_err(|_| bad())?,
            unit: (*unit).into(),
            better: Better::parse(better).ok_or_else(bad)?,
        });
    }
    Ok(out)
}

/// One recorded figure: the figure and when it was recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    /// The figure.
    pub figure: Figure,
    /// `YYYY-MM-DD`.
    pub date: String,
    /// The commit it was measured at.
    pub commit: String,
}

/// The record table of `docs/BENCHMARKS.md`, keyed by figure.
pub fn parse_record(doc: &str) -> Result<BTreeMap<String, Recorded>, String> {
    let mut out = BTreeMap::new();
    let Some(start) = doc.find(RECORD_HEADING) else {
        return Err(format!("no `{RECORD_HEADING}` heading"));
    };
    let section = &doc[start + RECORD_HEADING.len()..];
    let section = section.split("\n## ").next().unwrap_or_default();
    for line in section.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let [key, value, unit, better, date, commit] = cells.as_slice() else {
            return Err(format!("a record row needs six cells: {line}"));
        };
        // The header and the separator row.
        if *key == "key" || key.starts_with("---") {
            continue;
        }
        let key = key.trim_matches('`');
        let figure = Figure {
            key: key.into(),
            value: value
                .parse()
                .map_err(|_| format!("not a number in the record: {line}"))?,
            unit: (*unit).into(),
            better: Better::parse(better)
                .ok_or_else(|| format!("`better` is lower or higher: {line}"))?,
        };
        out.insert(
            key.into(),
            Recorded {
                figure,
                date: (*date).into(),
                commit: (*commit).into(),
            },
        );
    }
    Ok(out)
}

/// The record table as Markdown, rows in key order.
pub fn render_record(rec: &BTreeMap<String, Recorded>) -> String {
    let mut s = String::from(
        "| key | value | unit | better | date | commit |\n|---|---|---|---|---|---|\n",
    );
    for r in rec.values() {
        let f = &r.figure;
        s.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} |\n",
            f.key,
            trim(f.value),
            f.unit,
            f.better.word(),
            r.date,
            r.commit
        ));
    }
    s
}

/// `doc` with its record table replaced by `rec`.
pub fn replace_record(doc: &str, rec: &BTreeMap<String, Recorded>) -> Result<String, String> {
    let start = doc
        .find(RECORD_HEADING)
        .ok_or_else(|| format!("no `{RECORD_HEADING}` heading"))?;
    let body = start + RECORD_HEADING.len();
    let rest = &doc[body..];
    let table_start = rest.find("\n| ").map(|i| i + 1);
    let Some(ts) = table_start else {
        return Err("the record heading has no table under it".into());
    };
    let after_table = rest[ts..]
        .find("\n\n")
        .map(|i| ts + i + 1)
        .unwrap_or(rest.len());
    Ok(format!(
        "{}{}{}{}",
        &doc[..body],
        &rest[..ts],
        render_record(rec),
        &rest[after_table..]
    ))
}

/// How a run's figure reads against the record.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// No recorded figure with this key.
    New,
    /// Recorded in another unit: not comparable.
    OtherUnit,
    /// Within [`WORSE_BY`] of the record, or better; the change as a fraction
    /// (positive: better).
    Fine(f64),
    /// More than [`WORSE_BY`] worse; the change as a fraction (negative).
    Worse(f64),
}

/// Compares one figure with the record.
pub fn judge(f: &Figure, rec: &BTreeMap<String, Recorded>) -> Verdict {
    let Some(r) = rec.get(&f.key) else {
        return Verdict::New;
    };
    if r.figure.unit != f.unit || r.figure.better != f.better {
        return Verdict::OtherUnit;
    }
    let old = r.figure.value;
    if old == 0.0 {
        return if f.value <= 0.0 || f.better == Better::Higher {
            Verdict::Fine(0.0)
        } else {
            Verdict::Worse(-1.0)
        };
    }
    let gain = match f.better {
        Better::Lower => (old - f.value) / old,
        Better::Higher => (f.value - old) / old,
    };
    if gain < -WORSE_BY {
        Verdict::Worse(gain)
    } else {
        Verdict::Fine(gain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "# B\n\n## Last recorded figures\n\nintro\n\n| key | value | unit | better | date | commit |\n|---|---|---|---|---|---|\n| `kill/sessions=1000/p99` | 33.4 | ms | lower | 2026-12-07 | c609b74 |\n| `e2e/mib=256/ratio` | 0.78 | ratio | higher | 2026-12-07 | c609b74 |\n\nafter\n\n## Next\n";

    #[test]
    fn a_run_line_round_trips() {
        let f = Figure {
            key: "kill/sessions=1000/p99".into(),
            value: 33.4,
            unit: "ms".into(),
            better: Better::Lower,
        };
        assert_eq!(f.to_string(), "BENCH kill/sessions=1000/p99 33.4 ms lower");
        let parsed = parse_run(&format!("noise\n{f}\n| table |\n")).unwrap();
        assert_eq!(parsed, vec![f]);
    }

    #[test]
    fn a_malformed_line_is_named() {
        let e = parse_run("a\nBENCH x 1 ms sideways\n").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
        assert!(parse_run("BENCH x one ms lower").is_err());
    }

    #[test]
    fn the_record_parses_and_judges_both_directions() {
        let rec = parse_record(DOC).unwrap();
        assert_eq!(rec.len(), 2);
        let p99 = |v| Figure {
            key: "kill/sessions=1000/p99".into(),
            value: v,
            unit: "ms".into(),
            better: Better::Lower,
        };
        assert!(matches!(judge(&p99(36.0), &rec), Verdict::Fine(_)));
        assert!(matches!(judge(&p99(40.0), &rec), Verdict::Worse(_)));
        assert!(matches!(judge(&p99(20.0), &rec), Verdict::Fine(g) if g > 0.0));
        let ratio = |v| Figure {
            key: "e2e/mib=256/ratio".into(),
            value: v,
            unit: "ratio".into(),
            better: Better::Higher,
        };
        assert!(matches!(judge(&ratio(0.60), &rec), Verdict::Worse(_)));
        assert!(matches!(judge(&ratio(0.70), &rec), Verdict::Fine(_)));
        let mut other = p99(1.0);
        other.unit = "s".into();
        assert_eq!(judge(&other, &rec), Verdict::OtherUnit);
        other.key = "kill/sessions=9800/p99".into();
        assert_eq!(judge(&other, &rec), Verdict::New);
    }

    #[test]
    fn recording_replaces_only_the_table() {
        let mut rec = parse_record(DOC).unwrap();
        rec.insert(
            "proof/proofs=20000/per_proof".into(),
            Recorded {
                figure: Figure {
                    key: "proof/proofs=20000/per_proof".into(),
                    value: 55.0,
                    unit: "µs".into(),
                    better: Better::Lower,
                },
                date: "2026-12-08".into(),
                commit: "abc1234".into(),
            },
        );
        let doc = replace_record(DOC, &rec).unwrap();
        assert!(doc.contains("intro\n\n| key |"), "{doc}");
        assert!(doc.contains("\n\nafter\n\n## Next\n"), "{doc}");
        assert_eq!(parse_record(&doc).unwrap(), rec);
    }
}
