//! `ztssh-sidecar setup` and SRV discovery, as a user meets them:
//! - setup on an empty HOME writes sidecar.toml, a Host block in
//!   ~/.ssh/config and the @cert-authority line, with the right modes; a
//!   second run changes nothing and says "unchanged"; `--undo` gives back
//!   the user's files byte for byte;
//! - the real ssh, reading only what setup wrote, logs in through ztssh to
//!   the private sshd and trusts its certified host key with no prompt;
//! - an SRV record `_ztssh._tcp.HOST`, served by a DNS server on loopback
//!   that the test starts (hickory-server, from a zone file), sends
//!   `ssh root@web1` (no Port line, no -p) to the proxy, in priority order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use ztssh_tests::*;

const T: Duration = Duration::from_secs(30);
const BEGIN: &str = "# >>> ztssh-sidecar setup";
const CERT: &str = "ssh_host_ed25519_key-cert.pub";

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// `ztssh-sidecar ARGS` with HOME set to `home` and nothing else of the
/// caller's leaking in.
fn sidecar_in(home: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(bin("ztssh-sidecar"));
    c.args(args)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("SSH_AUTH_SOCK");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ZTSSH_") {
            c.env_remove(k);
        }
    }
    run_bounded(&mut c, T)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The host CA line `ztssh-ca known-hosts` prints, in a file.
fn host_ca_file(ca: &Path, dir: &Path) -> PathBuf {
    let out = run_bounded(
        Command::new(bin("ztssh-ca"))
            .args(["known-hosts", "--dir"])
            .arg(ca),
        T,
    );
    assert_ok(&out, "ztssh-ca known-hosts");
    let f = dir.join("host-ca.txt");
    fs::write(&f, &out.stdout).unwrap();
    f
}

/// Every file under `dir`, with its contents.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn setup_args<'a>(root: &'a str, key: &'a str, host_ca: &'a str) -> Vec<&'a str> {
    vec![
        "setup",
        "--root",
        root,
        "--principal",
        "alice",
        "--identity",
        key,
        "--host",
        "web1",
        "--host",
        "*.corp.example",
        "--host-ca",
        host_ca,
    ]
}

