//! sshd 9.8+ penalises a source address that fails authentication
//! (`PerSourcePenalties`, on by default). Behind ztssh every connection
//! comes from the proxy, so without the exemption that `ztssh-proxy
//! sshd-config` adds, one user's failed logins would lock every proxied user
//! out. On sshd before 9.8 (Debian 12's 9.2) there are no penalties and
//! the test checks only that logins go on; tests/sshd10.sh runs it against
//! OpenSSH 10, where it checks that sshd does penalise another source.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use ztssh_tests::zsk::{ACCOUNT, ensure_account};
use ztssh_tests::*;

const T: Duration = Duration::from_secs(60);

/// ssh through ztssh as `principal` with `key` (for the sidecar and for
/// sshd), running `true`.
fn through(w: &World, key: &Path, principal: &str) -> Output {
    run_bounded(
        Command::new("ssh")
            .args(w.direct_opts(key))
            .arg("-o")
            .arg(format!(
                "ProxyCommand={}",
                w.proxy_command_as(key, principal, "")
            ))
            .arg("-p")
            .arg(w.proxy.port.to_string())
            .arg(format!("{ACCOUNT}@localhost"))
            .arg("true"),
        T,
    )
}

#[test]
fn failed_logins_through_the_proxy_do_not_lock_other_users_out() {
    // bob is a ztssh principal, but sshd has no key of his: each of his
    // logins passes ztssh and fails at sshd, from the proxy's address.
    // Logins are as ACCOUNT (sshd's authorized_keys file, alice's key, is
    // one for every account).
    ensure_account(ACCOUNT);
    let w = World::builder().user("bob").loopback_lines().start();
    let bob = w.key("bob").to_owned();
    let penalties = sshd_version() >= (9, 8);
    if penalties {
        assert!(
            w.sshd_head
                .contains("\nPerSourcePenaltyExemptList 127.0.0.1\n"),
            "{}",
            w.sshd_head
        );
    } else {
        assert!(
            !w.sshd_head.lines().any(|l| l.starts_with("PerSource")),
            "{}",
            w.sshd_head
        );
    }
    // Six failures: 30 s of sshd's default authfail penalty, twice its
    // 15 s threshold.
    for n in 1..=6 {
        let out = through(&w, &bob, "bob");
        assert!(
            !out.status.success(),
            "bob's login #{n} should fail at sshd"
        );
        assert!(
            stderr(&out).contains("Permission denied"),
            "bob's login #{n} was refused by sshd's key check, not dropped: {}",
            stderr(&out)
        );
    }
    // alice, through the same proxy, still logs in.
    let out = through(&w, &w.alice, "alice");
    assert!(
        out.status.success(),
        "alice after bob's failures: {}\nsshd:\n{}\nproxy:\n{}",
        stderr(&out),
        w.sshd.log_text(),
        w.proxy.log_text()
    );
    assert!(
        !w.sshd.log_text().contains("penalty: failed authentication"),
        "sshd penalised the proxy's source:\n{}",
        w.sshd.log_text()
    );
    if !penalties {
        return;
    }
    // The control: the same failures from a source that is not exempt
    // (127.0.0.2, straight to sshd) are penalised, so the exemption is
    // what kept alice in. Bounded: at most 12 tries.
    let direct = |key: &Path| {
        run_bounded(
            Command::new("ssh")
                .args(w.direct_opts(key))
                .args(["-b", "127.0.0.2", "-p"])
                .arg(w.sshd.port.to_string())
                .arg(format!("{ACCOUNT}@127.0.0.1"))
                .arg("true"),
            T,
        )
    };
    let mut penalised = false;
    for _ in 0..12 {
        let _ = direct(&bob);
        if w.sshd
            .log_text()
            .lines()
            .any(|l| l.contains("from [127.0.0.2]") && l.contains("penalty: failed authentication"))
        {
            penalised = true;
            break;
        }
    }
    assert!(
        penalised,
        "sshd never penalised 127.0.0.2:\n{}",
        w.sshd.log_text()
    );
    // alice's right key from 127.0.0.2 is dropped now; through ztssh she
    // still gets in.
    let out = direct(&w.alice);
    assert!(!out.status.success(), "127.0.0.2 is penalised");
    assert_ok(
        &through(&w, &w.alice, "alice"),
        "alice through ztssh while 127.0.0.2 is penalised",
    );
}
