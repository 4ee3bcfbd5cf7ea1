//! The credential vault: AES-256-GCM with a random 96-bit nonce per encryption, the integration id and
//! provider bound as associated data, and the id of the sealing key stored beside the ciphertext.
//! Encrypts with the current key; decrypts with the current or the previous one (key rotation).

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, Generate, KeyInit, Nonce, Payload};
use crmsync_domain::Provider;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// What an integration authenticates with. Only ever stored sealed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Credentials {
    OAuth {
        access_token: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refresh_token: Option<String>,
        /// Unix seconds; `None` when the CRM did not say.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<i64>,
    },
    ApiKey {
        key: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::OAuth {
                expires_at,
                refresh_token,
                ..
            } => f
                .debug_struct("OAuth")
                .field("access_token", &"[redacted]")
                .field(
                    "refresh_token",
                    &refresh_token.as_ref().map(|_| "[redacted]"),
                )
                .field("expires_at", expires_at)
                .finish(),
            Credentials::ApiKey { .. } => f
                .debug_struct("ApiKey")
                .field("key", &"[redacted]")
                .finish(),
        }
    }
}

/// Ciphertext (with its 16-byte tag), nonce and key id, as stored in `crm_integrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub ciphertext: Vec<u8>,
    pub nonce: [u8; 12],
    pub key_version: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VaultError {
    #[error("the encryption key must be 64 hexadecimal characters (32 bytes)")]
    BadKey,
    #[error(
        "the credentials were sealed with key {0}, which is neither the current nor the previous key"
    )]
    UnknownKey(String),
    #[error(
        "the credentials cannot be opened: they were altered, or belong to another integration"
    )]
    Tampered,
    #[error("the stored credentials are not well-formed")]
    Malformed,
    #[error("the system random number generator failed")]
    Random,
}

struct VaultKey {
    version: String,
    cipher: Aes256Gcm,
}

impl VaultKey {
    fn from_hex(hex_key: &str) -> Result<Self, VaultError> {
        let bytes = hex::decode(hex_key.trim()).map_err(|_| VaultError::BadKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| VaultError::BadKey)?;
        // The key id is a fingerprint, so rotating keys needs no separate version numbering.
        let digest = Sha256::digest([b"crmsync-key-id:".as_slice(), &key].concat());
        let version = hex::encode(&digest[..8]);
        let cipher = Aes256Gcm::new_from_slice(&key).map_err(|_| VaultError::BadKey)?;
        Ok(VaultKey { version, cipher })
    }

    /// Encrypts with a fresh random 96-bit nonce; returns the nonce and the ciphertext with its tag.
    fn encrypt(&self, aad: &[u8], msg: &[u8]) -> Result<([u8; 12], Vec<u8>), VaultError> {
        let nonce = Nonce::<Aes256Gcm>::try_generate().map_err(|_| VaultError::Random)?;
        let ciphertext = self
            .cipher
            .encrypt(&nonce, Payload { msg, aad })
            .map_err(|_| VaultError::Malformed)?;
        let mut nonce_bytes = [0u8; 12];
        nonce_bytes.copy_from_slice(nonce.as_slice());
        Ok((nonce_bytes, ciphertext))
    }

    fn decrypt(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, VaultError> {
        self.cipher
            .decrypt(
                &Nonce::<Aes256Gcm>::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| VaultError::Tampered)
    }
}

/// Seals and opens [`Credentials`]. Build it once per cold start.
pub struct Vault {
    current: VaultKey,
    previous: Option<VaultKey>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("current", &self.current.version)
            .field("previous", &self.previous.as_ref().map(|k| &k.version))
            .finish()
    }
}

/// What [`Vault::open`] found.
#[derive(Debug)]
pub struct Opened {
    pub credentials: Credentials,
    /// Sealed with the previous key: re-seal with [`Vault::seal`] and store it again.
    pub needs_reseal: bool,
}

fn associated_data(integration_id: Uuid, provider: Provider) -> Vec<u8> {
    format!(
        "crmsync:credentials:v1:{integration_id}:{}",
        provider.as_str()
    )
    .into_bytes()
}

fn token_associated_data(context: &str) -> Vec<u8> {
    format!("crmsync:token:v1:{context}").into_bytes()
}

/// Prefix of sealed tokens ([`Vault::seal_token`]).
const TOKEN_PREFIX: &str = "v1";

impl Vault {
    /// `current` and `previous` are 64-hex-character keys (`encryption_key`, `encryption_key_previous`).
    pub fn new(current: &str, previous: Option<&str>) -> Result<Self, VaultError> {
        let current = VaultKey::from_hex(current)?;
        let previous = previous
            .filter(|p| !p.trim().is_empty())
            .map(VaultKey::from_hex)
            .transpose()?;
        Ok(Vault { current, previous })
    }

    /// The id of the key new seals use.
    pub fn current_key_version(&self) -> &str {
        &self.current.version
    }

