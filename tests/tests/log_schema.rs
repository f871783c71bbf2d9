//! The JSON log against its documented schema (docs/OPERATOR.md §7, the
//! block after `<!-- log-schema`): real lines from a real proxy in front of
//! a real sshd (a normal session that carries data, a refused key, a kill
//! by the revocation list, a reload), each checked against the schema of
//! its event, with `server_id` on every line, one span field, and every
//! value its message names also a field of its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use ztssh_tests::*;

const T: Duration = Duration::from_secs(60);

/// The schema block of docs/OPERATOR.md.
fn schema() -> Value {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/OPERATOR.md"))
        .expect("OPERATOR.md");
    let from = doc
        .find("<!-- log-schema")
        .expect("OPERATOR.md has no log-schema block");
    let rest = &doc[from..];
    let start = rest.find("```json\n").expect("```json after the marker") + 8;
    let len = rest[start..].find("```").expect("end of the block");
    serde_json::from_str(&rest[start..start + len]).expect("the log schema is JSON")
}

/// Whether `v` is of the schema type `ty`.
fn is_type(v: &Value, ty: &str) -> bool {
    match ty {
        "string" => v.is_string(),
        "integer" => v.is_u64(),
        "object" => v.is_object(),
        other => panic!("the log schema uses type {other:?}, which this test does not know"),
    }
}

/// Checks one object against a schema of this subset (type, required,
/// properties; nothing beyond the properties listed in `schemas`).
fn check(line: &Value, schemas: &[&Value], what: &str) -> Result<(), String> {
    let obj = line.as_object().ok_or(format!("{what}: not an object"))?;
    let mut props = BTreeMap::new();
    for s in schemas {
        for r in s["required"].as_array().into_iter().flatten() {
            let r = r.as_str().expect("required names");
            if !obj.contains_key(r) {
                return Err(format!("{what}: no required field {r:?}"));
            }
        }
        if let Some(p) = s["properties"].as_object() {
            props.extend(p.iter());
        }
    }
    for (k, v) in obj {
        let Some(p) = props.get(k) else {
            return Err(format!("{what}: field {k:?} is not in the schema"));
        };
        let ty = p["type"].as_str().expect("type");
        if !is_type(v, ty) {
            return Err(format!("{what}: field {k:?} is {v}, not {ty}"));
        }
        if ty == "object" && p.get("properties").is_some() {
            check(v, &[p], &format!("{what}.{k}"))?;
        }
    }
    Ok(())
}

/// The values a message names that no field holds: numbers standing alone,
/// `SHA256:` fingerprints and IPv4 addresses (with or without a port).
fn values_only_in_message(line: &Value) -> Vec<String> {
    let obj = line.as_object().expect("object");
    let msg = obj["message"].as_str().unwrap_or_default();
    let mut words: Vec<String> = Vec::new();
    let mut collect = |v: &Value| match v {
        Value::String(s) => {
            words.push(s.clone());
            words.extend(
                s.split(|c: char| !c.is_ascii_alphanumeric() && !"+/:.".contains(c))
                    .map(str::to_owned),
            );
            words.extend(
                s.split(|c: char| !c.is_ascii_alphanumeric())
                    .map(str::to_owned),
            );
        }
        Value::Number(n) => words.push(n.to_string()),
        _ => {}
    };
    for (k, v) in obj {
        if k == "message" {
            continue;
        }
        if let Value::Object(span) = v {
            span.values().for_each(&mut collect);
        } else {
            collect(v);
        }
    }
    let mut missing = Vec::new();
    for raw in msg.split(|c: char| c.is_whitespace() || "(),;'\"[]{}=".contains(c)) {
        let token = raw.trim_end_matches(['.', ':']);
        let named = token.starts_with("SHA256:")
            || (!token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()))
            || (token.split('.').count() == 4
                && token
                    .split(['.', ':'])
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())));
        if named && !words.iter().any(|w| w == token) {
            missing.push(token.to_owned());
        }
    }
    missing
}

fn fingerprint(key: &std::path::Path) -> String {
    let out = run_bounded(
        Command::new("ssh-keygen")
            .arg("-lf")
            .arg(key.with_extension("pub")),
        T,
    );
    assert_ok(&out, "ssh-keygen -lf");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_owned()
}

