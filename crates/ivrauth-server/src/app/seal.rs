//! Sealed call sessions: call state travels, encrypted and authenticated, in the callback
//! URLs the platform calls next, so no instance holds per-call memory between turns and any
//! instance holding the keys can continue a call.
//!
//! A token is URL-safe base64 without padding (nothing to percent-encode in a query string)
//! of
//!
//! ```text
//! version (1 byte, = 1) || key id (4 bytes) || nonce (24 bytes) || ciphertext || tag (16 bytes)
//! ```
//!
//! sealed with XChaCha20-Poly1305 under a fresh random nonce (192 bits: random nonces never
//! realistically collide). The key id is the first 4 bytes of SHA-256 of the key, so a ring
//! can pick the right key without trying each. The associated data is the 5-byte header
//! followed by the caller's context (say `"twilio\0<flowId>\0<callId>"`), so a token opens
//! only in the context it was sealed for and with the header it was sealed with.
//!
//! Keys rotate through the ring: the first key seals, every key opens. Deploy `[new, old]`
//! everywhere, wait for calls sealed under `old` to end, then drop `old`. Keys live in the
//! cipher instances, which zeroize them on drop.
//!
//! No compression: no compressor is in the dependency tree. The version byte leaves room for
//! one.

use std::fmt;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use ivrauth_core::Secret;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Format version written in the first byte.
const VERSION: u8 = 1;
const KEY_LEN: usize = 32;
const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + KEY_ID_LEN;
const OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

/// Longest token [`SessionKeys::open`] looks at, in characters. URLs much longer than a few
/// KiB are trouble for the platforms anyway.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Longest plaintext [`SessionKeys::seal`] accepts: what fits in [`MAX_TOKEN_LEN`].
pub const MAX_PLAINTEXT_LEN: usize = MAX_TOKEN_LEN / 4 * 3 - OVERHEAD;

/// Why keys could not be configured or a token could not be sealed or opened. For logs only:
/// a caller with a bad token gets the same answer whatever the reason. Never carries key
/// material, tokens or plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("no session keys configured")]
    NoKeys,
    #[error("session key #{index} is not base64")]
    KeyEncoding { index: usize },
    #[error("session key #{index} is {len} bytes; 32 are required")]
    KeyLength { index: usize, len: usize },
    #[error("session key #{index} repeats an earlier key (same key id)")]
    DuplicateKey { index: usize },
    #[error("session state too large to seal")]
    PlaintextTooLong,
    #[error("sealing failed")]
    Seal,
    #[error("session token too long")]
    TooLong,
    #[error("session token is not base64url")]
    Encoding,
    #[error("session token too short")]
    TooShort,
    #[error("session token has an unknown version")]
    UnknownVersion,
    #[error("session token sealed with an unknown key")]
    UnknownKey,
    #[error("session token failed authentication")]
    Invalid,
}

#[derive(Clone)]
struct RingKey {
    id: [u8; KEY_ID_LEN],
    /// Holds (and zeroizes on drop) the key.
    cipher: XChaCha20Poly1305,
}

/// A key ring for call session tokens: the first key seals, all keys open.
#[derive(Clone)]
pub struct SessionKeys {
    keys: Vec<RingKey>,
    /// Derived from the first key: keys the lockout counters ([`SessionKeys::account_key`]).
    counter_key: Secret<Vec<u8>>,
}

/// HMAC-SHA256 of `label` under `key`: a key for another purpose that reveals nothing of
/// `key`.
fn derive(key: &[u8], label: &[u8]) -> Secret<Vec<u8>> {
    use hmac::{Mac, SimpleHmac};
    match <SimpleHmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(label);
            Secret::new(mac.finalize().into_bytes().to_vec())
        }
        // HMAC takes keys of any length.
        Err(_) => Secret::new(Vec::new()),
    }
}