    /// The id of the previous key (still accepted for opening), if one is configured.
    pub fn previous_key_version(&self) -> Option<&str> {
        self.previous.as_ref().map(|k| k.version.as_str())
    }

    /// The key with id `version`, and whether it is the previous one.
    fn key(&self, version: &str) -> Result<(&VaultKey, bool), VaultError> {
        if version == self.current.version {
            return Ok((&self.current, false));
        }
        match &self.previous {
            Some(prev) if prev.version == version => Ok((prev, true)),
            _ => Err(VaultError::UnknownKey(version.chars().take(16).collect())),
        }
    }

    pub fn seal(
        &self,
        integration_id: Uuid,
        provider: Provider,
        credentials: &Credentials,
    ) -> Result<Sealed, VaultError> {
        let plaintext = serde_json::to_vec(credentials).map_err(|_| VaultError::Malformed)?;
        let (nonce, ciphertext) = self
            .current
            .encrypt(&associated_data(integration_id, provider), &plaintext)?;
        Ok(Sealed {
            ciphertext,
            nonce,
            key_version: self.current.version.clone(),
        })
    }

    pub fn open(
        &self,
        integration_id: Uuid,
        provider: Provider,
        sealed: &Sealed,
    ) -> Result<Opened, VaultError> {
        let (key, needs_reseal) = self.key(&sealed.key_version)?;
        let plaintext = key.decrypt(
            sealed.nonce,
            &associated_data(integration_id, provider),
            &sealed.ciphertext,
        )?;
        let credentials = serde_json::from_slice(&plaintext).map_err(|_| VaultError::Malformed)?;
        Ok(Opened {
            credentials,
            needs_reseal,
        })
    }

    /// Seals a short opaque value (a cookie) for `context`: `v1.<key id>.<base64url(nonce ‖ ciphertext)>`.
    /// Only this vault, with the same context, can open it.
    pub fn seal_token(&self, context: &str, plaintext: &[u8]) -> Result<String, VaultError> {
        use base64::Engine as _;
        let (nonce, ciphertext) = self
            .current
            .encrypt(&token_associated_data(context), plaintext)?;
        let blob = [nonce.as_slice(), &ciphertext].concat();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(blob);
        Ok(format!("{TOKEN_PREFIX}.{}.{b64}", self.current.version))
    }

