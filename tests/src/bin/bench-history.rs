//! `bench-history`: compares a bench run with the figures recorded in
//! `docs/BENCHMARKS.md`, or records a run's figures there.
//!
//! ```text
//! cargo bench -p ztssh-tests --bench kill | tee run.txt
//! cargo run --release -p ztssh-tests --bin bench-history -- compare run.txt
//! cargo run --release -p ztssh-tests --bin bench-history -- record run.txt
//! ```
//!
//! `compare` prints every figure of the run beside its record and exits 1
//! when one reads more than 15 % worse (`--report` prints the same and
//! exits 0, for a run on a machine whose figures are not comparable).
//! `record` writes the run's figures into the table with today's date and
//! the commit (`--commit`, default `git rev-parse --short HEAD`).

use std::path::PathBuf;
use std::process::ExitCode;

use ztssh_tests::bench::{self, Recorded, Verdict};

const USAGE: &str = "usage: bench-history compare [--report] [--doc FILE] RUN...\n       bench-history record [--doc FILE] [--commit SHA] [--date YYYY-MM-DD] RUN...";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bench-history: {e}");
            ExitCode::from(64)
        }
    }
}

fn run() -> Result<ExitCode, String> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().ok_or(USAGE)?;
    let mut doc = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/BENCHMARKS.md"
    ));
    let (mut report, mut commit, mut date, mut runs) = (false, None, None, Vec::new());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--report" => report = true,
            "--doc" => doc = args.next().ok_or(USAGE)?.into(),
            "--commit" => commit = Some(args.next().ok_or(USAGE)?),
            "--date" => date = Some(args.next().ok_or(USAGE)?),
            s if s.starts_with("--") => return Err(format!("unknown flag {s}\n{USAGE}")),
            _ => runs.push(PathBuf::from(a)),
        }
    }
    if runs.is_empty() {
        return Err(format!("name at least one run's output\n{USAGE}"));
    }
    let text =
        std::fs::read_to_string(&doc).map_err(|e| format!("cannot read {}: {e}", doc.display()))?;
    let record = bench::parse_record(&text).map_err(|e| format!("{}: {e}", doc.display()))?;
    let mut figures = Vec::new();
    for r in &runs {
        let t = std::fs::read_to_string(r)
            .map_err(|e| format!("cannot read the run {}: {e}", r.display()))?;
        let f = bench::parse_run(&t).map_err(|e| format!("{}: {e}", r.display()))?;
        if f.is_empty() {
            return Err(format!(
                "{} has no BENCH lines: pass the output of `cargo bench` itself",
                r.display()
            ));
        }
        figures.extend(f);
    }
    match mode.as_str() {
        "compare" => Ok(compare(&figures, &record, report)),
        "record" => {
            let commit = match commit {
                Some(c) => c,
                None => git_head()?,
            };
            let date = match date {
                Some(d) => d,
                None => today()?,
            };
            let mut record = record;
            for f in figures {
                record.insert(
                    f.key.clone(),
                    Recorded {
                        figure: f,
                        date: date.clone(),
                        commit: commit.clone(),
                    },
                );
            }
            let new = bench::replace_record(&text, &record)
                .map_err(|e| format!("{}: {e}", doc.display()))?;
            std::fs::write(&doc, new)
                .map_err(|e| format!("cannot write {}: {e}", doc.display()))?;
            println!("recorded in {} at {commit}", doc.display());
            Ok(ExitCode::SUCCESS)
        }
        other => Err(format!("unknown command {other}\n{USAGE}")),
    }
}

fn compare(
    figures: &[bench::Figure],
    record: &std::collections::BTreeMap<String, Recorded>,
    report: bool,
) -> ExitCode {
    let mut worse = 0;
    println!("| figure | this run | recorded | change | |");
    println!("|---|---|---|---|---|");
    for f in figures {
        let rec = record
            .get(&f.key)
            .map(|r| {
                format!(
                    "{} {} ({}, {})",
                    r.figure.value, r.figure.unit, r.date, r.commit
                )
            })
            .unwrap_or_else(|| "—".into());
        let (change, flag) = match bench::judge(f, record) {
            Verdict::New => ("—".to_string(), "not recorded yet"),
            Verdict::OtherUnit => ("—".to_string(), "recorded in another unit"),
            Verdict::Fine(g) => (format!("{:+.1} %", g * 100.0), ""),
            Verdict::Worse(g) => {
                worse += 1;
                (format!("{:+.1} %", g * 100.0), "WORSE by more than 15 %")
            }
        };
        println!(
            "| {} | {} {} | {rec} | {change} | {flag} |",
            f.key, f.value, f.unit
        );
    }
    if worse == 0 {
        println!("no figure reads more than 15 % worse than its record");
        return ExitCode::SUCCESS;
    }
    println!(
        "{worse} figure(s) read more than 15 % worse than the record: rerun them side by side with the recorded build (ZTSSH_BIN_<NAME>) before believing it"
    );
    if report {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn git_head() -> Result<String, String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map_err(|e| format!("git: {e}; pass --commit"))?;
    if !out.status.success() {
        return Err("git rev-parse failed; pass --commit".into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn today() -> Result<String, String> {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map_err(|e| format!("date: {e}; pass --date"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
