//! Monitoring that works: the alert rules pass `promtool check rules` and
//! their unit tests (`config-examples/prometheus-alerts.test.yml`), and a
//! real Prometheus (Debian's `prometheus`, private config, storage and
//! loopback port) that scraped a real proxy answers every dashboard query
//! with series and finds the series every alert expression names.
//! `/readyz` says ready, then names each failing check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use ztssh_tests::listserver::{ListServer, Serve};
use ztssh_tests::*;

const T: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// A tool from Debian's `prometheus` package; the suite's setup installs it.
fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is missing: run tests/setup-deps.sh as root (it installs Debian's prometheus)");
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = repo().join("config-examples");
    let promtool = tool("promtool");
    let out = run_bounded(
        Command::new(&promtool)
            .args(["check", "rules", "prometheus-alerts.yml"])
            .current_dir(&dir),
        T,
    );
    assert_ok(&out, "promtool check rules");
    let out = run_bounded(
        Command::new(&promtool)
            .args(["test", "rules", "prometheus-alerts.test.yml"])
            .current_dir(&dir),
        T,
    );
    assert_ok(&out, "promtool test rules");
    // Every alert has a test case that fires it and one where it stays quiet.
    let rules = std::fs::read_to_string(dir.join("prometheus-alerts.yml")).expect("rules");
    let tests = std::fs::read_to_string(dir.join("prometheus-alerts.test.yml")).expect("tests");
    let cases = alert_cases(&tests);
    for line in rules.lines() {
        let Some(name) = line.trim().strip_prefix("- alert: ") else {
            continue;
        };
        let name = name.trim();
        assert!(
            cases.contains(&(name.to_owned(), true)),
            "no case in which {name} fires"
        );
        assert!(
            cases.contains(&(name.to_owned(), false)),
            "no case in which {name} stays quiet"
        );
    }
}

