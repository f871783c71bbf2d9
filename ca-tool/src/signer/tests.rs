use super::*;
use ztssh_proto::keys::SigningKey;

/// A signer whose answers the test chooses: a security key that may or
/// may not have been touched, or a liar.
struct Fake {
    public: ssh_key::PublicKey,
    key: ed25519_dalek::SigningKey,
    flags: u8,
    counter: std::cell::Cell<u32>,
}

impl Fake {
    fn sk(flags: u8) -> Self {
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let pk = ssh_key::public::Ed25519PublicKey(key.verifying_key().to_bytes());
        let sk = ssh_key::public::SkEd25519::new(pk, "ssh:");
        Self {
            public: ssh_key::PublicKey::new(KeyData::SkEd25519(sk), "fake-sk"),
            key,
            flags,
            counter: std::cell::Cell::new(0),
        }
    }
}

impl Signer for Fake {
    fn public(&self) -> &ssh_key::PublicKey {
        &self.public
    }
    fn holder(&self) -> String {
        "agent:fake".into()
    }
    fn sign_raw(&self, data: &[u8]) -> Result<ssh_key::Signature> {
        use ed25519_dalek::Signer as _;
        use sha2::Digest;
        self.counter.set(self.counter.get() + 1);
        let counter = self.counter.get().to_be_bytes();
        let mut signed = sha2::Sha256::digest(b"ssh:").to_vec();
        signed.push(self.flags);
        signed.extend_from_slice(&counter);
        signed.extend_from_slice(&sha2::Sha256::digest(data));
        let mut bytes = self.key.sign(&signed).to_bytes().to_vec();
        bytes.push(self.flags);
        bytes.extend_from_slice(&counter);
        Ok(ssh_key::Signature::new(
            ssh_key::Algorithm::SkEd25519,
            bytes,
        )?)
    }
}

#[test]
fn a_file_key_signs_what_proto_verifies() {
    let key = SigningKey::from_seed(&ztssh_proto::keys::Secret::new([4; 32]));
    let public = key.public();
    let f = file::FileSigner::new(key, std::path::Path::new("/ca/root.key"));
    let signer: &dyn Signer = &f;
    let sig = signer.sign(b"ctx-msg").expect("sign");
    assert_eq!(sig.algorithm, Algorithm::Ed25519);
    assert_eq!(sig.sk, None);
    let root = Ed25519Root::new(signer).expect("ed25519");
    let raw = ztssh_proto::keys::Signer::try_sign(&root, b"ctx-", b"msg").expect("sign");
    public
        .verify(b"ctx-", b"msg", &raw, "test")
        .expect("verifies as proto checks it");
}

#[test]
fn a_security_key_signature_carries_its_flags_and_counter() {
    let fake = Fake::sk(SK_USER_PRESENT);
    let signer: &dyn Signer = &fake;
    let one = signer.sign(b"first").expect("touched");
    let two = signer.sign(b"second").expect("touched");
    assert_eq!(one.algorithm, Algorithm::SkEd25519);
    assert_eq!(
        one.sk,
        Some(SkAssertion {
            flags: 1,
            counter: 1
        })
    );
    assert_eq!(two.sk.map(|a| a.counter), Some(2));
    // Lent to the formats as a security key root: the flags and counter
    // travel with the signature, which verifies as proto checks it.
    let root = RootSigning::new(signer).expect("sk root");
    let key = ztssh_proto::rootkey::RootSigner::root_key(&root);
    assert_eq!(key.algorithm(), ztssh_proto::rootkey::Algorithm::SkEd25519);
    let sig =
        ztssh_proto::rootkey::RootSigner::try_sign_root(&root, b"ctx-", b"msg").expect("sign");
    key.verify(b"ctx-", b"msg", &sig, "test")
        .expect("verifies as proto checks it");
    assert!(key.verify(b"ctx-", b"msh", &sig, "test").is_err());
}

#[test]
fn a_security_key_signature_without_a_touch_is_refused() {
    let fake = Fake::sk(0x04);
    let signer: &dyn Signer = &fake;
    let e = format!("{:#}", signer.sign(b"msg").expect_err("no presence"));
    assert!(e.contains("without user presence"), "{e}");
    assert!(e.contains("nobody touched it"), "{e}");
}

#[test]
fn a_signature_that_does_not_verify_is_refused() {
    /// Signs with one key and claims another.
    struct Liar(file::FileSigner, ssh_key::PublicKey);
    impl Signer for Liar {
        fn public(&self) -> &ssh_key::PublicKey {
            &self.1
        }
        fn holder(&self) -> String {
            "pkcs11:liar/root".into()
        }
        fn sign_raw(&self, data: &[u8]) -> Result<ssh_key::Signature> {
            self.0.sign_raw(data)
        }
    }
    let seed = |b| SigningKey::from_seed(&ztssh_proto::keys::Secret::new([b; 32]));
    let claimed = file::FileSigner::new(seed(2), std::path::Path::new("x"))
        .public()
        .clone();
    let liar = Liar(
        file::FileSigner::new(seed(1), std::path::Path::new("x")),
        claimed,
    );
    let signer: &dyn Signer = &liar;
    let e = format!("{:#}", signer.sign(b"msg").expect_err("caught"));
    assert!(e.contains("does not verify under its key"), "{e}");
}
