//! The policy file: TOML read through serde with byte spans, so every
//! mistake names the line of the key or value at fault. Shape mistakes
//! (syntax, unknown keys, wrong types) carry the span the TOML parser gives
//! them, and the key path found at that span in the spanned document;
//! value mistakes carry the span of the value they are about.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;
use ztssh_proto::cert::{MAX_PRINCIPAL, check_name};

use super::{Hours, MAX_ENTRIES, Policy, PolicyError, Rule, parse_net};
use crate::trust::authz::printable;

/// A list of strings, each with its place.
type List = Spanned<Vec<Spanned<String>>>;

/// An allow list and a deny list, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table with allow and deny lists")]
struct RawLists {
    allow: Option<List>,
    deny: Option<List>,
}

/// One principal's extra rules, as written.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table of sources, max_sessions, hours_utc, accounts, require_presence, require_verification and reverify_interval_secs"
)]
struct RawRule {
    sources: Option<List>,
    max_sessions: Option<Spanned<u32>>,
    hours_utc: Option<List>,
    accounts: Option<List>,
    require_presence: Option<bool>,
    require_verification: Option<bool>,
    reverify_interval_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    principals: RawLists,
    #[serde(default)]
    sources: RawLists,
    #[serde(default)]
    principal: BTreeMap<Spanned<String>, RawRule>,
}

/// What is wrong, and the bytes of the text it is about.
struct Mistake {
    at: Range<usize>,
    why: String,
}

/// Parses and checks a policy.
pub(super) fn parse(text: &str) -> Result<Policy, PolicyError> {
    let raw: RawPolicy = toml::from_str(text).map_err(|e| shape_error(text, &e))?;
    from_raw(raw).map_err(|m| PolicyError {
        line: Some(line_at(text, m.at.start)),
        reason: m.why,
    })
}

/// A syntax error, an unknown key or a value of the wrong type, on one line.
fn shape_error(text: &str, e: &toml::de::Error) -> PolicyError {
    // One line, and no control character from a quoted key.
    let what = e
        .message()
        .lines()
        .map(|l| printable(l.trim()))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let Some(at) = e.span() else {
        return PolicyError {
            line: None,
            reason: what,
        };
    };
    // The parser says nothing when the text ends where a value should be.
    let what = if what.is_empty() {
        let column = at.start
            - text
                .get(..at.start)
                .and_then(|t| t.rfind('\n'))
                .map_or(0, |n| n + 1)
            + 1;
        format!("not valid TOML (column {column})")
    } else {
        what
    };
    let reason = match path_at(text, at.start) {
        Some(path) => format!("{path}: {what}"),
        None => what,
    };
    PolicyError {
        line: Some(line_at(text, at.start)),
        reason,
    }
}

/// The 1-based line holding byte `offset`.
fn line_at(text: &str, offset: usize) -> usize {
    text.bytes().take(offset).filter(|&b| b == b'\n').count() + 1
}

/// The dotted path of the key at byte `at`, or of the key whose value lies
/// there. `None` when the text does not parse (a syntax error has no key).
fn path_at(text: &str, at: usize) -> Option<String> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut path = Vec::new();
    find(doc.as_item(), at, &mut path).then(|| path.join("."))
}

fn covers(span: Option<Range<usize>>, at: usize) -> bool {
    span.is_some_and(|s| s.start <= at && at < s.end.max(s.start + 1))
}

/// Depth first, so the innermost key wins; array elements count as their
/// array's key.
fn find(item: &toml_edit::Item, at: usize, path: &mut Vec<String>) -> bool {
    if let Some(tables) = item.as_array_of_tables() {
        return tables
            .iter()
            .any(|t| find_in(t, at, path) || covers(t.span(), at));
    }
    let inside = item.as_table_like().is_some_and(|t| find_in(t, at, path));
    inside || covers(item.span(), at)
}