#[test]
fn real_log_lines_match_the_documented_schema() {
    let schema = schema();
    let w = World::builder()
        .proxy_toml("log_format = \"json\"\n")
        .start();
    // A session that carries 100,000 bytes from sshd to the client.
    let out = run_bounded(w.ssh().arg("head -c 100000 /dev/zero"), T);
    assert_ok(&out, "ssh head -c 100000");
    assert_eq!(out.stdout.len(), 100_000);
    w.proxy.wait_log("\"session_closed\"", T);
    // A key no principal has.
    let mallory = user_key(w.dir.path(), "mallory");
    assert!(
        !run_bounded(w.ssh_with_key(&mallory).arg("true"), T)
            .status
            .success()
    );
    w.proxy.wait_log("\"authorization_denied\"", T);
    // A live session, killed by the revocation list.
    let mut live = w.ssh();
    live.arg("sleep 60")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let live = Guard(live.spawn().expect("ssh"));
    w.proxy.wait_log("\"cert_issued\"", T);
    wait_until(T, "the second session's cert_issued", || {
        count(&w.proxy.log_text(), "\"cert_issued\"") == 2
    });
    w.pki.revoke("principal", "alice");
    w.pki.publish_crl();
    w.proxy.wait_log("\"session_terminated\"", T);
    drop(live);
    // A reload.
    w.proxy.sighup();
    w.proxy.wait_log("\"reload\"", T);

    let log = w.proxy.log_text();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let common = &schema["common"];
    let mut seen = BTreeMap::<String, Vec<&Value>>::new();
    for line in &lines {
        let event = line["event"]
            .as_str()
            .unwrap_or_else(|| panic!("no event: {line}"));
        let event_schema = schema["events"]
            .get(event)
            .unwrap_or_else(|| panic!("event {event} is not in OPERATOR.md's log schema: {line}"));
        if let Err(e) = check(line, &[common, event_schema], event) {
            panic!("{e}\n{line}");
        }
        assert_eq!(line["server_id"], "web1", "{line}");
        assert!(line.get("spans").is_none(), "{line}");
        if event != "listening" {
            let missing = values_only_in_message(line);
            assert!(
                missing.is_empty(),
                "{event}: {missing:?} only in the message: {line}"
            );
        }
        seen.entry(event.to_owned()).or_default().push(line);
    }
    for event in [
        "listening",
        "connection_accepted",
        "authorized",
        "upstream_connected",
        "cert_issued",
        "upstream_closed",
        "session_closed",
        "authorization_denied",
        "session_terminated",
        "crl_loaded",
        "reload",
    ] {
        assert!(seen.contains_key(event), "no {event} line in:\n{log}");
    }
    // What a SIEM needs of these, beyond their types.
    let closed = seen["session_closed"][0];
    assert!(closed["bytes_out"].as_u64().unwrap() >= 100_000, "{closed}");
    assert!(closed["bytes_in"].as_u64().unwrap() > 0, "{closed}");
    assert_eq!(closed["principal"], "alice");
    let killed = seen["session_terminated"][0];
    assert_eq!(killed["reason"], "principal_banned", "{killed}");
    assert!(killed["bytes_out"].as_u64().is_some(), "{killed}");
    let denied = seen["authorization_denied"][0];
    assert_eq!(denied["user_key"], fingerprint(&mallory), "{denied}");
    assert_eq!(denied["principal"], "alice", "{denied}");
    for e in seen.values().flatten() {
        if let Some(span) = e.get("span") {
            assert_eq!(span["name"], "session", "{e}");
        }
    }
}

#[test]
fn text_lines_carry_the_server_id_too() {
    let w = World::start();
    assert_ok(&run_bounded(w.ssh().arg("true"), T), "ssh");
    w.proxy.wait_log("session_closed", T);
    let log = w.proxy.log_text();
    let closed = log
        .lines()
        .find(|l| l.contains("session_closed"))
        .expect("session_closed");
    assert!(closed.ends_with(" server_id=web1"), "{closed}");
    assert!(closed.contains("duration_secs="), "{closed}");
    assert!(closed.contains("bytes_out="), "{closed}");
}

#[test]
fn the_schema_lists_every_event_the_proxy_logs() {
    let schema = schema();
    let events = schema["events"].as_object().expect("events");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/../proxy/src");
    let mut missing = Vec::new();
    let mut stack = vec![std::path::PathBuf::from(src)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("proxy/src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("source");
            for part in text.split("event = \"").skip(1) {
                let name = part.split('"').next().unwrap_or_default();
                if !events.contains_key(name) {
                    missing.push(format!("{name} ({})", path.display()));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "events missing from OPERATOR.md's log schema: {missing:?}"
    );
}
