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
use ztssh_proto::trust::usercert::UserCertVerified;
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
    /// For the audit line: each answered session's user certificate (key
    /// id, serial, CA), as `SESSION: ...`.
    pub certs: Vec<String>,
}

/// The OpenSSH user certificate's extensions and the authorized_keys
/// options that grant the same after `restrict`.
const PERMITS: [(&str, &str); 6] = [
    ("permit-pty", "pty"),
    ("permit-port-forwarding", "port-forwarding"),
    ("permit-agent-forwarding", "agent-forwarding"),
    ("permit-X11-forwarding", "X11-forwarding"),
    ("permit-user-rc", "user-rc"),
    ("no-touch-required", "no-touch-required"),
];

/// The options that make sshd enforce a user certificate's critical
/// options and extensions, as it would for the certificate itself:
/// `restrict`, then each permit the certificate grants, `verify-required`
/// (sshd then refuses a security key signature without user verification;
/// the proxy checks every signature of the key it accepts too), then
/// `command=` from `force-command`. `Err`: a force-command no authorized_keys line can
/// carry (a line break or NUL in it, or a trailing backslash).
pub fn cert_options(cert: &UserCertVerified) -> Result<String, String> {
    let mut out = String::from("restrict");
    for (ext, opt) in PERMITS {
        if cert.permits(ext) {
            out.push(',');
            out.push_str(opt);
        }
    }
    if cert.verify_required() {
        out.push_str(",verify-required");
    }
    if let Some(cmd) = cert.force_command() {
        if cmd.contains(['\n', '\r', '\0']) {
            return Err("the certificate's force-command has a line break or NUL in it".into());
        }
        // sshd reads `\"` inside `command="..."` as a quote, so a trailing
        // backslash would escape the closing quote and sshd would drop the
        // whole line unseen. No escaping can carry it: refuse, and say so.
        if cmd.ends_with('\\') {
            return Err(
                "the certificate's force-command ends in a backslash, which an \
                 authorized_keys command=\"...\" option cannot carry: ask your SSH CA \
                 for one without it"
                    .into(),
            );
        }
        out.push_str(&format!(",command=\"{}\"", cmd.replace('"', "\\\"")));
    }
    Ok(out)
}

