//! Zero standing keys: sshd accepts a user key only on the connection of a
//! live, authorized ztssh session.
//!
//! - [`SourcePool`](crate::state::SourcePool) gives each session its own
//!   loopback source address (from `upstream_source_range`), never one a
//!   live session holds.
//! - [`LiveKeys`](crate::state::LiveKeys) lists the live sessions: who,
//!   with which user key, from which source address.
//! - [`answer`] decides what sshd's `AuthorizedKeysCommand` is told for one
//!   account: `from="<that session's source address>" <key>` for each live
//!   session whose principal is still authorized and may use the account.
//!
//! The socket that serves the answers is in [`crate::sshd::akc`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ztssh_proto::identity::Authority as _;
use ztssh_proto::time::UnixTime;
use ztssh_proto::trust::{Checkpoint, Subject};

use crate::state::LiveSession;
use crate::trust::authority::Authority;

/// What sshd is told for one account, and the sessions refused it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// authorized_keys lines: `from="ADDR" TYPE BASE64`.
    pub lines: Vec<String>,
    /// Sessions holding the offered key (or any key, when none was
    /// offered) that may not log in as the account: (session id, principal,
    /// reason).
    pub refused: Vec<(String, String, String)>,
}

/// The keys that may log in as `account` now: those of live sessions whose
/// principal is still authorized (licence, revocation list, authorized
/// principals, policy) and may use the account. With `offered` (sshd's `%k`),
/// only sessions holding that key are considered; with `client` (from
/// sshd's `%C`), only the session whose connection to sshd that is.
pub fn answer(
    sessions: &[Arc<LiveSession>],
    account: &str,
    offered: Option<&ssh_key::public::KeyData>,
    client: Option<SocketAddr>,
    authority: &Authority,
    now: UnixTime,
) -> Answer {
    let mut out = Answer::default();
    let mut sorted: Vec<&Arc<LiveSession>> = sessions.iter().collect();
    sorted.sort_by_key(|s| s.source);
    for s in sorted {
        if offered.is_some_and(|k| k != s.user_key.key_data()) {
            continue;
        }
        if client.is_some_and(|c| c != SocketAddr::new(IpAddr::V4(s.source), s.source_port)) {
            continue;
        }
        let verdict = authority
            .at(s.peer)
            .check(
                &Subject::user_key(&s.principal, &s.user_key),
                Checkpoint::SshdLogin,
                now,
            )
            .map_err(|e| e.reason.clone())
            .and_then(|()| {
                if authority.policy.may_use(&s.principal, account) {
                    Ok(())
                } else {
                    Err(format!(
                        "principal {} may not use account {account}",
                        s.principal
                    ))
                }
            });
        match verdict {
            Ok(()) => {
                let key = ssh_key::PublicKey::new(s.user_key.key_data().clone(), "");
                match key.to_openssh() {
                    Ok(k) => out.lines.push(format!("from=\"{}\" {k}", s.source)),
                    Err(e) => out.refused.push((
                        s.id.clone(),
                        s.principal.clone(),
                        format!("cannot encode key: {e}"),
                    )),
                }
            }
            Err(reason) => out
                .refused
                .push((s.id.clone(), s.principal.clone(), reason)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use getrandom::SysRng;
    use rand_core::UnwrapErr;
    use std::net::Ipv4Addr;
    use std::path::Path;

    use super::*;

    fn key(n: u8) -> ssh_key::PublicKey {
        let data = ssh_key::public::KeyData::Ed25519(ssh_key::public::Ed25519PublicKey([n; 32]));
        ssh_key::PublicKey::new(data, "")
    }

    fn authority(dir: &Path, principals: &str, policy: &str) -> Authority {
        use ztssh_proto::cert::{LicenceBody, Serial};
        use ztssh_proto::keys::SigningKey;
        let root = SigningKey::generate(&mut UnwrapErr(SysRng));
        let body = LicenceBody {
            serial: Serial::random(&mut UnwrapErr(SysRng)),
            server_id: "web1".into(),
            hostnames: vec!["web1".into()],
            subca_key: SigningKey::generate(&mut UnwrapErr(SysRng)).public(),
            noise_key: [7; 32],
            not_before: NOW - 60,
            not_after: NOW + 3600,
            issuer: root.public(),
        };
        let licence = body
            .sign(&root)
            .expect("sign")
            .verify(&root.public(), NOW)
            .expect("verify");
        let (ap, pp) = (dir.join("principals"), dir.join("policy.toml"));
        std::fs::write(&ap, principals).expect("principals");
        std::fs::write(&pp, policy).expect("policy");
        Authority {
            licence,
            crl: None,
            authorized: crate::trust::authz::Authorized::load(&ap).expect("principals"),
            policy: Arc::new(crate::trust::policy::Policy::load(&pp).expect("policy")),
            staleness: Default::default(),
            krl: None,
        }
    }

    const NOW: UnixTime = 1_800_000_000;

    fn live(id: &str, principal: &str, k: u8, last: u8) -> Arc<LiveSession> {
        Arc::new(LiveSession {
            id: id.into(),
            principal: principal.into(),
            user_key: key(k),
            peer: "192.0.2.1".parse().expect("ip"),
            source: Ipv4Addr::new(127, 77, 0, last),
            source_port: 40_000 + u16::from(last),
        })
    }

    #[test]
    fn a_live_sessions_login_is_judged_as_live_when_the_list_is_overdue() {
        use ztssh_proto::crl::Crl;
        use ztssh_proto::trust::{StaleMode, Staleness};
        let dir = tempfile::tempdir().expect("tempdir");
        let principals = format!("alice {}\n", key(1).to_openssh().expect("openssh"));
        let mut a = authority(dir.path(), &principals, "");
        a.crl = Some(Crl {
            list_version: 1,
            issued: NOW - 100,
            next_update: NOW - 10,
            issuer: ztssh_proto::keys::PublicKey([1; 32]),
            revoked: Default::default(),
        });
        a.staleness = Staleness {
            mode: StaleMode::RefuseNew,
            grace_secs: 0,
        };
        let sessions = [live("s1", "alice", 1, 5)];
        // refuse-new refuses new sessions only: sshd's key lookup for a
        // session already live is answered.
        let got = answer(&sessions, "alice", None, None, &a, NOW);
        assert_eq!(got.lines.len(), 1, "{:?}", got.refused);
        // close-all ends live sessions, so it refuses their logins too.
        a.staleness.mode = StaleMode::CloseAll;
        let got = answer(&sessions, "alice", None, None, &a, NOW);
        assert!(got.lines.is_empty());
        assert!(
            got.refused[0].2.contains("every session is refused"),
            "{:?}",
            got.refused
        );
    }

    #[test]
    fn answers_only_live_authorized_sessions_for_their_accounts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let line = |p: &str, k: u8| format!("{p} {}\n", key(k).to_openssh().expect("openssh"));
        let principals = format!(
            "{}{}{}",
            line("alice", 1),
            line("bob", 2),
            line("mallory", 4)
        );
        let a = authority(
            dir.path(),
            &principals,
            "[principals]\ndeny = [\"mallory\"]\n[principal.alice]\naccounts = [\"alice\", \"deploy\"]\n",
        );
        let sessions = [
            live("s1", "alice", 1, 5),
            live("s2", "bob", 2, 6),
            live("s3", "carol", 3, 7),
            live("s4", "mallory", 4, 8),
        ];
        let alice_line = format!(
            "from=\"127.77.0.5\" {}",
            key(1).to_openssh().expect("openssh")
        );
        let got = answer(&sessions, "deploy", None, None, &a, NOW);
        assert_eq!(got.lines, vec![alice_line.clone()]);
        let why: Vec<(&str, &str)> = got
            .refused
            .iter()
            .map(|(id, _, r)| (id.as_str(), r.as_str()))
            .collect();
        assert!(
            why.contains(&("s2", "principal bob may not use account deploy")),
            "{why:?}"
        );
        assert!(
            why.iter()
                .any(|(id, r)| *id == "s3" && r.contains("not authorized")),
            "{why:?}"
        );
        assert!(
            why.iter()
                .any(|(id, r)| *id == "s4" && r.contains("denied by policy")),
            "{why:?}"
        );
        // By default a principal may use only its own name.
        let bob_line = format!(
            "from=\"127.77.0.6\" {}",
            key(2).to_openssh().expect("openssh")
        );
        assert_eq!(
            answer(&sessions, "bob", None, None, &a, NOW).lines,
            vec![bob_line]
        );
        // With the offered key (%k), only sessions holding it count.
        let got = answer(&sessions, "alice", Some(key(2).key_data()), None, &a, NOW);
        assert!(got.lines.is_empty());
        assert_eq!(got.refused.len(), 1);
        assert_eq!(
            answer(&sessions, "alice", Some(key(1).key_data()), None, &a, NOW).lines,
            vec![alice_line.clone()]
        );
        assert!(
            answer(&sessions, "root", None, None, &a, NOW)
                .lines
                .is_empty()
        );
        // With %C (sshd 9.4+), only the session on that connection counts:
        // its address and its port.
        let on = |c: &str| {
            answer(
                &sessions,
                "alice",
                None,
                Some(c.parse().expect("addr")),
                &a,
                NOW,
            )
        };
        assert_eq!(on("127.77.0.5:40005").lines, vec![alice_line]);
        assert!(on("127.77.0.5:40006").lines.is_empty(), "another port");
        assert!(on("127.77.0.6:40005").lines.is_empty(), "another address");
        assert!(on("127.0.0.1:40005").lines.is_empty(), "a local process");
        // An expired licence vouches for nobody.
        assert!(
            answer(&sessions, "deploy", None, None, &a, NOW + 7200)
                .lines
                .is_empty()
        );
    }
}