/// (alert name, whether the case expects it to fire) for each
/// `alertname:` in a promtool test file.
fn alert_cases(tests: &str) -> BTreeSet<(String, bool)> {
    let lines: Vec<&str> = tests.lines().collect();
    let mut out = BTreeSet::new();
    for (i, l) in lines.iter().enumerate() {
        let Some(name) = l.trim().strip_prefix("alertname: ") else {
            continue;
        };
        let exp = lines
            .get(i + 1)
            .map(|n| n.trim())
            .expect("exp_alerts after alertname");
        assert!(exp.starts_with("exp_alerts:"), "{exp}");
        out.insert((name.trim().to_owned(), exp != "exp_alerts: []"));
    }
    out
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A private Prometheus; dropping it kills it (by its PID) and removes
/// its storage.
struct Prometheus {
    port: u16,
    dir: tempfile::TempDir,
    _child: Guard,
}

impl Prometheus {
    /// Scrapes the proxy at `target` (job `ztssh`) and node_exporter at
    /// `node` (job `node`), evaluating `rules`.
    fn start(target: u16, node: u16, rules: &Path) -> Self {
        let dir = tempfile::tempdir().expect("prometheus dir");
        let port = free_port();
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: ztssh\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n\
                 \x20 - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:{node}']\n",
                rules.display()
            ),
        )
        .expect("prometheus.yml");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Self {
            port,
            dir,
            _child: Guard(child),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET path` on the HTTP API, the body parsed; `None` while it does
    /// not answer.
    fn api(&self, path: &str) -> Option<Value> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(
            s,
            // HTTP/1.0: the body comes whole, never chunked.
            "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n"
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let (_, body) = out.split_once("\r\n\r\n")?;
        serde_json::from_str(body).ok()
    }

    /// An instant query's result; panics on a query Prometheus refuses.
    fn query(&self, q: &str) -> Vec<Value> {
        let v = self
            .api(&format!("/api/v1/query?query={}", encode(q)))
            .unwrap_or_else(|| panic!("no answer to {q}\n{}", self.log()));
        assert_eq!(v["status"], "success", "query {q}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

/// A private node_exporter (Debian's prometheus-node-exporter) with only
/// its textfile collector, reading `dir`: where the nftables guard's
/// series come from (sshd-guard-check writes them there).
struct NodeExporter {
    port: u16,
    _child: Guard,
}

impl NodeExporter {
    fn start(dir: &Path) -> Self {
        let port = free_port();
        let child = Command::new(tool("prometheus-node-exporter"))
            .arg("--collector.disable-defaults")
            .arg("--collector.textfile")
            .arg(format!("--collector.textfile.directory={}", dir.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus-node-exporter");
        let child = Guard(child);
        wait_until(T, "node_exporter to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Self {
            port,
            _child: child,
        }
    }
}

/// The metric names (and the label names each is matched on) in a PromQL
/// expression: `ztssh_*` and `up`, each with its `{...}` matchers.
fn selectors(expr: &str) -> Vec<(String, Vec<String>)> {
    let b = expr.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !word(b[i]) || (i > 0 && word(b[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && word(b[i]) {
            i += 1;
        }
        let name = &expr[start..i];
        if !(name.starts_with("ztssh_") || name == "up") {
            continue;
        }
        let mut labels = Vec::new();
        if b.get(i) == Some(&b'{') {
            let end = expr[i..].find('}').map(|e| i + e).expect("closing brace");
            for m in expr[i + 1..end].split(',') {
                let l: String = m
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !l.is_empty() {
                    labels.push(l);
                }
            }
            i = end;
        }
        out.push((name.to_owned(), labels));
    }
    out
}

#[test]
fn prometheus_finds_series_for_every_dashboard_query_and_alert_expression() {
    let www_dir = tempfile::tempdir().expect("www");
    let www = www_dir.path().join("crl.pem");
    let lists = ListServer::start(Serve::File(www.clone()));
    let metrics = free_port();
    let served = www.clone();
    let w = World::builder()
        .proxy_toml(&format!(
            "metrics_listen = \"127.0.0.1:{metrics}\"\nrevocation_url = \"{}\"\n\
             revocation_poll_secs = 1\nrevocation_fetch_timeout_secs = 2\n\
             challenge_interval_secs = 1\nchallenge_deadline_secs = 2\ncert_ttl_secs = 300\n\
             [limits]\nrate_per_minute = 1\nrate_burst = 3\n",
            lists.url()
        ))
        .before_start(move |pki, _| {
            std::fs::copy(pki.crl(), &served).expect("publish the first list");
        })
        .start();

    // Readiness: licence valid, list fresh, sshd reachable.
    let ready = http_get(metrics, "/readyz");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert!(ready.ends_with("\r\n\r\nready\n"), "{ready}");
    let build = metric(
        &http_get(metrics, "/metrics"),
        &format!(
            "ztssh_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        ),
    );
    assert_eq!(build, 1.0);

    // The nftables guard's series: sshd-guard-check writes them for
    // node_exporter whatever it finds. This proxy has no zero standing
    // keys, so no range to guard: the check says so (exit 64) and its
    // textfile says the guard does not hold (sshd_setup.rs runs it against
    // a real guard).
    let textfile_dir = tempfile::tempdir().expect("textfile dir");
    let textfile = textfile_dir.path().join("ztssh-sshd-guard.prom");
    let out = run_bounded(
        Command::new(bin("ztssh-proxy"))
            .arg("sshd-guard-check")
            .arg("--config")
            .arg(&w.proxy.config)
            .arg("--textfile")
            .arg(&textfile),
        T,
    );
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("needs upstream_source_range"),
        "{}",
        stderr(&out)
    );
    let text = std::fs::read_to_string(&textfile).expect("the textfile");
    assert!(
        text.contains("ztssh_sshd_guard_holds{table=\"ztssh_sshd_guard\"} 0\n"),
        "{text}"
    );
    let node = NodeExporter::start(textfile_dir.path());
    let prom = Prometheus::start(
        metrics,
        node.port,
        &repo().join("config-examples/prometheus-alerts.yml"),
    );
    // The first scrape, by polling the API (bounded).
    wait_until(T, "Prometheus' first scrape of the proxy", || {
        prom.api(&format!(
            "/api/v1/query?query={}",
            encode("up{job=\"ztssh\"}")
        ))
        .and_then(|v| {
            v["data"]["result"][0]["value"][1]
                .as_str()
                .map(|s| s == "1")
        })
        .unwrap_or(false)
    });
    wait_until(T, "Prometheus' first scrape of node_exporter", || {
        prom.api(&format!(
            "/api/v1/query?query={}",
            encode("ztssh_sshd_guard_holds{job=\"node\"}")
        ))
        .and_then(|v| {
            v["data"]["result"][0]["value"][1]
                .as_str()
                .map(|s| s == "0")
        })
        .unwrap_or(false)
    });
    // The alert rules loaded.
    let rules = prom.api("/api/v1/rules").expect("rules");
    let mut alert_exprs = Vec::new();
    for g in rules["data"]["groups"].as_array().expect("groups") {
        for r in g["rules"].as_array().expect("rules") {
            alert_exprs.push((
                r["name"].as_str().expect("name").to_owned(),
                r["query"].as_str().expect("query").to_owned(),
            ));
        }
    }
    assert!(alert_exprs.len() >= 10, "{rules}");

    // Traffic that makes every series the dashboard shows: a session with
    // proofs, a reload, connections refused by the rate limit, and a
    // session ended by a ban.
    let mut live = LiveSsh::start(w.ssh());
    live.send("hello\n");
    wait_until(T, "two proofs", || {
        metric_value(
            &http_get(metrics, "/metrics"),
            "ztssh_challenges_total{result=\"ok\"}",
        )
        .is_some_and(|n| n >= 2.0)
    });
    assert_ok(&live.finish(), "ssh");
    w.proxy.sighup();
    wait_until(T, "a reload", || {
        metric_value(
            &http_get(metrics, "/metrics"),
            "ztssh_config_reloads_total{result=\"ok\"}",
        )
        .is_some_and(|n| n >= 1.0)
    });
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(connect_from("127.0.0.7", w.proxy.port).expect("connect"));
    }
    wait_until(Duration::from_secs(20), "a refusal", || {
        if let Ok(s) = connect_from("127.0.0.7", w.proxy.port) {
            open.push(s);
        }
        metric_value(
            &http_get(metrics, "/metrics"),
            "ztssh_connections_refused_total{reason=\"rate_limited\"}",
        )
        .is_some_and(|n| n >= 1.0)
    });
    drop(open);
    let mut held = w.ssh();
    held.arg("sleep 60")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let held = Guard(held.spawn().expect("ssh"));
    wait_until(T, "a second session", || {
        metric(&http_get(metrics, "/metrics"), "ztssh_sessions_open") == 1.0
    });
    w.pki.revoke("principal", "alice");
    w.pki.publish_crl_to(&www, "1d");
    wait_until(T, "the ban to end the session", || {
        metric_value(
            &http_get(metrics, "/metrics"),
            "ztssh_sessions_terminated_total{reason=\"principal_banned\"}",
        )
        .is_some_and(|n| n >= 1.0)
    });
    drop(held);

    // Every dashboard query, with the instance variable set to the proxy
    // and to every instance, answers with series once Prometheus has
    // scraped the traffic (rate() needs two samples: polled, bounded).
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("config-examples/grafana-dashboard.json"))
            .expect("dashboard"),
    )
    .expect("dashboard JSON");
    let var = dash["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .find(|v| v["name"] == "instance")
        .expect("an instance variable");
    let var_query = var["query"]["query"].as_str().expect("variable query");
    let instance = format!("127.0.0.1:{metrics}");
    let values = var_query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(", instance)"))
        .expect("label_values(METRIC, instance)");
    let found = prom.query(values);
    assert!(
        found
            .iter()
            .any(|s| s["metric"]["instance"] == instance.as_str()),
        "the instance variable does not list {instance}: {found:?}"
    );
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            let e = t["expr"].as_str().expect("expr");
            assert!(
                e.contains("instance=~\"$instance\""),
                "panel {} does not filter by $instance: {e}",
                p["title"]
            );
            exprs.push((p["title"].as_str().expect("title").to_owned(), e.to_owned()));
        }
    }
    for (title, e) in &exprs {
        for choice in [regex_escape(&instance), ".*".to_owned()] {
            let q = e.replace("$instance", &choice);
            wait_until(T, &format!("panel {title:?}: {q} to name series"), || {
                !prom.query(&q).is_empty()
            });
        }
        // Another server's name selects nothing: the filter is real.
        let other = e.replace("$instance", "nosuchhost:9469");
        assert!(
            prom.query(&other).is_empty(),
            "{other} ignores the instance"
        );
    }

    // Every alert expression evaluates, and every metric it names exists,
    // with every label it matches on (an alert is quiet here, so its
    // result is empty by design; the names in it must not be).
    for (name, e) in &alert_exprs {
        prom.query(e);
        let sels = selectors(e);
        assert!(!sels.is_empty(), "{name}: no metric in {e}");
        for (metric, labels) in sels {
            let q = format!("count({metric})");
            assert!(
                !prom.query(&q).is_empty(),
                "alert {name}: {metric} names no series ({e})"
            );
            for l in labels {
                let q = format!("count({metric}{{{l}!=\"\"}})");
                assert!(
                    !prom.query(&q).is_empty(),
                    "alert {name}: no {metric} series has a {l} label ({e})"
                );
            }
        }
    }
    drop(lists);
}

fn regex_escape(s: &str) -> String {
    s.replace('.', "\\\\.")
}

#[test]
fn readyz_names_each_failing_check() {
    let metrics = free_port();
    let w = World::builder()
        .proxy_toml(&format!("metrics_listen = \"127.0.0.1:{metrics}\"\n"))
        .start();
    let ready = http_get(metrics, "/readyz");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    // The licence revoked and sshd gone: 503, one line for each, while
    // /healthz (liveness) stays 200.
    w.pki.revoke("server", "web1");
    w.pki.publish_crl();
    signal(w.sshd.pid(), "TERM");
    wait_until(T, "sshd to stop listening", || {
        std::net::TcpStream::connect(("127.0.0.1", w.sshd.port)).is_err()
    });
    wait_until(T, "/readyz to name both checks", || {
        let r = http_get(metrics, "/readyz");
        r.starts_with("HTTP/1.1 503") && r.contains("revoked") && r.contains("sshd at")
    });
    let r = http_get(metrics, "/readyz");
    let (_, body) = r.split_once("\r\n\r\n").expect("body");
    assert_eq!(body.lines().count(), 2, "{body}");
    assert!(body.contains("server licence for web1 revoked"), "{body}");
    assert!(http_get(metrics, "/healthz").starts_with("HTTP/1.1 200"));
}
