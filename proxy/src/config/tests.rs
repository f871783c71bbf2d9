//! Every setting is documented in `config-examples/proxy.toml` and can be
//! set from the environment; the key lists come from the types themselves,
//! so a new field cannot be forgotten.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde::de::value::Error as DeError;
use serde::de::{Deserialize, Deserializer, Error as _, Visitor};

use super::*;

/// The example as operators read it.
const EXAMPLE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../config-examples/proxy.toml"
));

/// A deserializer that only records the field names serde's derive passes
/// to `deserialize_struct` (after any renames), then stops.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, DeError> {
        Err(DeError::custom("only a struct's field names are recorded"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, DeError> {
        *self.0 = fields;
        Err(DeError::custom("field names recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// The keys of a settings struct, as its `Deserialize` knows them.
fn keys<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldNames(&mut fields));
    assert!(
        !fields.is_empty(),
        "{} is not a struct",
        std::any::type_name::<T>()
    );
    fields
}

/// The example with every commented-out setting (`# key = value`, the way
/// it documents optional ones) switched on, where it stands, and the
/// commented-out tables they belong to (`# [[workload_issuer]]`).
fn example_with_every_setting() -> toml::Table {
    let uncommented: Vec<&str> = EXAMPLE
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if is_setting(rest) || rest.starts_with("[[") => rest,
            _ => line,
        })
        .collect();
    let text = uncommented.join("\n");
    // Every documented value is one the proxy takes.
    toml::from_str::<Settings>(&text).expect("the example, every setting on, is a valid config");
    text.parse().expect("TOML")
}

/// `key = value`: a lower-case key, then ` = `.
fn is_setting(line: &str) -> bool {
    line.split_once(" = ").is_some_and(|(key, _)| {
        !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    })
}

fn missing<'a>(want: &[&'a str], have: impl Fn(&str) -> bool) -> Vec<&'a str> {
    want.iter().copied().filter(|k| !have(k)).collect()
}

#[test]
fn field_names_come_from_the_type() {
    let settings = keys::<Settings>();
    assert!(settings.contains(&"listen") && settings.contains(&"limits"));
    assert_eq!(
        settings.len(),
        settings
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    );
}

#[test]
fn every_setting_is_in_the_example() {
    let example = example_with_every_setting();
    let absent = missing(keys::<Settings>(), |k| example.contains_key(k));
    assert!(
        absent.is_empty(),
        "config-examples/proxy.toml does not document {absent:?} (set, or as `# key = value`)"
    );
    for (table, fields) in [
        ("limits", keys::<LimitSettings>()),
        ("penalties", keys::<PenaltySettings>()),
    ] {
        let t = example[table].as_table().expect("a table");
        let absent = missing(fields, |k| t.contains_key(k));
        assert!(
            absent.is_empty(),
            "config-examples/proxy.toml's [{table}] does not document {absent:?}"
        );
    }
    let issuer = &example["workload_issuer"][0];
    let absent = missing(keys::<workload::IssuerSettings>(), |k| {
        issuer.get(k).is_some()
    });
    assert!(
        absent.is_empty(),
        "config-examples/proxy.toml's [[workload_issuer]] does not document {absent:?}"
    );
    let rule = &issuer["rule"][0];
    let absent = missing(keys::<workload::RuleSettings>(), |k| rule.get(k).is_some());
    assert!(
        absent.is_empty(),
        "config-examples/proxy.toml's [[workload_issuer.rule]] does not document {absent:?}"
    );
}

#[test]
fn every_setting_but_a_table_can_come_from_the_environment() {
    let example = example_with_every_setting();
    let settings = keys::<Settings>();
    let tables: Vec<&str> = settings
        .iter()
        .copied()
        .filter(|k| {
            example.get(*k).is_some_and(|v| {
                v.is_table()
                    || v.as_array()
                        .is_some_and(|a| a.iter().all(toml::Value::is_table))
            })
        })
        .collect();
    assert_eq!(tables, ["limits", "penalties", "workload_issuer"]);
    let absent = missing(settings, |k| tables.contains(&k) || ENV_KEYS.contains(&k));
    assert!(absent.is_empty(), "ENV_KEYS lacks {absent:?}");
    let unknown = missing(ENV_KEYS, |k| settings.contains(&k) && !tables.contains(&k));
    assert!(
        unknown.is_empty(),
        "ENV_KEYS names {unknown:?}, not settings"
    );
}

