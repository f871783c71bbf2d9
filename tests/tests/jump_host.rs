//! `ztssh-sidecar --jump`: ssh reaches a ztssh host through another ztssh
//! host, both legs through ztssh. Two proxies in front of two sshd: the
//! jump leg is `ssh -W` to web1 (itself through web1's proxy, as the
//! user's ssh_config says), web1's sshd opens a `direct-tcpip` channel to
//! web3's proxy, and the tunnel to web3 runs inside it: what `ssh -J`
//! does, which cannot work by itself (ssh -J skips web3's ProxyCommand
//! and speaks plain SSH to web3's proxy).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::Command;
use std::time::Duration;

use ztssh_tests::*;

const T: Duration = Duration::from_secs(60);

/// The ssh_config a user would have for web1 (the jump host), through
/// web1's proxy.
fn jump_config(web1: &World) -> std::path::PathBuf {
    let path = web1.dir.path().join("jump_ssh_config");
    let text = format!(
        "Host web1\n    HostName localhost\n    Port {}\n    User root\n    IdentityFile {}\n    \
         IdentitiesOnly yes\n    BatchMode yes\n    StrictHostKeyChecking no\n    \
         UserKnownHostsFile {}\n    LogLevel ERROR\n    ProxyCommand {}\n",
        web1.proxy.port,
        web1.alice.display(),
        web1.dir.path().join("known_hosts").display(),
        web1.proxy_command("")
    );
    std::fs::write(&path, text).expect("jump config");
    path
}

#[test]
fn a_ztssh_host_is_reached_through_another_both_legs_through_ztssh() {
    let web1 = World::start();
    let web3 = World::start();
    let cfg = jump_config(&web1);
    let jump = format!("--jump web1 --jump-config {}", cfg.display());
    let out = run_bounded(
        Command::new("ssh")
            .args(web3.direct_opts(&web3.alice))
            .arg("-o")
            .arg(format!("ProxyCommand={}", web3.proxy_command(&jump)))
            .arg("-p")
            .arg(web3.proxy.port.to_string())
            .arg("root@localhost")
            .arg("echo through-web1")
            // Verbosity as an environment variable says it (a type error
            // before): the sidecars say each step.
            .env("ZTSSH_VERBOSE", "1"),
        T,
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through-web1\n");
    assert!(
        err.contains(&format!(
            "ztssh: through web1: ssh -W localhost:{}",
            web3.proxy.port
        )),
        "{err}"
    );
    // The first leg went through web1's proxy to web1's sshd, which
    // opened the channel to web3's proxy; web3's proxy let the session in.
    assert!(
        count(&web1.proxy.log_text(), "event=\"upstream_connected\"") >= 1,
        "web1's proxy: {}",
        web1.proxy.log_text()
    );
    let sshd1 = web1.sshd.log_text();
    assert!(
        sshd1.contains("direct-tcpip")
            && sshd1.contains(&format!("target localhost port {}", web3.proxy.port)),
        "web1's sshd: {sshd1}"
    );
    assert!(
        count(&web3.proxy.log_text(), "event=\"upstream_connected\"") >= 1,
        "web3's proxy: {}",
        web3.proxy.log_text()
    );
    assert!(web3.sshd.log_text().contains("Accepted publickey"));
}

#[test]
fn a_jump_to_itself_or_round_in_circles_is_refused_with_what_to_do() {
    let web1 = World::start();
    let run = |host: &str, depth: &str| {
        let mut c = web1.sidecar_to(web1.proxy.port);
        // sidecar_to names web1 22; ask for `host` instead.
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let mut c2 = Command::new(c.get_program());
        c2.args(&args[..args.len() - 2])
            .args(["--jump", "web1", host, "22"])
            .env("ZTSSH_JUMP_DEPTH", depth)
            .stdin(std::process::Stdio::null());
        c = c2;
        run_bounded(&mut c, T)
    };
    let out = run("web1", "0");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("a host cannot be its own jump host"),
        "{}",
        stderr(&out)
    );
    let out = run("web3", "8");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("more than 8 jump hosts in a row"),
        "{}",
        stderr(&out)
    );
}
