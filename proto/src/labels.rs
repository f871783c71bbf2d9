//! Every protocol name, version, signature context and KDF label, defined once.

/// Wire protocol version spoken by this build.
pub const PROTOCOL_VERSION: u16 = 1;

/// The Noise pattern and primitives.
pub const NOISE_PARAMS: &str = "Noise_XXpsk3_25519_AESGCM_SHA256";

/// Prologue prefix; the protocol version follows it (see [`crate::handshake`]).
pub const PROLOGUE: &[u8] = b"ztssh/1 hybrid XXpsk3+ML-KEM-768";

/// Label for deriving the Noise psk from the ML-KEM shared secret.
pub const KDF_KEM_PSK: &[u8] = b"ztssh v1 psk3 from ML-KEM-768";

/// Label for deriving the OpenSSH host CA key from the root key's seed
/// (see [`crate::hostca`]): `SHA-256(KDF_HOST_CA || root seed)`.
pub const KDF_HOST_CA: &[u8] = b"ztssh v1 OpenSSH host CA key from root\0";

/// HKDF info for the first rekey chaining secret, from the handshake's
/// transport keys (salt: the final handshake hash). See [`crate::rekey`].
pub const KDF_REKEY_CHAIN0: &[u8] = b"ztssh v1 rekey chain from handshake\0";
/// Prefix of the rekey transcript hash.
pub const KDF_REKEY_TRANSCRIPT: &[u8] = b"ztssh v1 rekey transcript\0";
/// HKDF info (then the transcript hash) for the next chaining secret.
pub const KDF_REKEY_CHAIN: &[u8] = b"ztssh v1 rekey chain\0";
/// HKDF info (then the transcript hash) for the client-to-server key.
pub const KDF_REKEY_C2S: &[u8] = b"ztssh v1 rekey client to server\0";
/// HKDF info (then the transcript hash) for the server-to-client key.
pub const KDF_REKEY_S2C: &[u8] = b"ztssh v1 rekey server to client\0";

/// Context for a licence signature by the root CA.
pub const CTX_LICENCE: &[u8] = b"ztssh v1 server licence\0";
/// Context for a licence request signed by the proxy's Sub-CA key.
pub const CTX_LICENCE_REQUEST: &[u8] = b"ztssh v1 licence request\0";
/// Context for a client certificate signed by a proxy's Sub-CA.
pub const CTX_CLIENT_CERT: &[u8] = b"ztssh v1 client certificate\0";
/// Context for the session key's proof of possession over the handshake.
pub const CTX_SESSION_KEY_POP: &[u8] = b"ztssh v1 session key possession\0";
/// Context for a revocation list signed by the root.
pub const CTX_CRL: &[u8] = b"ztssh v1 revocation list\0";
/// Context for an access list signed by the root (or, later, a key the
/// root delegated for access lists).
pub const CTX_ACCESS: &[u8] = b"ztssh v1 access list\0";
/// Context for a delegation: the root certifying an online key for one
/// purpose (see [`crate::delegation`]).
pub const CTX_DELEGATION: &[u8] = b"ztssh v1 delegation\0";
/// Prefix of every context a hybrid root signs under (both halves): an
/// Ed25519 half lifted from a hybrid object never verifies as an
/// Ed25519-only object of the same key (PROTOCOL.md §2.4, §6 item 23).
pub const CTX_HYBRID_PREFIX: &[u8] = b"ztssh v1 hybrid ed25519+ml-dsa-65\0";
/// The FIPS 204 context string of a hybrid root's ML-DSA-65 half.
pub const MLDSA_CONTEXT: &[u8] = b"ztssh v1 hybrid root";
/// Prefix of a platform OIDC token's replay id (see
/// [`crate::trust::workload`]): `SHA-256(CTX_WORKLOAD_TOKEN_ID || 1 ||
/// len(iss) || iss || jti)`, or `... || 0 || header.payload` without a `jti`.
pub const CTX_WORKLOAD_TOKEN_ID: &[u8] = b"ztssh v1 workload token id\0";
/// Context for a challenge proof by the session key.
pub const CTX_PROOF: &[u8] = b"ztssh v1 challenge proof\0";
/// Context for the session keys' signatures over a renewal.
pub const CTX_RENEW: &[u8] = b"ztssh v1 renewal\0";
/// SSHSIG namespace for the user key's signature over a renewal.
pub const SSHSIG_NAMESPACE_RENEW: &str = "renew-v1@ztssh";
/// SSHSIG namespace for the user key's signature over the handshake.
pub const SSHSIG_NAMESPACE_HANDSHAKE: &str = "handshake-v1@ztssh";

/// Magic bytes of each binary structure.
pub mod magic {
    /// Server licence.
    pub const LICENCE: &[u8; 4] = b"ZTLC";
    /// Licence request.
    pub const REQUEST: &[u8; 4] = b"ZTRQ";
    /// Client certificate.
    pub const CLIENT_CERT: &[u8; 4] = b"ZTCC";
    /// Revocation list.
    pub const CRL: &[u8; 4] = b"ZTRL";
    /// Access list.
    pub const ACCESS: &[u8; 4] = b"ZTAL";
    /// Delegation.
    pub const DELEGATION: &[u8; 4] = b"ZTDG";
    /// A hybrid root public key (Ed25519 + ML-DSA-65).
    pub const ROOT_KEY: &[u8; 4] = b"ZTRK";
    /// A hybrid root signature block, after a signed object's body.
    pub const SIGNATURE: &[u8; 4] = b"ZTSG";
}

/// PEM labels of the files the tools write.
pub mod pem {
    /// Root CA private key.
    pub const ROOT_KEY: &str = "ZTSSH ROOT KEY";
    /// Root CA public key.
    pub const ROOT_PUBLIC: &str = "ZTSSH ROOT PUBLIC KEY";
    /// Proxy Sub-CA private key.
    pub const SUBCA_KEY: &str = "ZTSSH SUBCA KEY";
    /// Proxy Noise static private key.
    pub const NOISE_KEY: &str = "ZTSSH NOISE KEY";
    /// Licence request.
    pub const REQUEST: &str = "ZTSSH LICENCE REQUEST";
    /// Server licence.
    pub const LICENCE: &str = "ZTSSH LICENCE";
    /// Client certificate.
    pub const CLIENT_CERT: &str = "ZTSSH CLIENT CERTIFICATE";
    /// Revocation list.
    pub const CRL: &str = "ZTSSH REVOCATION LIST";
    /// Access list.
    pub const ACCESS: &str = "ZTSSH ACCESS LIST";
    /// Delegation (beside the object a delegated key signed).
    pub const DELEGATION: &str = "ZTSSH DELEGATION";
    /// A delegated key's private key.
    pub const DELEGATED_KEY: &str = "ZTSSH DELEGATED KEY";
    /// A delegated key's public key.
    pub const DELEGATED_PUBLIC: &str = "ZTSSH DELEGATED PUBLIC KEY";
}