/// The keys that may log in as `account` now: those of live sessions whose
/// principal is still authorized (licence, revocation list, including every
/// serial the session was issued, authorized principals, policy) and may
/// use the account. With `offered` (sshd's `%k`),
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
        let cert = s.user_cert.get();
        let token = s.workload.get();
        let who = match (&cert, &token) {
            (Some(c), _) => Subject::user_cert(&s.principal, c),
            (None, Some(t)) => Subject::workload(&s.principal, t, &s.user_key),
            (None, None) => Subject::user_key(&s.principal, &s.user_key),
        };
        let verdict = s
            .serials
            .with(|issued| {
                authority
                    .at(s.peer)
                    .check(&who, Checkpoint::SshdLogin(issued), now)
            })
            .map_err(|e| e.reason.clone())
            .and_then(|()| {
                if authority.may_use(&who, account, now) {
                    Ok(())
                } else {
                    Err(format!(
                        "principal {} may not use account {account}",
                        s.principal
                    ))
                }
            })
            .and_then(|()| match &cert {
                Some(c) => cert_options(c).map(|o| format!(",{o}")),
                None => Ok(String::new()),
            });
        match verdict {
            Ok(options) => {
                let key = ssh_key::PublicKey::new(s.user_key.key_data().clone(), "");
                if let Some(c) = &cert {
                    out.certs.push(format!("{}: {}", s.id, c.describe()));
                }
                match key.to_openssh() {
                    Ok(k) => out
                        .lines
                        .push(format!("from=\"{}\"{options} {k}", s.source)),
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
            .verify(&root.public().into(), NOW)
            .expect("verify");
        let (ap, pp) = (dir.join("principals"), dir.join("policy.toml"));
        std::fs::write(&ap, principals).expect("principals");
        std::fs::write(&pp, policy).expect("policy");
        Authority {
            access: crate::trust::access::AccessInForce::default(),
            licence,
            crl: None,
            authorized: crate::trust::authz::Authorized::load(&ap).expect("principals"),
            policy: Arc::new(crate::trust::policy::Policy::load(&pp).expect("policy")),
            staleness: Default::default(),
            user_cas: None,
            krl: None,
            workload: None,
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
            serials: crate::state::SerialLog::new(ztssh_proto::trust::Issued::first(
                &ztssh_proto::cert::Serial([last; 16]),
            )),
            user_cert: crate::state::CertSlot::default(),
            workload: crate::state::TokenSlot::default(),
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
            delegation: None,
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

    /// The access list grants besides the file; its server globs are
    /// matched against the licence's server id; its accounts narrow the
    /// policy's and never widen them (getting around it: a list that names
    /// `root` for a principal whose policy does not allow root); a stale
    /// list under close-all grants nothing.
    #[test]
    fn the_access_list_grants_on_its_servers_and_only_narrows_accounts() {
        use std::collections::BTreeMap;
        use ztssh_proto::access::{AccessList, Grant};
        use ztssh_proto::trust::{StaleMode, Staleness};
        let dir = tempfile::tempdir().expect("tempdir");
        let principals = format!("alice {}\n", key(1).to_openssh().expect("openssh"));
        let mut a = authority(
            dir.path(),
            &principals,
            "[principal.carol]\naccounts = [\"carol\", \"deploy\"]\n",
        );
        let grant = |k: u8, servers: &[&str], accounts: &[&str]| Grant {
            keys: vec![key(k).key_data().clone()],
            servers: servers.iter().map(|s| (*s).to_owned()).collect(),
            accounts: accounts.iter().map(|s| (*s).to_owned()).collect(),
        };
        let mut list = BTreeMap::new();
        list.insert("carol".to_owned(), grant(3, &["web*"], &["carol", "root"]));
        list.insert("dave".to_owned(), grant(4, &["db*"], &[]));
        list.insert("erin".to_owned(), grant(5, &[], &["root"]));
        a.access.list = Some(Arc::new(AccessList {
            list_version: 1,
            issued: NOW - 10,
            valid_until: NOW + 10,
            issuer: ztssh_proto::keys::PublicKey([1; 32]),
            principals: list,
            delegation: None,
        }));
        let sessions = [
            live("s1", "alice", 1, 5),
            live("s3", "carol", 3, 7),
            live("s4", "dave", 4, 8),
            live("s5", "erin", 5, 9),
            live("s6", "carol", 6, 10),
        ];
        let ids = |got: &Answer| -> Vec<String> {
            got.lines
                .iter()
                .map(|l| l.split('"').nth(1).expect("from").to_owned())
                .collect()
        };
        // carol on web1 (web*) as herself; dave's grant is for db* only;
        // carol with a key the list does not give her is nobody.
        let got = answer(&sessions, "carol", None, None, &a, NOW);
        assert_eq!(ids(&got), vec!["127.77.0.7"], "{:?}", got.refused);
        // deploy: the policy allows it, the list's accounts leave it out.
        assert!(
            answer(&sessions, "deploy", None, None, &a, NOW)
                .lines
                .is_empty()
        );
        // root: the list names it, the policy does not allow it (carol's
        // accounts, erin's default of her own name): never.
        assert!(
            answer(&sessions, "root", None, None, &a, NOW)
                .lines
                .is_empty()
        );
        let got = answer(&sessions, "erin", None, None, &a, NOW);
        assert!(got.lines.is_empty(), "erin's list names root only");
        // alice, from the file, as before.
        assert_eq!(
            ids(&answer(&sessions, "alice", None, None, &a, NOW)),
            vec!["127.77.0.5"]
        );
        // Stale under close-all: the list grants nothing; the file still does.
        a.access.staleness = Staleness {
            mode: StaleMode::CloseAll,
            grace_secs: 0,
        };
        let later = NOW + 20;
        let got = answer(&sessions, "carol", None, None, &a, later);
        assert!(got.lines.is_empty());
        assert!(
            got.refused
                .iter()
                .any(|(id, _, r)| id == "s3" && r.contains("past its valid-until")),
            "{:?}",
            got.refused
        );
        assert_eq!(
            ids(&answer(&sessions, "alice", None, None, &a, later)),
            vec!["127.77.0.5"]
        );
    }

    /// A user certificate vouches for its principal by itself: sshd's key
    /// lookup answers its session for the accounts the policy allows, with
    /// no entry in any file or list (the access list's account narrowing
    /// asked the file and the list, so every certificate login with zero
    /// standing keys was refused: "principal carol may not use account
    /// carol"). Getting around it: the policy still decides the account.
    #[test]
    fn a_certificate_session_is_answered_for_the_accounts_the_policy_allows() {
        use ssh_key::certificate::{Builder, CertType};
        use ztssh_proto::trust::usercert::{self, UserCas};
        let dir = tempfile::tempdir().expect("tempdir");
        let mut a = authority(dir.path(), "", "");
        let ca =
            ssh_key::PrivateKey::from(ssh_key::private::Ed25519Keypair::from_seed(&[0xca; 32]));
        let cas = UserCas::parse(&ca.public_key().to_openssh().expect("openssh")).expect("cas");
        let user = key(9);
        let mut b =
            Builder::new([7; 16], user.key_data().clone(), NOW - 60, NOW + 3600).expect("builder");
        b.serial(1).expect("serial");
        b.key_id("carol@corp").expect("key id");
        b.cert_type(CertType::User).expect("type");
        b.valid_principal("carol").expect("principal");
        let bytes = b.sign(&ca).expect("sign").to_bytes().expect("bytes");
        let cert = usercert::verify(&cas, &bytes, &user, "carol", NOW).expect("verify");
        a.user_cas = Some(Arc::new(cas));
        let s = live("s9", "carol", 9, 11);
        s.user_cert.set(Some(Arc::new(cert)));
        let sessions = [s];
        let got = answer(&sessions, "carol", None, None, &a, NOW);
        assert_eq!(got.lines.len(), 1, "{:?}", got.refused);
        assert!(got.lines[0].contains(",restrict"), "{:?}", got.lines);
        let got = answer(&sessions, "root", None, None, &a, NOW);
        assert!(got.lines.is_empty(), "the policy does not allow root");
        assert!(
            got.refused[0].2.contains("may not use account root"),
            "{:?}",
            got.refused
        );
    }

    /// A verify-required certificate reaches sshd as the verify-required
    /// option, so sshd checks ssh's own security key signature for the PIN.
    #[test]
    fn a_verify_required_certificate_tells_sshd() {
        use ssh_key::certificate::{Builder, CertType};
        use ztssh_proto::trust::usercert::{self, UserCas};
        let ca =
            ssh_key::PrivateKey::from(ssh_key::private::Ed25519Keypair::from_seed(&[0xca; 32]));
        let cas = UserCas::parse(&ca.public_key().to_openssh().expect("openssh")).expect("cas");
        let user = key(9);
        let cert = |verify: bool| {
            let mut b = Builder::new([7; 16], user.key_data().clone(), NOW - 60, NOW + 3600)
                .expect("builder");
            b.serial(1).expect("serial");
            b.cert_type(CertType::User).expect("type");
            b.valid_principal("carol").expect("principal");
            b.extension("permit-pty", "").expect("pty");
            if verify {
                b.critical_option("verify-required", "").expect("option");
            }
            let bytes = b.sign(&ca).expect("sign").to_bytes().expect("bytes");
            usercert::verify(&cas, &bytes, &user, "carol", NOW).expect("verify")
        };
        assert_eq!(
            cert_options(&cert(true)).expect("options"),
            "restrict,pty,verify-required"
        );
        assert_eq!(cert_options(&cert(false)).expect("options"), "restrict,pty");
    }

    #[test]
    fn a_login_for_a_session_with_a_revoked_serial_is_refused_before_its_recheck() {
        use ztssh_proto::cert::Serial;
        use ztssh_proto::crl::Crl;
        use ztssh_proto::trust::Issued;
        let dir = tempfile::tempdir().expect("tempdir");
        let line = |p: &str, k: u8| format!("{p} {}\n", key(k).to_openssh().expect("openssh"));
        let mut a = authority(
            dir.path(),
            &format!("{}{}", line("alice", 1), line("alice", 2)),
            "",
        );
        let s1 = live("s1", "alice", 1, 5);
        let s2 = live("s2", "alice", 2, 6);
        // s1 renewed twice: session serial [5; 16], then [50; 16], now [51; 16].
        let (session, earlier, current) = (Serial([5; 16]), [Serial([50; 16])], Serial([51; 16]));
        s1.serials.set(Issued {
            session: &session,
            current: &current,
            earlier: &earlier,
        });
        let sessions = [s1, s2];
        // Each of its serials, once a list revokes it, refuses sshd's
        // lookup for that session at once (the session's own recheck may
        // not have run yet); the other session of the same principal and
        // account is still answered.
        for revoked in [session, earlier[0], current] {
            a.crl = Some(Crl {
                list_version: 2,
                issued: NOW - 10,
                next_update: NOW + 3600,
                issuer: ztssh_proto::keys::PublicKey([1; 32]),
                revoked: ztssh_proto::crl::Revocations {
                    serials: [revoked].into_iter().collect(),
                    ..Default::default()
                },
                delegation: None,
            });
            let got = answer(&sessions, "alice", None, None, &a, NOW);
            assert_eq!(got.lines.len(), 1, "{revoked}: {:?}", got);
            assert!(got.lines[0].starts_with("from=\"127.77.0.6\""), "{got:?}");
            assert_eq!(got.refused.len(), 1, "{got:?}");
            assert_eq!(got.refused[0].0, "s1");
            assert!(got.refused[0].2.contains("revoked"), "{got:?}");
            // Asked by its own key and connection, the same.
            let c = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 77, 0, 5)), 40_005);
            let got = answer(
                &sessions,
                "alice",
                Some(key(1).key_data()),
                Some(c),
                &a,
                NOW,
            );
            assert!(got.lines.is_empty(), "{got:?}");
        }
        // A serial of no session here refuses nothing.
        a.crl.as_mut().expect("crl").revoked.serials = [Serial([9; 16])].into_iter().collect();
        assert_eq!(
            answer(&sessions, "alice", None, None, &a, NOW).lines.len(),
            2
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
