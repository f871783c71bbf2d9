//! Cover traffic through the real binaries: with `cover_traffic =
//! "interactive"` on the proxy and the sidecar, an interactive exchange
//! and a bulk transfer both arrive intact. (What an observer sees is
//! tested on virtual time in `proto`'s `conn::tests::cover`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::time::Duration;

use ztssh_tests::*;

const T: Duration = Duration::from_secs(60);

#[test]
fn a_session_with_cover_traffic_on_both_sides_carries_small_and_bulk_data() {
    let w = World::builder()
        .proxy_toml("cover_traffic = \"interactive\"\n")
        .start();
    let cfg = w.dir.path().join("sidecar.toml");
    fs::write(&cfg, "cover_traffic = \"interactive\"\n").expect("sidecar.toml");
    let ssh = |cmd: &str| {
        let mut c = std::process::Command::new("ssh");
        c.args(w.client_opts(&w.alice, &format!("--config {}", cfg.display())))
            .arg("-p")
            .arg(w.proxy.port.to_string())
            .arg("root@localhost")
            .arg(cmd);
        run_bounded(&mut c, T)
    };
    let out = ssh("echo small; exit 3");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "small\n");
    let out = ssh("head -c 8388608 /dev/zero | wc -c");
    assert_ok(&out, "8 MiB through a covered session");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "8388608");
    let out = ssh("head -c 8388608 /dev/zero");
    assert_ok(&out, "8 MiB down a covered session");
    assert_eq!(out.stdout.len(), 8 << 20);
    assert!(w.proxy.log_text().contains("cover traffic Interactive"));
}