const COUNTER_KEY_LABEL: &[u8] = b"ivrauth account counter key v1";

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKeys")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl SessionKeys {
    /// The ring from configuration: each entry 32 bytes in base64, standard or URL-safe
    /// alphabet, padded or not (surrounding whitespace ignored). The first entry seals.
    /// Errors name the entry by its index, never its content.
    pub fn from_base64<S: AsRef<str>>(keys: &[S]) -> Result<Self, SealError> {
        if keys.is_empty() {
            return Err(SealError::NoKeys);
        }
        let standard = lenient(&alphabet::STANDARD);
        let url_safe = lenient(&alphabet::URL_SAFE);
        let mut ring: Vec<RingKey> = Vec::with_capacity(keys.len());
        let mut counter_key = Secret::new(Vec::new());
        for (index, entry) in keys.iter().enumerate() {
            let text = entry.as_ref().trim();
            let engine = if text.contains(['-', '_']) {
                &url_safe
            } else {
                &standard
            };
            let bytes = Secret::new(
                engine
                    .decode(text)
                    .map_err(|_| SealError::KeyEncoding { index })?,
            );
            let key = RingKey::new(bytes.expose()).ok_or(SealError::KeyLength {
                index,
                len: bytes.expose().len(),
            })?;
            if ring.iter().any(|k| k.id == key.id) {
                return Err(SealError::DuplicateKey { index });
            }
            if index == 0 {
                counter_key = derive(bytes.expose(), COUNTER_KEY_LABEL);
            }
            ring.push(key);
        }
        Ok(SessionKeys {
            keys: ring,
            counter_key,
        })
    }

    /// One random key. For development and tests: tokens die with the process and other
    /// instances cannot open them.
    pub fn generate() -> Self {
        let mut buf = vec![0u8; KEY_LEN];
        OsRng.fill_bytes(&mut buf);
        // Moving the Vec into the Secret moves no key bytes: the one heap copy is zeroized
        // when `bytes` drops.
        let bytes = Secret::new(buf);
        let counter_key = derive(bytes.expose(), COUNTER_KEY_LABEL);
        match RingKey::new(bytes.expose()) {
            Some(key) => SessionKeys {
                keys: vec![key],
                counter_key,
            },
            // Unreachable: the buffer is KEY_LEN long.
            None => SessionKeys {
                keys: Vec::new(),
                counter_key,
            },
        }
    }

    /// The key lockout counters are kept under, derived from the first key of the ring.
    /// Every instance (and `ivrauth account`) sharing the ring derives the same one; when
    /// the first key is replaced, counters start over under the new one.
    pub fn account_key(&self) -> ivrauth_core::identity::AccountKey {
        ivrauth_core::identity::AccountKey::new(self.counter_key.expose().clone())
    }

    /// The counter key of the demo directory simulations may reach (`[simulate] identity =
    /// "demo"`): another key, so demo counters never meet live ones.
    pub fn demo_account_key(&self) -> ivrauth_core::identity::AccountKey {
        let key = derive(self.counter_key.expose(), b"demo directory");
        ivrauth_core::identity::AccountKey::new(key.expose().clone())
    }

    /// How many keys the ring holds.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Seals `plaintext` for the context `aad` under the first key.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<String, SealError> {
        let key = self.keys.first().ok_or(SealError::NoKeys)?;
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(SealError::PlaintextTooLong);
        }
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let mut token = Vec::with_capacity(OVERHEAD + plaintext.len());
        token.push(VERSION);
        token.extend_from_slice(&key.id);
        let full_aad = associated_data(&token, aad);
        let sealed = key
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &full_aad,
                },
            )
            .map_err(|_| SealError::Seal)?;
        token.extend_from_slice(&nonce);
        token.extend_from_slice(&sealed);
        Ok(URL_SAFE_NO_PAD.encode(token))
    }

    /// Opens a token sealed by [`SessionKeys::seal`] under any key of the ring for the same
    /// `aad`. Anything odd fails closed.
    pub fn open(&self, token: &str, aad: &[u8]) -> Result<Vec<u8>, SealError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(SealError::TooLong);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| SealError::Encoding)?;
        if raw.len() < OVERHEAD {
            return Err(SealError::TooShort);
        }
        let (header, rest) = raw.split_at(HEADER_LEN);
        if header[0] != VERSION {
            return Err(SealError::UnknownVersion);
        }
        let key = self
            .keys
            .iter()
            .find(|k| k.id[..] == header[1..])
            .ok_or(SealError::UnknownKey)?;
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let full_aad = associated_data(header, aad);
        key.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &full_aad,
                },
            )
            .map_err(|_| SealError::Invalid)
    }
}

