//! Fernet encryption of message bodies, as channels_redis does it
//! (`symmetric_encryption_keys`, WIRE.md §4).
//!
//! Each secret becomes the Fernet key `base64url(sha256(secret))`. The first
//! key encrypts; decryption tries every key, so keys can be rotated by putting
//! the new one first.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
use channels_core::LayerError;
use fernet::{Fernet, MultiFernet};
use sha2::{Digest, Sha256};

/// The Fernet key channels_redis derives from a secret: `base64url(sha256(secret))`.
pub fn fernet_key(secret: &[u8]) -> String {
    URL_SAFE.encode(Sha256::digest(secret))
}

/// A MultiFernet over the configured secrets, with an optional time-to-live.
#[derive(Clone)]
pub struct Crypter {
    fernet: MultiFernet,
    fernets: Vec<Fernet>,
    ttl_secs: Option<u64>,
}

impl std::fmt::Debug for Crypter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crypter")
            .field("keys", &self.fernets.len())
            .field("ttl_secs", &self.ttl_secs)
            .finish()
    }
}

impl Crypter {
    /// Builds a crypter from secrets (each hashed as channels_redis does).
    /// `ttl_secs`: tokens older than this fail to decrypt (the core layer uses
    /// `expiry + 10`; the pub/sub layer none).
    ///
    /// # Errors
    /// [`LayerError::InvalidConfig`] when `secrets` is empty.
    pub fn new<S: AsRef<[u8]>>(secrets: &[S], ttl_secs: Option<u64>) -> Result<Self, LayerError> {
        if secrets.is_empty() {
            return Err(LayerError::invalid_config(
                "symmetric_encryption_keys must hold at least one key",
            ));
        }
        let fernets = secrets
            .iter()
            .map(|secret| {
                Fernet::new(&fernet_key(secret.as_ref())).ok_or_else(|| {
                    LayerError::invalid_config("cannot build a Fernet key from a secret")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            fernet: MultiFernet::new(fernets.clone()),
            fernets,
            ttl_secs,
        })
    }

    /// Encrypts with the first key; returns the token's ASCII text as bytes.
    pub fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        self.fernet.encrypt(plaintext).into_bytes()
    }

    /// Decrypts a token with any key, honouring the time-to-live.
    ///
    /// # Errors
    /// [`LayerError::InvalidMessage`] when no key decrypts it, it is tampered
    /// with, or it is older than the time-to-live.
    pub fn decrypt(&self, token: &[u8]) -> Result<Vec<u8>, LayerError> {
        let token = std::str::from_utf8(token)
            .map_err(|_| LayerError::invalid_message("encrypted message is not a Fernet token"))?;
        let result = match self.ttl_secs {
            None => self.fernet.decrypt(token),
            Some(ttl) => {
                let mut last = None;
                for fernet in &self.fernets {
                    match fernet.decrypt_with_ttl(token, ttl) {
                        Ok(plain) => return Ok(plain),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or(fernet::DecryptionError))
            }
        };
        result.map_err(|_| {
            LayerError::invalid_message(
                "cannot decrypt message: wrong key, tampered or expired token",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "gAAAAABlU_EAAAECAwQFBgcICQoLDA0OD0rNHcJkPeFOMTAdgt-8K36E8ZnMGwl5rmM-9yfCrhsAI14JXZSfE8237cNP6R00eg==";

    #[test]
    fn key_derivation_matches_python() {
        assert_eq!(
            fernet_key(b"secret"),
            "K7gNU3sdo-OL0wNhqoVWhr3g6s1xYv72ol_pe_Unols="
        );
    }

    #[test]
    fn python_token_decrypts_at_its_time() {
        let fernet = Fernet::new(&fernet_key(b"secret")).unwrap();
        let plain = fernet
            .decrypt_at_time(TOKEN, Some(70), 1_700_000_010)
            .unwrap();
        assert_eq!(plain, [0x81, 0xa4, b't', b'y', b'p', b'e', 0xa1, b'x']);
        // 71 s later it is past the core layer's ttl (expiry 60 + 10).
        assert!(
            fernet
                .decrypt_at_time(TOKEN, Some(70), 1_700_000_071)
                .is_err()
        );
        // Our own encryption at the same time and IV prefix has the same header.
        let ours = fernet.encrypt_at_time(
            &[0x81, 0xa4, b't', b'y', b'p', b'e', 0xa1, b'x'],
            1_700_000_000,
        );
        assert_eq!(&ours[..12], &TOKEN[..12]);
    }

    #[test]
    fn first_key_encrypts_all_keys_decrypt() {
        let old = Crypter::new(&["old"], Some(70)).unwrap();
        let rotated = Crypter::new(&["new", "old"], Some(70)).unwrap();
        let token = old.encrypt(b"hello");
        assert_eq!(rotated.decrypt(&token).unwrap(), b"hello");
        let new_token = rotated.encrypt(b"hi");
        assert!(old.decrypt(&new_token).is_err());
        assert!(rotated.decrypt(b"not a token").is_err());
        assert!(Crypter::new::<&str>(&[], None).is_err());
    }
}
