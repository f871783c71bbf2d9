//! The shipped deployment files and config examples stay valid: every
//! example is loaded by the real parsers, the systemd unit is verified, and
//! the dashboard and alert rules use only metrics the proxy exports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use ztssh_tests::*;

const T: Duration = Duration::from_secs(60);

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

#[test]
fn proxy_example_and_principals_example_pass_check() {
    let w = World::start();
    // The example's paths are for a real host; point them at this world's
    // files through the documented ZTSSH_* overrides.
    let out = run_bounded(
        Command::new(bin("ztssh-proxy"))
            .arg("check")
            .arg("--config")
            .arg(repo("config-examples/proxy.toml"))
            .env("ZTSSH_STATE_DIR", &w.pki.state)
            .env("ZTSSH_LICENCE", &w.pki.licence)
            .env("ZTSSH_ROOT_PUBLIC_KEY", w.pki.root_pub())
            .env("ZTSSH_REVOCATION_LIST", w.pki.crl())
            .env("ZTSSH_POLICY", repo("config-examples/policy.toml"))
            .env(
                "ZTSSH_AUTHORIZED_PRINCIPALS",
                repo("config-examples/authorized_principals"),
            ),
        T,
    );
    assert_ok(&out, "ztssh-proxy check config-examples/proxy.toml");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("listen 0.0.0.0:2222 -> upstream 127.0.0.1:22"),
        "{text}"
    );
    assert!(
        text.contains("challenge every 30s, answer within 10s; client certificates 300s"),
        "{text}"
    );
    assert!(
        text.contains("policy: principals any allowed / 1 denied, sources any allowed / 1 denied, 2 per-principal rule(s)"),
        "{text}"
    );
}

#[test]
fn ssh_config_and_sidecar_examples_work_with_real_ssh() {
    let w = World::start();
    let dir = w.dir.path();
    let ssh_config =
        std::fs::read_to_string(repo("config-examples/ssh_config")).expect("ssh_config");
    let ssh_config = ssh_config.replace("Port 2222", &format!("Port {}", w.proxy.port));
    let cfg_path = dir.join("ssh_config");
    let kh = dir.join("known_hosts_example");
    std::fs::write(
        &cfg_path,
        format!(
            "{ssh_config}\nHost *\n    User root\n    IdentityFile {}\n    IdentitiesOnly yes\n    BatchMode yes\n    StrictHostKeyChecking no\n    UserKnownHostsFile {}\n",
            w.alice.display(),
            kh.display()
        ),
    )
    .expect("write");
    let bin_dir = bin("ztssh-sidecar").parent().expect("dir").to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = run_bounded(
        Command::new("ssh")
            .arg("-F")
            .arg(&cfg_path)
            .arg("web1")
            .arg("echo via-examples")
            .env("PATH", path)
            .env("ZTSSH_ROOT", w.pki.root_pub())
            .env("ZTSSH_IDENTITY", &w.alice)
            .env("ZTSSH_PRINCIPAL", "alice")
            .env("ZTSSH_CONNECT", format!("127.0.0.1:{}", w.proxy.port))
            .env(
                "XDG_CONFIG_HOME",
                repo("config-examples").join("xdg-for-tests-does-not-exist"),
            ),
        T,
    );
    assert_ok(&out, "ssh with the example ssh_config");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "via-examples\n");

    // The sidecar example parses and its settings apply (verbose = false, frame size 1024).
    let out = run_bounded(
        Command::new(bin("ztssh-sidecar"))
            .arg("--config")
            .arg(repo("config-examples/sidecar.toml"))
            .arg("--connect")
            .arg(format!("127.0.0.1:{}", w.proxy.port))
            .arg("web1")
            .arg("22")
            .env("ZTSSH_ROOT", w.pki.root_pub())
            .env("ZTSSH_IDENTITY", &w.alice)
            .env("ZTSSH_PRINCIPAL", "alice"),
        T,
    );
    // stdin is /dev/null, so the tunnel opens and closes at once: success.
    assert_ok(&out, "ztssh-sidecar --config config-examples/sidecar.toml");
}