#[test]
fn the_setting_detector_reads_the_example_as_written() {
    assert!(is_setting(r#"metrics_listen = "127.0.0.1:9469""#));
    assert!(is_setting(
        "handshakes_per_56 = 16   # default: a quarter of max_handshakes"
    ));
    assert!(!is_setting("Off unless set; keep it on a private address."));
    assert!(!is_setting("\"text\" for people = nonsense"));
    assert!(!is_setting(" = 1"));
}

/// A refused word reads exactly as before these settings were enums,
/// whichever source it came from; anything else still names the file.
#[test]
fn a_refused_word_is_its_own_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    let base = "listen = \"127.0.0.1:1\"\nupstream = \"127.0.0.1:2\"\nstate_dir = \"/s\"\n\
                licence = \"/l\"\nroot_public_key = \"/r\"\nauthorized_principals = \"/a\"\n";
    let read = |extra: &str, overrides: &Overrides| {
        std::fs::write(&path, format!("{base}{extra}")).unwrap();
        settings(&path, overrides)
    };
    let s = read("", &Overrides::default()).unwrap();
    assert_eq!(
        (s.log_format, s.cover_traffic, s.revocation_stale),
        (LogFormat::Text, CoverTraffic::Off, StaleMode::Warn)
    );
    let s = read(
        "log_format = \"json\"\ncover_traffic = \"interactive\"\nrevocation_stale = \"close-all\"\n",
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(
        (s.log_format, s.cover_traffic, s.revocation_stale),
        (
            LogFormat::Json,
            CoverTraffic::Interactive,
            StaleMode::CloseAll
        )
    );
    for (extra, want) in [
        (
            "log_format = \"xml\"\n",
            r#"log_format = "xml": use "text" or "json""#,
        ),
        (
            "cover_traffic = \"always\"\n",
            r#"cover_traffic = "always": use "off" or "interactive""#,
        ),
        (
            "revocation_stale = \"fail-closed\"\n",
            r#"revocation_stale = "fail-closed": use "warn", "refuse-new" or "close-all""#,
        ),
    ] {
        let e = read(extra, &Overrides::default()).unwrap_err();
        assert_eq!(e.to_string(), want);
    }
    let flag = Overrides {
        log_format: Some("yaml".into()),
        ..Overrides::default()
    };
    assert_eq!(
        read("", &flag).unwrap_err().to_string(),
        r#"log_format = "yaml": use "text" or "json""#
    );
    let e = read("log_format = 1\n", &Overrides::default()).unwrap_err();
    assert!(
        e.to_string().starts_with(&format!("{}: ", path.display())),
        "{e}"
    );
}

/// Unknown keys are named at their `FILE:LINE`, all of them at once, each
/// with the key it is most likely a typo of: not serde's list of every
/// key with figment's `default.` prefix.
#[test]
fn unknown_keys_are_reported_at_their_lines_with_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    let (head, tail) = EXAMPLE.split_once("\n[").expect("a table in the example");
    let text = format!("{head}\nlisen = \"x\"\nupstream_timeout_secs = 3\n[{tail}");
    std::fs::write(&path, &text).unwrap();
    let line = |key: &str| {
        let text = std::fs::read_to_string(&path).unwrap();
        text.lines()
            .position(|l| l.starts_with(key))
            .map(|i| i + 1)
            .unwrap()
    };
    let e = settings(&path, &Overrides::default()).err().unwrap().0;
    let p = path.display();
    assert_eq!(
        e,
        format!(
            "{p}:{}: unknown key `lisen`; did you mean `listen`?\n\
             {p}:{}: unknown key `upstream_timeout_secs`; remove it (config-examples/ has every key, commented)",
            line("lisen"),
            line("upstream_timeout_secs")
        )
    );
    assert!(!e.contains("default."), "{e}");
    let text = EXAMPLE.replacen("[limits]\n", "[limits]\nrate_per_minuet = 5\n", 1);
    std::fs::write(&path, &text).unwrap();
    let e = settings(&path, &Overrides::default()).err().unwrap().0;
    assert_eq!(
        e,
        format!(
            "{p}:{}: unknown key `limits.rate_per_minuet`; did you mean `rate_per_minute`?",
            line("rate_per_minuet")
        )
    );
}

#[test]
fn a_trusted_user_ca_file_mistake_is_named_at_its_line() {
    use crate::trust::authority::read_user_cas;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("user_ca.pub");
    let ca = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDmTo3zNUKgxh4zeQ5hiudgy6TQGyj+MaRqeVdTqHtuO ca";
    std::fs::write(&path, format!("# user CA\n{ca}\n")).expect("write");
    assert_eq!(read_user_cas(&path).expect("one CA").len(), 1);
    std::fs::write(&path, format!("{ca}\ncert-authority {ca}\n")).expect("write");
    let e = read_user_cas(&path).expect_err("options");
    assert!(
        e.starts_with(&format!("{}:2: not an OpenSSH public key", path.display())),
        "{e}"
    );
    std::fs::write(&path, "# nothing yet\n").expect("write");
    let e = read_user_cas(&path).expect_err("empty");
    assert!(e.contains(":1: no CA key in the file"), "{e}");
    let e = read_user_cas(&dir.path().join("missing.pub")).expect_err("missing");
    assert!(e.starts_with("trusted_user_ca_keys: "), "{e}");
}

/// Issue 23, getting around the fork refusal with a restart: the list kept
/// in `revocation_cache` went into force (the fork, written to the file
/// afterwards, was refused); a restart must not trade it for the file's.
#[test]
fn a_restart_keeps_the_cached_list_in_force_over_a_fork_in_the_file() {
    use ztssh_proto::crl::Revocations;
    let root = SigningKey::generate(&mut rand_core::UnwrapErr(getrandom::SysRng));
    let list = |banned: &str| Crl {
        list_version: 2,
        issued: 10,
        next_update: 20,
        issuer: root.public(),
        revoked: Revocations {
            principals: [banned.to_owned()].into_iter().collect(),
            ..Default::default()
        },
        delegation: None,
    };
    let (in_force, fork) = (list("alice"), list("mallory"));
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("crl-cache.pem");
    let pem = ztssh_proto::armor::encode(pem::CRL, &in_force.sign(&root).unwrap()).expect("armour");
    std::fs::write(&cache, pem).unwrap();
    let at_start = newer_cached(
        Some(fork.clone()),
        Some(&cache),
        &root.public().into(),
        0,
        Read::AtStart,
    );
    assert_eq!(at_start.as_ref(), Some(&in_force), "the cached list stays");
    // At a reload the file's list goes to the list in force to be refused
    // (and counted) there.
    let at_reload = newer_cached(
        Some(fork.clone()),
        Some(&cache),
        &root.public().into(),
        0,
        Read::AtReload,
    );
    assert_eq!(at_reload.as_ref(), Some(&fork));
    assert_eq!(
        trust::offer(at_start.as_ref(), &fork),
        ListUpdate::Forked { version: 2 }
    );
    // The same list, or a newer one in the file, as before.
    assert_eq!(
        newer_cached(
            Some(in_force.clone()),
            Some(&cache),
            &root.public().into(),
            0,
            Read::AtStart
        ),
        Some(in_force.clone())
    );
    let mut newer = fork;
    newer.list_version = 3;
    assert_eq!(
        newer_cached(
            Some(newer.clone()),
            Some(&cache),
            &root.public().into(),
            0,
            Read::AtStart
        ),
        Some(newer)
    );
}

#[test]
fn a_list_file_above_the_delegated_ceiling_is_refused_at_start() {
    use ztssh_proto::cert::Serial;
    use ztssh_proto::delegation::{DelegationBody, Purpose};
    let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
    let root = SigningKey::generate(&mut rng);
    let online = SigningKey::generate(&mut rng);
    let delegation = DelegationBody {
        serial: Serial::random(&mut rng),
        purpose: Purpose::Revocations,
        key: online.public(),
        servers: Vec::new(),
        not_before: 0,
        not_after: u64::MAX,
        issuer: root.public(),
    }
    .sign(&root)
    .expect("delegate");
    let list = |list_version, delegation| Crl {
        list_version,
        issued: 10,
        next_update: 20,
        issuer: online.public(),
        revoked: Default::default(),
        delegation,
    };
    let path = Path::new("/etc/ztssh/crl.pem");
    let top = trust::MAX_DELEGATED_VERSION;
    let e = within_delegated_ceiling(
        path,
        &list(top + 1, Some(delegation.clone())),
        "revocation list",
        "crl",
    )
    .expect_err("above the ceiling");
    assert!(
        e.starts_with("/etc/ztssh/crl.pem: revocation list version")
            && e.contains("ztssh-ca crl --dir CA")
            && e.contains("revoke the delegation"),
        "{e}"
    );
    // At the ceiling, or the root's own list at any version, it stands.
    within_delegated_ceiling(path, &list(top, Some(delegation)), "revocation list", "crl")
        .expect("at the ceiling");
    within_delegated_ceiling(path, &list(u64::MAX, None), "revocation list", "crl")
        .expect("the root's");
}