#[test]
fn setup_on_an_empty_home_then_again_changes_nothing() {
    let dir = TempDir::new().unwrap();
    let ca = ca_init(dir.path());
    let key = user_key(dir.path(), "alice");
    let host_ca = host_ca_file(&ca, dir.path());
    let home = dir.path().join("home");
    fs::create_dir(&home).unwrap();
    let (root, key_s, hca) = (
        ca.join("root.pub").display().to_string(),
        key.display().to_string(),
        host_ca.display().to_string(),
    );
    let out = sidecar_in(&home, &setup_args(&root, &key_s, &hca));
    assert_ok(&out, "setup");
    assert_eq!(count(&stdout(&out), ": created"), 4, "{}", stdout(&out));

    let ssh_dir = home.join(".ssh");
    let config = ssh_dir.join("config");
    assert_eq!(mode(&ssh_dir), 0o700);
    assert_eq!(mode(&config), 0o600);
    assert_eq!(mode(&home.join(".config/ztssh")), 0o700);
    assert_eq!(mode(&home.join(".config/ztssh/sidecar.toml")), 0o600);
    assert_eq!(mode(&home.join(".config/ztssh/root.pub")), 0o600);
    assert_eq!(mode(&ssh_dir.join("known_hosts")), 0o600);
    let text = read_text(&config);
    assert_eq!(count(&text, BEGIN), 1, "{text}");
    let sidecar = bin("ztssh-sidecar").canonicalize().unwrap();
    assert!(
        text.contains(&format!(
            "Host web1 *.corp.example\n    ProxyCommand {} %h %p\n    Port 2222\n    \
             IdentityFile \"{}\"\n    IdentitiesOnly yes\nHost *\n",
            sidecar.display(),
            key.display()
        )),
        "{text}"
    );
    let kh = read_text(&ssh_dir.join("known_hosts"));
    let ca_line = read_text(&host_ca);
    let ca_key = ca_line.trim().splitn(3, ' ').nth(2).unwrap();
    assert!(
        kh.contains(&format!(
            "@cert-authority web1,[web1]:*,*.corp.example,[*.corp.example]:* {ca_key}"
        )),
        "{kh}"
    );
    let toml = read_text(&home.join(".config/ztssh/sidecar.toml"));
    let copy = home.join(".config/ztssh/root.pub");
    assert!(
        toml.contains(&format!("root = \"{}\"", copy.display())),
        "{toml}"
    );
    assert!(toml.contains("principal = \"alice\""), "{toml}");
    assert!(
        toml.contains(&format!("identity = \"{}\"", key.display())),
        "{toml}"
    );
    assert_eq!(
        fs::read(&copy).unwrap(),
        fs::read(ca.join("root.pub")).unwrap()
    );

    // ssh itself reads the block: web1 goes through ztssh, others do not.
    let g = ssh_g(&config, "web1");
    assert!(
        g.contains(&format!("proxycommand {} %h %p", sidecar.display())),
        "{g}"
    );
    assert!(!ssh_g(&config, "github.com").contains("proxycommand"));

    // Again, on its own output: nothing changes, one block, no backups.
    let before = snapshot(&home);
    let out = sidecar_in(&home, &setup_args(&root, &key_s, &hca));
    assert_ok(&out, "setup again");
    assert_eq!(count(&stdout(&out), ": unchanged"), 4, "{}", stdout(&out));
    assert_eq!(snapshot(&home), before, "a re-run must change nothing");

    // A changed request replaces the block in place: still one.
    let mut args = setup_args(&root, &key_s, &hca);
    args[8] = "web2";
    assert_ok(&sidecar_in(&home, &args), "setup with another host");
    let text = read_text(&config);
    assert_eq!(count(&text, BEGIN), 1, "{text}");
    assert!(text.contains("Host web2 *.corp.example\n"), "{text}");
    assert_eq!(
        count(&read_text(&ssh_dir.join("known_hosts")), "@cert-authority"),
        1
    );
}

/// `ssh -G HOST` with only `config`: the options ssh would use.
fn ssh_g(config: &Path, host: &str) -> String {
    let out = run_bounded(
        Command::new("ssh").arg("-F").arg(config).args(["-G", host]),
        T,
    );
    assert_ok(&out, "ssh -G");
    stdout(&out)
}