/// `systemd-analyze verify` passes on `unit` (with the binary's path made
/// this build's) with no warning; returns its offline exposure score.
fn verify_unit(name: &str) -> f64 {
    let unit = std::fs::read_to_string(repo(&format!("systemd/{name}"))).expect("unit");
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join(name);
    std::fs::write(
        &path,
        unit.replace(
            "/usr/bin/ztssh-proxy",
            &bin("ztssh-proxy").display().to_string(),
        ),
    )
    .expect("write");
    let out = run_bounded(Command::new("systemd-analyze").arg("verify").arg(&path), T);
    assert_ok(&out, &format!("systemd-analyze verify {name}"));
    assert!(
        stderr(&out).trim().is_empty(),
        "{name}: warnings: {}",
        stderr(&out)
    );
    let out = run_bounded(
        Command::new("systemd-analyze")
            .arg("security")
            .arg("--offline=true")
            .arg(&path),
        T,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split(&format!("exposure level for {name}: ")).nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in:\n{text}"));
    println!("systemd-analyze security exposure of {name}: {score}");
    score
}

#[test]
fn systemd_unit_verifies() {
    let score = verify_unit("ztssh-proxy.service");
    assert!(
        score <= 1.4,
        "the unit should stay hardened (exposure {score}, at most 1.4)"
    );
}

/// The guard's check runs as root (nft, a probe as another user), so it
/// cannot score like the proxy; it stays at its hardened 2.4.
#[test]
fn the_guard_check_units_verify() {
    let score = verify_unit("ztssh-sshd-guard-check.service");
    assert!(
        score <= 2.4,
        "the guard check's unit should stay hardened (exposure {score}, at most 2.4)"
    );
    let timer =
        std::fs::read_to_string(repo("systemd/ztssh-sshd-guard-check.timer")).expect("timer");
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("ztssh-sshd-guard-check.timer"), timer).expect("write");
    let service = std::fs::read_to_string(repo("systemd/ztssh-sshd-guard-check.service"))
        .expect("service")
        .replace(
            "/usr/bin/ztssh-proxy",
            &bin("ztssh-proxy").display().to_string(),
        );
    std::fs::write(dir.path().join("ztssh-sshd-guard-check.service"), service).expect("write");
    let out = run_bounded(
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(dir.path().join("ztssh-sshd-guard-check.timer")),
        T,
    );
    assert_ok(&out, "systemd-analyze verify ztssh-sshd-guard-check.timer");
    assert!(stderr(&out).trim().is_empty(), "warnings: {}", stderr(&out));
}

#[test]
fn dashboard_and_alerts_use_exported_metrics() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo("config-examples/grafana-dashboard.json"))
            .expect("dashboard"),
    )
    .expect("json");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    assert!(exprs.len() >= 10);
    // Every metric the dashboard and the alerts use is one the proxy
    // exports, or (the nftables guard's) one sshd-guard-check writes for
    // node_exporter.
    let alerts =
        std::fs::read_to_string(repo("config-examples/prometheus-alerts.yml")).expect("alerts");
    let exported = std::fs::read_to_string(repo("proxy/src/ops/metrics.rs")).expect("metrics.rs");
    let textfile = std::fs::read_to_string(repo("proxy/src/sshd/guard.rs")).expect("guard.rs");
    for text in exprs
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(alerts.as_str()))
    {
        for word in text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("ztssh_"))
        {
            let base = word
                .trim_end_matches("_bucket")
                .trim_end_matches("_count")
                .trim_end_matches("_sum");
            assert!(
                exported.contains(&format!("\"{base}\""))
                    || (base.starts_with("ztssh_sshd_guard_")
                        && textfile.contains(&format!("{base}{{{{table="))),
                "{word} is not exported by the proxy"
            );
        }
    }
}

#[test]
fn every_binary_prints_its_man_page_and_completions() {
    for name in ["ztssh-proxy", "ztssh-sidecar", "ztssh-ca"] {
        let out = run_bounded(Command::new(bin(name)).arg("man"), T);
        assert_ok(&out, &format!("{name} man"));
        let page = String::from_utf8_lossy(&out.stdout);
        assert!(
            page.contains(".TH ") && page.contains(name),
            "{name} man:\n{page}"
        );
        for shell in ["bash", "zsh", "fish"] {
            let out = run_bounded(Command::new(bin(name)).args(["completions", shell]), T);
            assert_ok(&out, &format!("{name} completions {shell}"));
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains(name), "{name} completions {shell}:\n{text}");
        }
    }
    // The sidecar's ssh arguments still parse beside the new subcommands.
    let out = run_bounded(Command::new(bin("ztssh-sidecar")).arg("completions"), T);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
}
