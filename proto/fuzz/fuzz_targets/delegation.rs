//! Delegations, and the chain root -> delegation -> licence. Invariants:
//! canonical decoding; nothing fuzzed verifies under the root (as a
//! delegation, or as a chain whose delegation or licence is fuzzed); the
//! PEM splitter and the glob matcher never panic, and a glob matches a name
//! equal to it; `glob_within` is reflexive and sound (what the inner glob
//! matches, the outer one matches); a host name check never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztssh_proto::cert::Licence;
use ztssh_proto::delegation::{self, Delegation};
use ztssh_proto::labels::pem;

fuzz_target!(|data: &[u8]| {
    let w = ztssh_proto_fuzz::world();
    let root = w.root_key();
    let now = ztssh_proto_fuzz::NOW;
    for root in &w.roots() {
        assert!(
            Delegation::decode_verified(data, root).is_err(),
            "forged delegation verified"
        );
    }
    if let Ok(d) = Delegation::decode(data) {
        assert_eq!(d.encoded(), data, "delegation decoding is not canonical");
        assert!(d.body.servers.len() <= delegation::MAX_GLOBS);
        for g in &d.body.servers {
            assert!(delegation::glob_matches(g, g) || g.contains('?') || g.contains('*'));
        }
    }
    // A fuzzed delegation beside the world's genuine licence, and the
    // genuine licence's bytes as a fuzzed delegation: never a chain.
    let licence = w.licence.licence().encoded();
    assert!(
        delegation::verify_chain::<Licence>(&root, licence, Some(data), None, now).is_err(),
        "a fuzzed delegation made a chain"
    );
    // Split the input as a licence file; whatever comes out never verifies.
    if let Ok((object, deleg)) = delegation::split_pem(data, pem::LICENCE) {
        assert!(delegation::verify_licence(&root, &object, deleg.as_deref(), None, now).is_err());
    }
    if let Some((g, n)) = std::str::from_utf8(data)
        .ok()
        .and_then(|t| t.split_once('\n'))
    {
        let _ = delegation::glob_matches(g, n);
        if delegation::check_glob(g).is_ok() && !g.contains(['*', '?']) {
            assert!(delegation::glob_matches(g, g));
        }
        if delegation::check_glob(g).is_ok() {
            assert!(
                delegation::glob_within(g, g),
                "glob_within is not reflexive: {g:?}"
            );
        }
        // Three lines: inner glob, outer glob, name.
        if let Some((outer, name)) = n.split_once('\n')
            && delegation::glob_within(g, outer)
            && delegation::glob_matches(g, name)
        {
            assert!(
                delegation::glob_matches(outer, name),
                "{g:?} within {outer:?}, yet {name:?} escapes"
            );
        }
    }
});