#[test]
fn setup_keeps_the_users_files_and_undo_gives_them_back() {
    let dir = TempDir::new().unwrap();
    let ca = ca_init(dir.path());
    let key = user_key(dir.path(), "alice");
    let host_ca = host_ca_file(&ca, dir.path());
    let home = dir.path().join("home");
    let ssh_dir = home.join(".ssh");
    fs::create_dir_all(&ssh_dir).unwrap();
    let user_config = "ServerAliveInterval 42\n\nHost github.com\n    User git\n";
    let user_kh = "github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    fs::write(ssh_dir.join("config"), user_config).unwrap();
    fs::set_permissions(ssh_dir.join("config"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::write(ssh_dir.join("known_hosts"), user_kh).unwrap();
    let (root, key_s, hca) = (
        ca.join("root.pub").display().to_string(),
        key.display().to_string(),
        host_ca.display().to_string(),
    );
    let out = sidecar_in(&home, &setup_args(&root, &key_s, &hca));
    assert_ok(&out, "setup");
    let report = stdout(&out);
    assert_eq!(
        count(&report, ": updated (previous version in "),
        2,
        "{report}"
    );

    // The block comes first and the user's global option still applies to
    // every host, the user's Host block to its host.
    let config = ssh_dir.join("config");
    let text = read_text(&config);
    assert!(
        text.starts_with(BEGIN) && text.ends_with(user_config),
        "{text}"
    );
    assert_eq!(mode(&config), 0o640, "the user's mode is kept");
    for host in ["web1", "github.com"] {
        assert!(
            ssh_g(&config, host).contains("serveraliveinterval 42"),
            "{host}"
        );
    }
    assert!(ssh_g(&config, "github.com").contains("user git"));
    let kh = read_text(&ssh_dir.join("known_hosts"));
    assert!(kh.starts_with(BEGIN) && kh.ends_with(user_kh), "{kh}");
    // The backups hold what was there.
    let backups: Vec<_> = fs::read_dir(&ssh_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".ztssh-bak-"))
        .collect();
    assert_eq!(backups.len(), 2, "{backups:?}");
    for b in &backups {
        let name = b.file_name().unwrap().to_string_lossy().into_owned();
        let want = if name.starts_with("config.") {
            user_config
        } else {
            user_kh
        };
        assert_eq!(read_text(b), want, "{name}");
    }

    // Undo: the user's files exactly as they were, ztssh's own files gone.
    let out = sidecar_in(&home, &["setup", "--undo"]);
    assert_ok(&out, "setup --undo");
    assert_eq!(read_text(&config), user_config);
    assert_eq!(read_text(&ssh_dir.join("known_hosts")), user_kh);
    assert!(!home.join(".config/ztssh/sidecar.toml").exists());
    assert!(!home.join(".config/ztssh/root.pub").exists());
    // Undo again: nothing left to remove.
    let out = sidecar_in(&home, &["unsetup"]);
    assert_ok(&out, "unsetup");
    assert_eq!(read_text(&config), user_config);
}

#[test]
fn a_symlinked_ssh_config_stays_a_link() {
    let dir = TempDir::new().unwrap();
    let ca = ca_init(dir.path());
    let home = dir.path().join("home");
    let dotfiles = dir.path().join("dotfiles");
    fs::create_dir_all(home.join(".ssh")).unwrap();
    fs::create_dir(&dotfiles).unwrap();
    let user_config = "Host github.com\n    User git\n";
    fs::write(dotfiles.join("ssh_config"), user_config).unwrap();
    let link = home.join(".ssh/config");
    std::os::unix::fs::symlink(dotfiles.join("ssh_config"), &link).unwrap();
    let root = ca.join("root.pub").display().to_string();
    assert_ok(
        &sidecar_in(&home, &["setup", "--root", &root, "--host", "web1"]),
        "setup",
    );
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let text = read_text(&dotfiles.join("ssh_config"));
    assert!(
        text.starts_with(BEGIN) && text.ends_with(user_config),
        "{text}"
    );
    assert_ok(&sidecar_in(&home, &["unsetup"]), "unsetup");
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(read_text(&dotfiles.join("ssh_config")), user_config);
}

#[test]
fn setup_refuses_bad_input_before_writing_anything() {
    let dir = TempDir::new().unwrap();
    let ca = ca_init(dir.path());
    let home = dir.path().join("home");
    fs::create_dir(&home).unwrap();
    let root = ca.join("root.pub").display().to_string();
    let cases: [(&[&str], &str); 4] = [
        (&["setup", "--root", &root], "name the hosts ztssh serves"),
        (
            &["setup", "--root", "/nonexistent/root.pub", "--host", "a"],
            "/nonexistent/root.pub",
        ),
        (
            &["setup", "--root", &root, "--host", "a b"],
            "one ssh Host pattern per --host",
        ),
        (
            &["setup", "--root", &root, "--host", "a", "--host-ca", &root],
            "expected one line, the output of `ztssh-ca known-hosts`",
        ),
    ];
    for (args, want) in cases {
        let out = sidecar_in(&home, args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
        assert!(snapshot(&home).is_empty(), "{args:?} wrote something");
    }
    // A user's own sidecar.toml is not overwritten.
    let own = home.join(".config/ztssh/sidecar.toml");
    fs::create_dir_all(own.parent().unwrap()).unwrap();
    fs::write(&own, "verbose = true\n").unwrap();
    let out = sidecar_in(&home, &["setup", "--root", &root, "--host", "a"]);
    assert!(
        stderr(&out).contains("was not written by setup"),
        "{}",
        stderr(&out)
    );
    assert_eq!(read_text(&own), "verbose = true\n");
    assert!(!home.join(".ssh").exists());
}

/// A world whose sshd presents a host certificate for localhost and web1.
fn certified_world() -> World {
    World::builder()
        .sshd_config(&format!("HostCertificate {{dir}}/{CERT}\n"))
        .before_start(|pki, dir| {
            sshd_host_key(dir);
            let out = run_bounded(
                Command::new(bin("ztssh-ca"))
                    .arg("sign-host")
                    .arg("--dir")
                    .arg(&pki.ca)
                    .args(["--host-key", "ssh_host_ed25519_key.pub", "--out", CERT])
                    .args(["--hostname", "localhost", "--hostname", "web1"])
                    .current_dir(dir),
                T,
            );
            assert_ok(&out, "sign-host");
        })
        .start()
}

/// The real ssh with only setup's files: `-F` its config, its known_hosts
/// (ssh takes ~ from the password database, not HOME, so the file is
/// named), strict host key checking, and HOME for the sidecar to find
/// sidecar.toml. No `-i` and no agent: the key sshd sees and the port come
/// from setup's block (`IdentityFile`, `Port`).
fn ssh_as_set_up(home: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let ssh_dir = home.join(".ssh");
    let mut c = Command::new("ssh");
    c.arg("-F")
        .arg(ssh_dir.join("config"))
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            ssh_dir.join("known_hosts").display()
        ))
        .args(["-o", "GlobalKnownHostsFile=/dev/null"])
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"])
        .args(args)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("SSH_AUTH_SOCK");
    for (k, v) in env {
        c.env(k, v);
    }
    run_bounded(&mut c, T)
}

