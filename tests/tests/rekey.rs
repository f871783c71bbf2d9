//! Rekey end to end: real ssh → ztssh-sidecar → ztssh-proxy → a private
//! real sshd, with both sides set to rekey every 32 MiB. Data flows both
//! ways at once through many rekeys and arrives intact; the proxy counts
//! every rekey in `ztssh_rekeys_total` and logs `rekeyed`, and the
//! sidecar reports each one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::{Read, Write};
use std::process::Stdio;
use std::time::Duration;

use sha2::Digest;
use ztssh_tests::*;

const CHUNK: usize = 8 << 20;
const REKEY_BYTES: u64 = 32 << 20;

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// `chunks` chunks of pseudo-random bytes, each from its own seed.
fn chunk(seed: u64) -> Vec<u8> {
    pseudo_random(CHUNK, seed)
}

#[test]
fn half_a_gibibyte_through_a_tunnel_that_rekeys_every_32_mib_arrives_intact() {
    let port = free_port();
    let w = World::builder()
        .proxy_toml(&format!(
            "metrics_listen = \"127.0.0.1:{port}\"\nrekey_after_bytes = {REKEY_BYTES}\n"
        ))
        .start();
    let dir = w.dir.path().to_owned();
    let sidecar_cfg = dir.join("sidecar.toml");
    fs::write(&sidecar_cfg, format!("rekey_after_bytes = {REKEY_BYTES}\n")).expect("sidecar.toml");

    // 512 MiB for ssh to read from sshd, hashed as it is written.
    let down = dir.join("down.bin");
    let mut down_hash = sha2::Sha256::new();
    {
        let mut f = fs::File::create(&down).expect("down.bin");
        for i in 0..64 {
            let c = chunk(1000 + i);
            down_hash.update(&c);
            f.write_all(&c).expect("write down.bin");
        }
    }
    let down_sum = hex(&down_hash.finalize());

    // While sshd sends it, ssh sends 128 MiB the other way: both
    // directions carry data across the rekeys.
    let up_sum_file = dir.join("up.sum");
    let remote = format!(
        "exec 3<&0; sha256sum <&3 > {} & cat {}; wait",
        up_sum_file.display(),
        down.display()
    );
    let mut cmd = std::process::Command::new("ssh");
    cmd.args(w.client_opts(
        &w.alice,
        &format!("--verbose --config {}", sidecar_cfg.display()),
    ))
    .arg("-p")
    .arg(w.proxy.port.to_string())
    .arg("root@localhost")
    .arg(remote)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn ssh");
    let mut stdin = child.stdin.take().expect("stdin");
    let uploader = std::thread::spawn(move || {
        let mut h = sha2::Sha256::new();
        for i in 0..16 {
            let c = chunk(5000 + i);
            h.update(&c);
            stdin.write_all(&c).expect("upload");
        }
        drop(stdin);
        hex(&h.finalize())
    });
    let mut stderr = child.stderr.take().expect("stderr");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    // The read below is bounded: a watchdog ends ssh (which this test
    // started) if the transfer has not finished within 5 minutes.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(Duration::from_secs(300)).is_err() {
            let _ = std::process::Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
    });
    let mut stdout = child.stdout.take().expect("stdout");
    let mut got = sha2::Sha256::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = stdout.read(&mut buf).expect("read ssh stdout");
        if n == 0 {
            break;
        }
        got.update(&buf[..n]);
        total += n as u64;
    }
    let out = wait_bounded(child, Duration::from_secs(60));
    let _ = done_tx.send(());
    watchdog.join().expect("watchdog");
    let up_sum = uploader.join().expect("uploader");
    let err = err_reader.join().expect("stderr reader");
    assert!(out.status.success(), "ssh failed: {err}");
    assert_eq!(total, 512 << 20, "{err}");
    assert_eq!(
        hex(&got.finalize()),
        down_sum,
        "the download arrived intact"
    );
    let remote_up = read_text(&up_sum_file);
    assert_eq!(
        remote_up.split_whitespace().next(),
        Some(up_sum.as_str()),
        "the upload arrived intact"
    );

    // 640 MiB of payload at one rekey per 32 MiB of records. The session's
    // end is logged after its last rekey.
    w.proxy
        .wait_log("event=\"session_closed\"", Duration::from_secs(30));
    let rekeys = metric(&http_get(port, "/metrics"), "ztssh_rekeys_total");
    assert!(rekeys >= 14.0, "only {rekeys} rekeys");
    let log = w.proxy.log_text();
    assert_eq!(count(&log, "event=\"rekeyed\"") as f64, rekeys, "{log}");
    assert_eq!(
        count(&err, "tunnel keys replaced") as f64,
        rekeys,
        "the sidecar saw every rekey: {err}"
    );
    assert_eq!(count(&log, "event=\"session_terminated\""), 0, "{log}");
}

#[test]
fn bad_rekey_and_cover_settings_are_config_errors_before_binding() {
    let w = World::start();
    let base = fs::read_to_string(&w.proxy.config).expect("config");
    let cases = [
        (
            "rekey_after_secs = 0\n",
            "rekey_after_secs = 0: must be between 1 and 86400",
        ),
        (
            "rekey_after_bytes = 1024\n",
            "rekey_after_bytes = 1024: must be between",
        ),
        (
            "cover_traffic = \"always\"\n",
            "use \"off\" or \"interactive\"",
        ),
    ];
    for (i, (lines, want)) in cases.iter().enumerate() {
        let path = w.dir.path().join(format!("bad{i}.toml"));
        fs::write(&path, format!("{base}{lines}")).expect("write");
        let out = run_bounded(
            std::process::Command::new(bin("ztssh-proxy"))
                .arg("check")
                .arg("--config")
                .arg(&path),
            Duration::from_secs(60),
        );
        assert_eq!(out.status.code(), Some(64), "{lines}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{lines}: {}", stderr(&out));
    }
    // The sidecar refuses the same mistakes before connecting.
    let cfg = w.dir.path().join("bad-sidecar.toml");
    fs::write(&cfg, "cover_traffic = \"sometimes\"\n").expect("write");
    let out = run_bounded(
        w.sidecar_to(w.proxy.port)
            .arg("--config")
            .arg(&cfg)
            .stdin(Stdio::null()),
        Duration::from_secs(60),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("use \"off\" or \"interactive\""),
        "{}",
        stderr(&out)
    );
}