fn find_in(table: &dyn toml_edit::TableLike, at: usize, path: &mut Vec<String>) -> bool {
    for (name, child) in table.iter() {
        path.push(key_name(name));
        let key_span = table.get_key_value(name).and_then(|(k, _)| k.span());
        if covers(key_span, at) || find(child, at, path) {
            return true;
        }
        path.pop();
    }
    false
}

/// A key as it would be written: bare when it can be, else quoted.
fn key_name(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        name.to_owned()
    } else {
        format!("{name:?}")
    }
}

/// Checks every entry.
fn from_raw(raw: RawPolicy) -> Result<Policy, Mistake> {
    let principals_allow = (raw.principals.allow)
        .map(|l| principal_set(l, "principals.allow"))
        .transpose()?;
    let principals_deny = (raw.principals.deny)
        .map(|l| principal_set(l, "principals.deny"))
        .transpose()?
        .unwrap_or_default();
    let sources_allow = (raw.sources.allow)
        .map(|l| nets(l, "sources.allow"))
        .transpose()?;
    let sources_deny = (raw.sources.deny)
        .map(|l| nets(l, "sources.deny"))
        .transpose()?
        .unwrap_or_default();
    if raw.principal.len() > MAX_ENTRIES {
        // Point at the last rule in the file.
        let at = raw
            .principal
            .keys()
            .map(Spanned::span)
            .max_by_key(|s| s.start);
        return Err(Mistake {
            at: at.unwrap_or_default(),
            why: format!("more than {MAX_ENTRIES} per-principal rules"),
        });
    }
    let mut rules = BTreeMap::new();
    for (name, r) in raw.principal {
        let at = name.span();
        let name = name.into_inner();
        check_name(&name, MAX_PRINCIPAL, "principal").map_err(|e| Mistake {
            at,
            why: format!("[principal.{name:?}]: {e}"),
        })?;
        let rule = rule(&name, r)?;
        rules.insert(name, rule);
    }
    Ok(Policy {
        principals_allow,
        principals_deny,
        sources_allow,
        sources_deny,
        rules,
    })
}

fn rule(name: &str, r: RawRule) -> Result<Rule, Mistake> {
    let key = |what: &str| format!("principal.{name}.{what}");
    let sources = r.sources.map(|l| nets(l, &key("sources"))).transpose()?;
    if let Some(m) = &r.max_sessions
        && *m.get_ref() == 0
    {
        return Err(Mistake {
            at: m.span(),
            why: format!(
                "{} = 0 would lock {name} out; deny the principal instead",
                key("max_sessions")
            ),
        });
    }
    let hours = (r.hours_utc)
        .map(|l| hour_list(l, &key("hours_utc")))
        .transpose()?;
    let accounts = (r.accounts)
        .map(|l| account_list(l, &key("accounts")))
        .transpose()?;
    Ok(Rule {
        sources,
        max_sessions: r.max_sessions.map(Spanned::into_inner),
        hours,
        accounts,
        require_presence: r.require_presence,
        require_verification: r.require_verification,
        reverify_interval_secs: r.reverify_interval_secs,
    })
}