#[test]
fn ssh_logs_in_with_only_what_setup_wrote() {
    let w = certified_world();
    let home = w.dir.path().join("home");
    fs::create_dir(&home).unwrap();
    let host_ca = host_ca_file(&w.pki.ca, w.dir.path());
    let (root, key, hca) = (
        w.pki.root_pub().display().to_string(),
        w.alice.display().to_string(),
        host_ca.display().to_string(),
    );
    let out = sidecar_in(
        &home,
        &[
            "setup",
            "--root",
            &root,
            "--principal",
            "alice",
            "--identity",
            &key,
            "--host",
            "localhost",
            "--host-ca",
            &hca,
            "--port",
            &w.proxy.port.to_string(),
        ],
    );
    assert_ok(&out, "setup");
    let kh_before = read_text(&home.join(".ssh/known_hosts"));
    let out = ssh_as_set_up(&home, &[], &["root@localhost", "echo set-up"]);
    assert_ok(&out, "ssh with setup's files");
    assert_eq!(stdout(&out), "set-up\n");
    assert_eq!(
        read_text(&home.join(".ssh/known_hosts")),
        kh_before,
        "the certified host key needed no known_hosts entry of its own"
    );
    assert_ok(&sidecar_in(&home, &["setup", "--undo"]), "undo");
    assert!(
        !home.join(".ssh/config").exists(),
        "setup created it, undo removed it"
    );
}

/// An authoritative DNS server for `origin` on 127.0.0.1 (UDP and TCP,
/// one port), serving `zone` (zone-file text); it stops when dropped.
struct Dns {
    port: u16,
    _rt: tokio::runtime::Runtime,
}

fn start_dns(dir: &Path, origin: &str, zone: &str) -> Dns {
    use hickory_server::Server;
    use hickory_server::proto::rr::{LowerName, Name};
    use hickory_server::store::file::{FileConfig, FileZoneHandler};
    use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};

    let zone_path = dir.join(format!("{origin}zone"));
    fs::write(&zone_path, zone).unwrap();
    let name = Name::from_ascii(origin).unwrap();
    let handler = FileZoneHandler::try_from_config(
        name.clone(),
        ZoneType::Primary,
        AxfrPolicy::Deny,
        None,
        &FileConfig { zone_path },
    )
    .expect("zone file");
    let mut catalog = Catalog::new();
    catalog.upsert(LowerName::new(&name), vec![Arc::new(handler)]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let port = rt.block_on(async move {
        let mut server = Server::new(catalog);
        // UDP and TCP on one port: a few tries, in case another test took
        // the TCP port in between.
        let mut bound = None;
        for _ in 0..20 {
            let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let port = udp.local_addr().unwrap().port();
            if let Ok(tcp) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                bound = Some((udp, tcp, port));
                break;
            }
        }
        let (udp, tcp, port) = bound.expect("a free UDP and TCP port");
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 4096);
        tokio::spawn(async move { server.block_until_done().await });
        port
    });
    Dns { port, _rt: rt }
}

