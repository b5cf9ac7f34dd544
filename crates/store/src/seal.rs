//! Secrets at rest: tenants' `env` values are sealed before they reach the database,
//! and gateway tokens are derived instead of stored, both from one server key kept
//! outside the database (the data dir's `secret.key`, or `BERTH_SECRET_KEY`), so a
//! copy of the database alone reveals neither.

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Prefix of a sealed value (the version says which scheme sealed it).
const SEALED_PREFIX: &str = "sealed:v1:";
/// Bytes of an XChaCha20 nonce.
const NONCE_LEN: usize = 24;

/// The server's secret key (32 bytes).
#[derive(Clone)]
pub struct SealKey {
    cipher: XChaCha20Poly1305,
    master: [u8; 32],
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(***)")
    }
}

/// Why a key or a sealed value is unusable.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("a secret key is 64 hex digits (32 bytes)")]
    BadKey,
    #[error("a sealed value could not be opened: it was sealed with another key, or is damaged")]
    Open,
}

impl SealKey {
    /// A new random key.
    pub fn generate() -> Self {
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        Self::from_bytes(key.into())
    }

    /// The key of 64 hex digits (surrounding white space ignored).
    pub fn from_hex(text: &str) -> Result<Self, SealError> {
        let bytes: [u8; 32] = hex::decode(text.trim()).ok().and_then(|b| b.try_into().ok()).ok_or(SealError::BadKey)?;
        Ok(Self::from_bytes(bytes))
    }

    /// The key as 64 hex digits (to be written to the key file).
    pub fn to_hex(&self) -> String {
        hex::encode(self.master)
    }

    fn from_bytes(master: [u8; 32]) -> Self {
        // The cipher's key is derived, so the same master never keys two algorithms.
        let env_key = derive(&master, b"berth env seal v1");
        SealKey { cipher: XChaCha20Poly1305::new(&env_key.into()), master }
    }

    /// `plain` sealed: `sealed:v1:` and hex of nonce and ciphertext.
    pub fn seal(&self, plain: &str) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self.cipher.encrypt(&nonce, plain.as_bytes()).expect("sealing into memory cannot fail");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        format!("{SEALED_PREFIX}{}", hex::encode(bytes))
    }

    /// The plain text of a value [`SealKey::seal`] made.
    pub fn open(&self, sealed: &str) -> Result<String, SealError> {
        let bytes = sealed.strip_prefix(SEALED_PREFIX).and_then(|h| hex::decode(h).ok()).ok_or(SealError::Open)?;
        if bytes.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, ct) = bytes.split_at(NONCE_LEN);
        let plain = self.cipher.decrypt(XNonce::from_slice(nonce), ct).map_err(|_| SealError::Open)?;
        String::from_utf8(plain).map_err(|_| SealError::Open)
    }

    /// The gateway token of instance `id`: what the edge presents to its agent.
    pub fn gateway_token(&self, id: &str) -> String {
        let mac = derive(&self.master, format!("berth gateway token v1:{id}").as_bytes());
        hex::encode(&mac[..20])
    }

    /// The default secret webhooks are signed with.
    pub fn webhook_secret(&self) -> String {
        format!("whsec_{}", hex::encode(derive(&self.master, b"berth webhook secret v1")))
    }

    /// The managed-LLM token of instance `id` (its `BERTH_LLM_API_KEY`):
    /// `sk-berth-<id>-<hex>`, verified by [`SealKey::llm_token_instance`].
    pub fn llm_token(&self, id: &str) -> String {
        let mac = derive(&self.master, format!("berth llm token v1:{id}").as_bytes());
        format!("{LLM_TOKEN_PREFIX}{id}-{}", hex::encode(&mac[..20]))
    }

    /// The instance id a managed-LLM token was made for, when it is genuine.
    pub fn llm_token_instance<'a>(&self, token: &'a str) -> Option<&'a str> {
        let rest = token.strip_prefix(LLM_TOKEN_PREFIX)?;
        let (id, _) = rest.rsplit_once('-')?;
        let expected = self.llm_token(id);
        // Constant time: the comparison must not tell how much of a guess was right.
        let same = expected.len() == token.len()
            && expected.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        same.then_some(id)
    }
}

/// What every managed-LLM token starts with.
pub const LLM_TOKEN_PREFIX: &str = "sk-berth-";

/// HMAC-SHA-256 of `label` under `master`: a subkey or token for that purpose only.
fn derive(master: &[u8; 32], label: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(master).expect("HMAC takes any key length");
    mac.update(label);
    mac.finalize().into_bytes().into()
}

/// Whether `text` is a sealed value.
pub fn is_sealed(text: &str) -> bool {
    text.starts_with(SEALED_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key() {
        let k = SealKey::generate();
        let s = k.seal(r#"{"OPENAI_API_KEY":"sk-123"}"#);
        assert!(is_sealed(&s) && !s.contains("sk-123"), "{s}");
        assert_ne!(s, k.seal(r#"{"OPENAI_API_KEY":"sk-123"}"#), "a fresh nonce each time");
        assert_eq!(k.open(&s).unwrap(), r#"{"OPENAI_API_KEY":"sk-123"}"#);
        assert!(matches!(SealKey::generate().open(&s), Err(SealError::Open)));
        let mut tampered = s.clone();
        tampered.replace_range(s.len() - 2.., if s.ends_with("00") { "01" } else { "00" });
        assert!(k.open(&tampered).is_err(), "tampering is detected");
        let again = SealKey::from_hex(&k.to_hex()).unwrap();
        assert_eq!(again.open(&s).unwrap(), k.open(&s).unwrap(), "the key survives its file");
        assert!(SealKey::from_hex("abc").is_err());
    }

    #[test]
    fn llm_tokens_name_their_instance_and_cannot_be_forged() {
        let k = SealKey::generate();
        let t = k.llm_token("inst_abcdefghij");
        assert_eq!(k.llm_token_instance(&t), Some("inst_abcdefghij"));
        assert_eq!(SealKey::generate().llm_token_instance(&t), None);
        let forged = t.replace("inst_abcdefghij", "inst_zzzzzzzzzz");
        assert_eq!(k.llm_token_instance(&forged), None);
        assert_eq!(k.llm_token_instance(&t[..t.len() - 1]), None);
        assert_eq!(k.llm_token_instance("sk-berth-"), None);
        assert_ne!(t.rsplit('-').next(), Some(k.gateway_token("inst_abcdefghij").as_str()));
    }

    #[test]
    fn gateway_tokens_are_per_instance_and_per_key() {
        let k = SealKey::generate();
        let t = k.gateway_token("inst_a");
        assert_eq!(t.len(), 40);
        assert_eq!(t, k.gateway_token("inst_a"));
        assert_ne!(t, k.gateway_token("inst_b"));
        assert_ne!(t, SealKey::generate().gateway_token("inst_a"));
    }
}