    /// Opens what [`Vault::seal_token`] sealed for the same `context`.
    pub fn open_token(&self, context: &str, token: &str) -> Result<Vec<u8>, VaultError> {
        use base64::Engine as _;
        let mut parts = token.splitn(3, '.');
        let (Some(TOKEN_PREFIX), Some(version), Some(b64)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(VaultError::Malformed);
        };
        let (key, _) = self.key(version)?;
        let blob = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|_| VaultError::Malformed)?;
        if blob.len() < 12 + 16 {
            return Err(VaultError::Malformed);
        }
        let (nonce, ciphertext) = blob.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| VaultError::Malformed)?;
        key.decrypt(nonce, &token_associated_data(context), ciphertext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const KEY_B: &str = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff000102030405060708090a0b0c0d0e0f";

    fn oauth() -> Credentials {
        Credentials::OAuth {
            access_token: "at-secret-123".into(),
            refresh_token: Some("rt-secret-456".into()),
            expires_at: Some(1_900_000_000),
        }
    }

    #[test]
    fn round_trip_hides_the_plaintext() {
        let vault = Vault::new(KEY_A, None).unwrap();
        let id = Uuid::new_v4();
        let sealed = vault.seal(id, Provider::Rex, &oauth()).unwrap();
        assert_eq!(sealed.key_version, vault.current_key_version());
        let raw = String::from_utf8_lossy(&sealed.ciphertext);
        assert!(!raw.contains("at-secret-123") && !raw.contains("rt-secret-456"));
        let opened = vault.open(id, Provider::Rex, &sealed).unwrap();
        assert_eq!(opened.credentials, oauth());
        assert!(!opened.needs_reseal);

        let key = Credentials::ApiKey {
            key: "lofty-key".into(),
        };
        let sealed = vault.seal(id, Provider::Lofty, &key).unwrap();
        assert_eq!(
            vault
                .open(id, Provider::Lofty, &sealed)
                .unwrap()
                .credentials,
            key
        );
    }

    #[test]
    fn every_seal_uses_a_fresh_nonce() {
        let vault = Vault::new(KEY_A, None).unwrap();
        let id = Uuid::new_v4();
        let a = vault.seal(id, Provider::Rex, &oauth()).unwrap();
        let b = vault.seal(id, Provider::Rex, &oauth()).unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn tampering_is_detected() {
        let vault = Vault::new(KEY_A, None).unwrap();
        let id = Uuid::new_v4();
        let sealed = vault.seal(id, Provider::FollowUpBoss, &oauth()).unwrap();
        for i in [0, sealed.ciphertext.len() / 2, sealed.ciphertext.len() - 1] {
            let mut bad = sealed.clone();
            bad.ciphertext[i] ^= 0x01;
            assert_eq!(
                vault.open(id, Provider::FollowUpBoss, &bad).unwrap_err(),
                VaultError::Tampered
            );
        }
        let mut bad = sealed.clone();
        bad.nonce[0] ^= 0x80;
        assert_eq!(
            vault.open(id, Provider::FollowUpBoss, &bad).unwrap_err(),
            VaultError::Tampered
        );
        let mut bad = sealed;
        bad.ciphertext.truncate(10);
        assert_eq!(
            vault.open(id, Provider::FollowUpBoss, &bad).unwrap_err(),
            VaultError::Tampered
        );
    }

    #[test]
    fn credentials_are_bound_to_their_integration_and_provider() {
        let vault = Vault::new(KEY_A, None).unwrap();
        let id = Uuid::new_v4();
        let sealed = vault.seal(id, Provider::Rex, &oauth()).unwrap();
        // Copied onto another integration's row, or relabelled as another provider: refused.
        assert_eq!(
            vault
                .open(Uuid::new_v4(), Provider::Rex, &sealed)
                .unwrap_err(),
            VaultError::Tampered
        );
        assert_eq!(
            vault.open(id, Provider::Lofty, &sealed).unwrap_err(),
            VaultError::Tampered
        );
    }

    #[test]
    fn rotation_reads_old_seals_and_writes_with_the_new_key() {
        let old = Vault::new(KEY_A, None).unwrap();
        let id = Uuid::new_v4();
        let sealed_old = old.seal(id, Provider::Rex, &oauth()).unwrap();

        let rotated = Vault::new(KEY_B, Some(KEY_A)).unwrap();
        assert_eq!(
            rotated.previous_key_version(),
            Some(old.current_key_version())
        );
        assert_eq!(old.previous_key_version(), None);
        let opened = rotated.open(id, Provider::Rex, &sealed_old).unwrap();
        assert_eq!(opened.credentials, oauth());
        assert!(
            opened.needs_reseal,
            "a seal by the previous key must be re-sealed"
        );

        let resealed = rotated
            .seal(id, Provider::Rex, &opened.credentials)
            .unwrap();
        assert_ne!(resealed.key_version, sealed_old.key_version);
        assert!(
            !rotated
                .open(id, Provider::Rex, &resealed)
                .unwrap()
                .needs_reseal
        );

        // Once the old key is retired, its seals are reported as such, not as tampering.
        let retired = Vault::new(KEY_B, None).unwrap();
        assert!(matches!(
            retired.open(id, Provider::Rex, &sealed_old),
            Err(VaultError::UnknownKey(_))
        ));
        // The old key alone cannot open what the new key sealed.
        assert!(matches!(
            old.open(id, Provider::Rex, &resealed),
            Err(VaultError::UnknownKey(_))
        ));
    }

    #[test]
    fn bad_keys_are_refused() {
        assert_eq!(Vault::new("abc", None).unwrap_err(), VaultError::BadKey);
        assert_eq!(
            Vault::new(&"zz".repeat(32), None).unwrap_err(),
            VaultError::BadKey
        );
        assert_eq!(
            Vault::new(&KEY_A[..62], None).unwrap_err(),
            VaultError::BadKey
        );
        assert_eq!(
            Vault::new(KEY_A, Some("nope")).unwrap_err(),
            VaultError::BadKey
        );
        assert!(
            Vault::new(KEY_A, Some("")).is_ok(),
            "an empty previous key means none"
        );
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let text = format!(
            "{:?} {:?}",
            oauth(),
            Credentials::ApiKey {
                key: "k-123".into()
            }
        );
        assert!(
            !text.contains("at-secret-123")
                && !text.contains("rt-secret-456")
                && !text.contains("k-123")
        );
    }

    #[test]
    fn sealed_tokens_open_only_in_their_context() {
        let vault = Vault::new(KEY_A, None).unwrap();
        let token = vault
            .seal_token("oauth-state", b"state-and-verifier")
            .unwrap();
        assert!(token.starts_with("v1.") && !token.contains("state-and-verifier"));
        assert_eq!(
            vault.open_token("oauth-state", &token).unwrap(),
            b"state-and-verifier"
        );
        assert_eq!(
            vault.open_token("other", &token).unwrap_err(),
            VaultError::Tampered
        );
        let mut bad = token.clone().into_bytes();
        let last = bad.len() - 2;
        bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
        assert!(
            vault
                .open_token("oauth-state", std::str::from_utf8(&bad).unwrap())
                .is_err()
        );
        assert_eq!(
            vault.open_token("oauth-state", "garbage").unwrap_err(),
            VaultError::Malformed
        );
        let rotated = Vault::new(KEY_B, Some(KEY_A)).unwrap();
        assert_eq!(
            rotated.open_token("oauth-state", &token).unwrap(),
            b"state-and-verifier"
        );
        assert!(
            Vault::new(KEY_B, None)
                .unwrap()
                .open_token("oauth-state", &token)
                .is_err()
        );
    }
}