fn soa(origin: &str) -> String {
    format!(
        "$ORIGIN {origin}\n$TTL 60\n@ IN SOA ns.{origin} admin.{origin} 1 60 60 60 60\n@ IN NS ns.{origin}\nns IN A 127.0.0.1\n"
    )
}

#[test]
fn srv_record_finds_the_proxy_with_no_port_line() {
    let w = World::start();
    // Priority 10 is the proxy; priority 20 is sshd itself, which speaks
    // no ztssh: reached first, the login would fail. The proxy's target is
    // localhost, which this DNS server does not serve: /etc/hosts answers.
    let zone = format!(
        "{}_ztssh._tcp IN SRV 20 50 {} ns.web1.\n_ztssh._tcp IN SRV 10 50 {} localhost.\n\
         none IN A 127.0.0.1\n_ztssh._tcp.none IN SRV 0 0 0 .\n@ IN A 127.0.0.1\n",
        soa("web1."),
        w.sshd.port,
        w.proxy.port
    );
    let dns = start_dns(w.dir.path(), "web1.", &zone);
    let servers = format!("[\"127.0.0.1:{}\"]", dns.port);
    let mut c = Command::new("ssh");
    c.args(w.client_opts(&w.alice, "-v"))
        .args(["root@web1", "echo found-by-srv"])
        .env("ZTSSH_DNS_SERVERS", &servers);
    let out = run_bounded(&mut c, T);
    assert_ok(&out, "ssh root@web1 through SRV");
    assert_eq!(stdout(&out), "found-by-srv\n");
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "SRV _ztssh._tcp.web1: localhost:{}, ns.web1:{}",
            w.proxy.port, w.sshd.port
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("connected to 127.0.0.1:{}", w.proxy.port)),
        "{err}"
    );

    // An explicit port beats SRV: web1's A record, at the port given.
    let mut c = Command::new("ssh");
    c.args(w.client_opts(&w.alice, "-v"))
        .args([
            "-p",
            &w.proxy.port.to_string(),
            "root@web1",
            "echo explicit",
        ])
        .env("ZTSSH_DNS_SERVERS", &servers);
    let out = run_bounded(&mut c, T);
    assert_ok(&out, "ssh -p PORT root@web1");
    assert!(!stderr(&out).contains("SRV"), "{}", stderr(&out));

    // A target of "." says the service is not offered: a clear refusal.
    let out = sidecar_for(&w, "none.web1", &servers, &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("none.web1 says it offers no ztssh service"),
        "{}",
        stderr(&out)
    );

    // A DNS server that never answers: bounded, and the error says what
    // the SRV lookup found as well as why the fallback failed.
    let mute = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = format!("[\"{}\"]", mute.local_addr().unwrap());
    let out = sidecar_for(&w, "web1", &silent, &[("ZTSSH_DNS_TIMEOUT_SECS", "1")]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("cannot resolve web1"), "{err}");
    assert!(err.contains("SRV lookup of _ztssh._tcp.web1"), "{err}");
}

/// The sidecar alone for `host` port 22 (as ssh with no Port line runs
/// it), asking only `servers`.
fn sidecar_for(w: &World, host: &str, servers: &str, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(bin("ztssh-sidecar"));
    c.arg("--root")
        .arg(w.pki.root_pub())
        .arg("--identity")
        .arg(&w.alice)
        .args(["--principal", "alice", host, "22"])
        .env("ZTSSH_DNS_SERVERS", servers)
        .env_remove("ZTSSH_CONNECT");
    for (k, v) in env {
        c.env(k, v);
    }
    run_bounded(&mut c, T)
}