impl RingKey {
    /// None unless `key` is exactly 32 bytes.
    fn new(key: &[u8]) -> Option<Self> {
        let cipher = XChaCha20Poly1305::new_from_slice(key).ok()?;
        let digest = Sha256::digest(key);
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        Some(RingKey { id, cipher })
    }
}

/// Standard or URL-safe base64 with or without padding (canonical trailing bits still
/// required).
fn lenient(alphabet: &alphabet::Alphabet) -> GeneralPurpose {
    GeneralPurpose::new(
        alphabet,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    )
}

/// The header followed by the caller's context. The header has a fixed length, so the
/// concatenation is unambiguous.
fn associated_data(header: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(header.len() + aad.len());
    full.extend_from_slice(header);
    full.extend_from_slice(aad);
    full
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE};

    const AAD: &[u8] = b"twilio\0flow-1\0CA123";

    fn key_b64(byte: u8) -> String {
        STANDARD.encode([byte; KEY_LEN])
    }

    fn ring(bytes: &[u8]) -> SessionKeys {
        let entries: Vec<String> = bytes.iter().map(|b| key_b64(*b)).collect();
        SessionKeys::from_base64(&entries).unwrap()
    }

    #[test]
    fn round_trip() {
        let keys = ring(&[1]);
        for plaintext in [&b""[..], b"x", br#"{"node":"ask-pin","attempts":2}"#] {
            let token = keys.seal(plaintext, AAD).unwrap();
            assert_eq!(keys.open(&token, AAD).unwrap(), plaintext);
            assert!(token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            let raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
            assert_eq!(raw.len(), OVERHEAD + plaintext.len());
            assert_eq!(raw[0], VERSION);
            assert_eq!(raw[1..5], Sha256::digest([1u8; KEY_LEN])[..4]);
        }
    }

    #[test]
    fn fresh_nonce_every_time() {
        let keys = ring(&[1]);
        let a = keys.seal(b"same", AAD).unwrap();
        let b = keys.seal(b"same", AAD).unwrap();
        assert_ne!(a, b);
        assert_eq!(keys.open(&a, AAD).unwrap(), b"same");
        assert_eq!(keys.open(&b, AAD).unwrap(), b"same");
    }

    #[test]
    fn wrong_context_refused() {
        let keys = ring(&[1]);
        let token = keys.seal(b"state", AAD).unwrap();
        for other in [
            &b""[..],
            b"twilio\0flow-1\0CA124",
            b"jambonz\0flow-1\0CA123",
            b"twilio\0flow-1\0CA123\0",
        ] {
            assert_eq!(keys.open(&token, other), Err(SealError::Invalid));
        }
    }

    #[test]
    fn every_flipped_bit_refused() {
        let keys = ring(&[1, 2]);
        let token = keys.seal(b"1234-state", AAD).unwrap();
        let raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for i in 0..raw.len() {
            for bit in 0..8 {
                let mut bad = raw.clone();
                bad[i] ^= 1 << bit;
                let bad = URL_SAFE_NO_PAD.encode(bad);
                assert!(keys.open(&bad, AAD).is_err(), "byte {i} bit {bit}");
            }
        }
        // And every character of the token replaced by another of the alphabet.
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for i in 0..token.len() {
            for c in alphabet.chars().filter(|c| !token[i..].starts_with(*c)) {
                let mut bad = token.clone();
                bad.replace_range(i..=i, &c.to_string());
                assert!(keys.open(&bad, AAD).is_err(), "char {i} -> {c}");
            }
        }
    }

    #[test]
    fn header_errors_are_specific() {
        let keys = ring(&[1]);
        let token = keys.seal(b"state", AAD).unwrap();
        let raw = URL_SAFE_NO_PAD.decode(&token).unwrap();

        let mut v2 = raw.clone();
        v2[0] = 2;
        let v2 = URL_SAFE_NO_PAD.encode(v2);
        assert_eq!(keys.open(&v2, AAD), Err(SealError::UnknownVersion));

        let mut other_key = raw.clone();
        other_key[1] ^= 0xff;
        let other_key = URL_SAFE_NO_PAD.encode(other_key);
        assert_eq!(keys.open(&other_key, AAD), Err(SealError::UnknownKey));

        let short = URL_SAFE_NO_PAD.encode(&raw[..OVERHEAD - 1]);
        assert_eq!(keys.open(&short, AAD), Err(SealError::TooShort));
        assert_eq!(keys.open("", AAD), Err(SealError::TooShort));
        let truncated = URL_SAFE_NO_PAD.encode(&raw[..raw.len() - 1]);
        assert_eq!(keys.open(&truncated, AAD), Err(SealError::Invalid));

        assert_eq!(
            keys.open(&format!("{token}="), AAD),
            Err(SealError::Encoding)
        );
        assert_eq!(
            keys.open(&format!("{token} "), AAD),
            Err(SealError::Encoding)
        );
        // The standard alphabet's '+' and '/' are not ours.
        let plus = format!("+{}", &token[1..]);
        assert_eq!(keys.open(&plus, AAD), Err(SealError::Encoding));
        let slash = format!("{}/", &token[..token.len() - 1]);
        assert_eq!(keys.open(&slash, AAD), Err(SealError::Encoding));
        assert_eq!(keys.open("not*base64", AAD), Err(SealError::Encoding));
        assert_eq!(
            keys.open(&"A".repeat(MAX_TOKEN_LEN + 1), AAD),
            Err(SealError::TooLong)
        );
    }

    #[test]
    fn size_limits_agree() {
        let keys = ring(&[1]);
        let biggest = vec![7u8; MAX_PLAINTEXT_LEN];
        let token = keys.seal(&biggest, AAD).unwrap();
        assert!(token.len() <= MAX_TOKEN_LEN);
        assert_eq!(keys.open(&token, AAD).unwrap(), biggest);
        assert_eq!(
            keys.seal(&vec![7u8; MAX_PLAINTEXT_LEN + 1], AAD),
            Err(SealError::PlaintextTooLong)
        );
    }

    #[test]
    fn rotation() {
        let old = ring(&[1]);
        let token = old.seal(b"state", AAD).unwrap();

        let rotated = ring(&[2, 1]);
        assert_eq!(rotated.key_count(), 2);
        assert_eq!(rotated.open(&token, AAD).unwrap(), b"state");
        // The new ring seals with the new key, which the old ring does not know.
        let fresh = rotated.seal(b"next", AAD).unwrap();
        assert_eq!(old.open(&fresh, AAD), Err(SealError::UnknownKey));

        let retired = ring(&[2]);
        assert_eq!(retired.open(&token, AAD), Err(SealError::UnknownKey));
        assert_eq!(retired.open(&fresh, AAD).unwrap(), b"next");
    }

    #[test]
    fn generated_rings_are_independent() {
        let a = SessionKeys::generate();
        let b = SessionKeys::generate();
        assert_eq!(a.key_count(), 1);
        let token = a.seal(b"state", AAD).unwrap();
        assert_eq!(a.open(&token, AAD).unwrap(), b"state");
        assert_eq!(b.open(&token, AAD), Err(SealError::UnknownKey));
        let cloned = a.clone();
        assert_eq!(cloned.open(&token, AAD).unwrap(), b"state");
    }

    #[test]
    fn key_configuration_forms() {
        let key = [0xfbu8; KEY_LEN]; // base64 of 0xfb.. uses '+' and '/' (or '-' and '_')
        let forms = [
            STANDARD.encode(key),
            STANDARD_NO_PAD.encode(key),
            URL_SAFE.encode(key),
            URL_SAFE_NO_PAD.encode(key),
            format!("  {}\n", STANDARD.encode(key)),
        ];
        let reference = SessionKeys::from_base64(&[STANDARD.encode(key)]).unwrap();
        let token = reference.seal(b"state", AAD).unwrap();
        for form in forms {
            let keys = SessionKeys::from_base64(&[form.as_str()]).unwrap();
            assert_eq!(keys.open(&token, AAD).unwrap(), b"state", "{form}");
        }
    }

    #[test]
    fn bad_configuration_names_the_entry_only() {
        let good = key_b64(1);
        let empty: [&str; 0] = [];
        assert_eq!(
            SessionKeys::from_base64(&empty).err(),
            Some(SealError::NoKeys)
        );

        let secretish = "c2VjcmV0LWNhbmFyeS1rZXk="; // "secret-canary-key", 17 bytes
        let err = SessionKeys::from_base64(&[good.as_str(), secretish])
            .err()
            .unwrap();
        assert_eq!(err, SealError::KeyLength { index: 1, len: 17 });
        assert!(!err.to_string().contains(secretish));
        assert!(!format!("{err:?}").contains(secretish));
        assert!(err.to_string().contains("#1"));

        let not_b64 = "secret*canary*key*!!";
        let err = SessionKeys::from_base64(&[not_b64, good.as_str()])
            .err()
            .unwrap();
        assert_eq!(err, SealError::KeyEncoding { index: 0 });
        assert!(!err.to_string().contains("canary"));

        let too_long = STANDARD.encode([1u8; 33]);
        assert_eq!(
            SessionKeys::from_base64(&[too_long]).err(),
            Some(SealError::KeyLength { index: 0, len: 33 })
        );
        let mixed = format!("+{}", &URL_SAFE_NO_PAD.encode([0xfbu8; KEY_LEN])[1..]);
        assert_eq!(
            SessionKeys::from_base64(&[good.as_str(), &mixed]).err(),
            Some(SealError::KeyEncoding { index: 1 })
        );
        assert_eq!(
            SessionKeys::from_base64(&[good.as_str(), ""]).err(),
            Some(SealError::KeyLength { index: 1, len: 0 })
        );
        assert_eq!(
            SessionKeys::from_base64(&[good.clone(), key_b64(2), good.clone()]).err(),
            Some(SealError::DuplicateKey { index: 2 })
        );
    }

    #[test]
    fn token_never_contains_the_plaintext() {
        let keys = ring(&[1]);
        let canary = b"1234-canary";
        let token = keys.seal(canary, AAD).unwrap();
        assert!(!token.contains("1234-canary"));
        assert!(!token.contains(&URL_SAFE_NO_PAD.encode(canary)));
        let raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        assert!(!raw.windows(canary.len()).any(|w| w == canary));
        // Nor the key, nor the context.
        assert!(!raw.windows(KEY_LEN).any(|w| w == [1u8; KEY_LEN]));
        assert!(!raw.windows(AAD.len()).any(|w| w == AAD));
    }

    #[test]
    fn debug_shows_no_key_material() {
        let keys = ring(&[0x41]);
        let shown = format!("{keys:?}");
        assert_eq!(shown, "SessionKeys { keys: 1 }");
    }
}