/// Checks every entry of a list with `parse`, which says what is wrong
/// with one entry; an empty list is a mistake when `if_empty` says why.
fn each<T>(
    list: List,
    key: &str,
    if_empty: Option<&str>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, Mistake> {
    bounded(&list, key)?;
    if let Some(why) = if_empty.filter(|_| list.get_ref().is_empty()) {
        return Err(Mistake {
            at: list.span(),
            why: format!("{key} = [] {why}"),
        });
    }
    list.into_inner()
        .into_iter()
        .map(|s| {
            parse(s.get_ref()).map_err(|why| Mistake {
                at: s.span(),
                why: format!("{key}: {why}"),
            })
        })
        .collect()
}

fn account_list(list: List, key: &str) -> Result<Vec<String>, Mistake> {
    let empty = "allows no account; deny the principal instead";
    each(list, key, Some(empty), |a| {
        crate::trust::authz::check_account(a).map(|()| a.to_owned())
    })
}

fn nets(list: List, key: &str) -> Result<Vec<IpNet>, Mistake> {
    let empty = "admits nobody; remove the key to admit any source";
    let if_empty = (!key.ends_with("deny")).then_some(empty);
    each(list, key, if_empty, |s| {
        parse_net(s).map_err(|why| format!("{s:?} is not a network: {why}"))
    })
}

fn hour_list(list: List, key: &str) -> Result<Vec<Hours>, Mistake> {
    let empty = "allows no time at all; remove it to allow any time";
    each(list, key, Some(empty), Hours::parse)
}

/// At most [`MAX_ENTRIES`]; an error points at the first one too many.
fn bounded(list: &List, key: &str) -> Result<(), Mistake> {
    match list.get_ref().get(MAX_ENTRIES) {
        Some(extra) => Err(Mistake {
            at: extra.span(),
            why: format!("{key} has more than {MAX_ENTRIES} entries"),
        }),
        None => Ok(()),
    }
}

fn principal_set(list: List, key: &str) -> Result<BTreeSet<String>, Mistake> {
    bounded(&list, key)?;
    list.into_inner()
        .into_iter()
        .map(|p| {
            let at = p.span();
            let p = p.into_inner();
            match check_name(&p, MAX_PRINCIPAL, "principal") {
                Ok(()) => Ok(p),
                Err(e) => Err(Mistake {
                    at,
                    why: format!("{key}: {p:?}: {e}"),
                }),
            }
        })
        .collect()
}

/// The policy as TOML that [`parse`] reads back as an equal policy.
pub(super) fn to_toml(p: &Policy) -> Result<String, String> {
    use toml::{Table, Value};
    fn strings<T: ToString>(items: impl IntoIterator<Item = T>) -> Value {
        Value::Array(
            items
                .into_iter()
                .map(|s| Value::String(s.to_string()))
                .collect(),
        )
    }
    fn lists(allow: Option<Value>, deny: Option<Value>) -> Option<Value> {
        let t: Table = [("allow", allow), ("deny", deny)]
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_owned(), v?)))
            .collect();
        (!t.is_empty()).then_some(Value::Table(t))
    }
    let non_empty = |v: Value| v.as_array().is_some_and(|a| !a.is_empty()).then_some(v);
    let mut doc = Table::new();
    let principals = lists(
        p.principals_allow.as_ref().map(strings),
        non_empty(strings(&p.principals_deny)),
    );
    let sources = lists(
        p.sources_allow.as_ref().map(strings),
        non_empty(strings(&p.sources_deny)),
    );
    let rules: Table = (p.rules.iter())
        .map(|(name, r)| {
            let mut t = Table::new();
            if let Some(s) = &r.sources {
                t.insert("sources".into(), strings(s));
            }
            if let Some(n) = r.max_sessions {
                t.insert("max_sessions".into(), Value::Integer(n.into()));
            }
            if let Some(h) = &r.hours {
                t.insert("hours_utc".into(), strings(h));
            }
            if let Some(a) = &r.accounts {
                t.insert("accounts".into(), strings(a));
            }
            if let Some(b) = r.require_presence {
                t.insert("require_presence".into(), Value::Boolean(b));
            }
            if let Some(b) = r.require_verification {
                t.insert("require_verification".into(), Value::Boolean(b));
            }
            if let Some(n) = r.reverify_interval_secs {
                let n = i64::try_from(n).unwrap_or(i64::MAX);
                t.insert("reverify_interval_secs".into(), Value::Integer(n));
            }
            (name.clone(), Value::Table(t))
        })
        .collect();
    for (key, value) in [
        ("principals", principals),
        ("sources", sources),
        (
            "principal",
            (!rules.is_empty()).then_some(Value::Table(rules)),
        ),
    ] {
        if let Some(v) = value {
            doc.insert(key.into(), v);
        }
    }
    toml::to_string(&doc).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `LINE: reason`, as `load` prints it after the file name.
    fn mistake(text: &str) -> String {
        match parse(text) {
            Ok(p) => panic!("accepted {text:?} as {p:?}"),
            Err(e) => format!("{}: {}", e.line.unwrap_or(0), e.reason),
        }
    }

    fn check(cases: &[(&str, &str)]) {
        for (text, want) in cases {
            let got = mistake(text);
            assert!(
                got.starts_with(want),
                "for {text:?}\n got: {got}\nwant: {want}"
            );
            assert!(!got.contains('\n'), "one line: {got}");
        }
    }

    #[test]
    fn a_key_or_value_in_several_tables_is_found_in_the_right_one() {
        check(&[
            // The same key, right in the first table, wrong in the second.
            (
                "[principal.a]\nmax_sessions = 2\n[principal.b]\nmax_sessions = 0\n",
                "4: principal.b.max_sessions = 0 would lock b out",
            ),
            (
                "[principal.a]\nmax_sessions = 2\n\n[principal.b]\nmax_sessions = \"2\"\n",
                "5: principal.b.max_sessions: invalid type: string \"2\", expected u32",
            ),
            // The same value, allowed in one list and refused in another.
            (
                "[sources]\ndeny = []\n[principal.b]\nsources = []\n",
                "4: principal.b.sources = [] admits nobody",
            ),
            // The offending value also sits in a comment and in a good entry
            // of an earlier table.
            (
                "# deny = [\"10.0.0.1/8\"]\n[principal.a]\nsources = [\"10.0.0.0/8\"]\n\
                 [sources]\ndeny = [\n  \"10.0.0.0/8\",\n  \"10.0.0.1/8\",\n]\n",
                "7: sources.deny: \"10.0.0.1/8\" is not a network: host bits",
            ),
            (
                "[principal.a]\nhours_utc = [\"08-18\"]\n[principal.b]\nhours_utc = [\"08-18\", \"8-8\"]\n",
                "4: principal.b.hours_utc: \"8-8\" covers the whole day",
            ),
            // A key known in one table is unknown in another.
            (
                "[principal.a]\nsources = [\"10.0.0.0/8\"]\n[principals]\nsources = [\"a\"]\n",
                "4: principals.sources: unknown field `sources`, expected `allow` or `deny`",
            ),
            // Dotted keys and inline tables: no table header to search under.
            (
                "principal.a.max_sessions = 1\nprincipal.b.max_sessions = 0\n",
                "2: principal.b.max_sessions = 0",
            ),
            (
                "principal.a = { max_sessions = 1 }\nprincipal.b = { max_sessions = 0 }\n",
                "2: principal.b.max_sessions = 0",
            ),
            (
                "principals = { allow = [\"a\"], deny = [\"a\", \"b c\"] }\n",
                "1: principals.deny: \"b c\": principal",
            ),
        ]);
    }

    #[test]
    fn unknown_keys_name_their_path() {
        check(&[
            (
                "[sources]\n\nallwo = [\"10.0.0.0/8\"]\n",
                "3: sources.allwo: unknown field `allwo`, expected `allow` or `deny`",
            ),
            (
                "deny = [\"x\"]\n",
                "1: deny: unknown field `deny`, expected one of `principals`, `sources`, `principal`",
            ),
            (
                "[principal.alice]\nsources = [\"10.0.0.0/8\"]\nmax_session = 2\n",
                "3: principal.alice.max_session: unknown field `max_session`, expected one of",
            ),
            (
                "principal = { alice = { hours = [\"08-18\"] } }\n",
                "1: principal.alice.hours: unknown field `hours`",
            ),
            (
                "[principal.alice.sources]\n",
                "1: principal.alice.sources: invalid type: map, expected a sequence",
            ),
            (
                "[principal]\n\"a b\" = {}\n",
                "2: [principal.\"a b\"]: principal: only letters",
            ),
        ]);
    }

    #[test]
    fn wrong_types_name_their_path() {
        check(&[
            (
                "[principals]\nallow = [\"a\"]\n[sources]\nallow = 5\n",
                "4: sources.allow: invalid type: integer `5`, expected a sequence",
            ),
            (
                "[principals]\nallow = [\"a\",\n  5]\n",
                "3: principals.allow: invalid type: integer `5`, expected a string",
            ),
            (
                "[principal.bob]\nmax_sessions = 4294967296\n",
                "2: principal.bob.max_sessions: invalid value: integer `4294967296`, expected u32",
            ),
            (
                "[principal]\nalice = 5\n",
                "2: principal.alice: invalid type: integer `5`, expected a table of sources",
            ),
            (
                "\n[[principal]]\nalice = {}\n",
                "2: principal: invalid type: sequence, expected a map",
            ),
            (
                "sources = \"10.0.0.0/8\"\n",
                "1: sources: invalid type: string",
            ),
            (
                "[sources]\nallow = [\"10.0.0.0/8\"]\n[sources]\n",
                "3: invalid table header; duplicate key `sources`",
            ),
            ("[sources\nallow = 1\n", "1: invalid table header"),
            ("[sources]\ndeny = ", "2: not valid TOML (column 8)"),
            // A quoted key holding control characters.
            (
                "[sources]\n\"a\\u001b[2Jb\\rc\" = 1\n",
                "2: sources.\"a\\u{1b}[2Jb\\rc\": unknown field `a\\u{1b}[2Jb\\rc`",
            ),
        ]);
    }

    #[test]
    fn host_bits_under_a_prefix_are_refused_where_they_are() {
        check(&[
            (
                "[sources]\nallow = [\"10.0.0.0/8\", \"10.1.0.0/8\"]\n",
                "2: sources.allow: \"10.1.0.0/8\" is not a network: host bits are set below the /8 prefix; did you mean 10.0.0.0/8?",
            ),
            (
                "[principal.a]\nsources = [\n  \"2001:db8::/32\",\n  \"2001:db8::1/32\",\n]\n",
                "4: principal.a.sources: \"2001:db8::1/32\" is not a network: host bits are set below the /32 prefix; did you mean 2001:db8::/32?",
            ),
            (
                "[sources]\ndeny = [\"::ffff:10.0.0.1/104\"]\n",
                "2: sources.deny: \"::ffff:10.0.0.1/104\" is not a network: host bits are set below the /104 prefix",
            ),
            (
                "[sources]\ndeny = [\"0.0.0.1/0\"]\n",
                "2: sources.deny: \"0.0.0.1/0\" is not a network: host bits are set below the /0 prefix; did you mean 0.0.0.0/0?",
            ),
        ]);
        // Hosts and networks without host bits are fine; mapped networks
        // become IPv4 ones.
        let p = parse(
            "[sources]\nallow = [\"10.0.0.1\", \"10.0.0.1/32\", \"10.0.0.0/8\", \"::ffff:192.0.2.0/120\", \"2001:db8::/32\"]\n",
        )
        .expect("policy");
        let nets: Vec<String> = p.networks().map(ToString::to_string).collect();
        assert_eq!(
            nets,
            [
                "10.0.0.1/32",
                "10.0.0.1/32",
                "10.0.0.0/8",
                "192.0.2.0/24",
                "2001:db8::/32"
            ]
        );
    }

    #[test]
    fn to_toml_reads_back_as_the_same_policy() {
        let example = include_str!("../../../../config-examples/policy.toml");
        for text in [
            example,
            "",
            "[principals]\nallow = []\n",
            "principal.\"alice@corp\" = {}\n[principal.b]\nhours_utc = [\"22-6\", \"8 - 9\"]\n",
            "[sources]\nallow = [\"::ffff:10.0.0.0/104\", \"::1\"]\ndeny = [\"0.0.0.0/0\"]\n",
        ] {
            let p = parse(text).expect(text);
            let canonical = p.to_toml().expect("to_toml");
            assert_eq!(parse(&canonical), Ok(p), "{text:?} -> {canonical:?}");
        }
    }
}
