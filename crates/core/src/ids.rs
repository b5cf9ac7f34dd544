//! Typed identifiers. An instance id is `inst_` + 10 chars of `[a-z0-9]`; those
//! 10 chars are the DNS label of the instance's URL.

use rand::Rng;
use serde::{Deserialize, Serialize};
use std::fmt;

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Random string of `len` chars from `[a-z0-9]`.
pub fn random_label(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $len:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The prefix every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh random id.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, random_label($len)))
            }

            /// Parses an id, refusing anything not of the form `prefix` + `[a-z0-9]{len}`.
            pub fn parse(s: &str) -> Option<Self> {
                let rest = s.strip_prefix($prefix)?;
                let ok = rest.len() == $len
                    && rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
                ok.then(|| Self(s.to_string()))
            }

            /// Wraps a value read back from the store without re-validating it.
            pub fn from_trusted(s: String) -> Self {
                Self(s)
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

typed_id!(
    /// Identifies an instance: `inst_` + 10 chars.
    InstanceId, "inst_", 10
);
typed_id!(
    /// Identifies a workspace (a tenant): `ws_` + 12 chars.
    WorkspaceId, "ws_", 12
);
typed_id!(
    /// Identifies an API key (not the secret itself): `key_` + 12 chars.
    KeyId, "key_", 12
);

typed_id!(
    /// Identifies a share link: `shr_` + 16 chars.
    ShareId, "shr_", 16
);

typed_id!(
    /// Identifies a custom template: `tpl_` + 12 chars.
    TemplateId, "tpl_", 12
);

/// Length of a port handle: longer than an instance label, so the two never collide.
pub const HANDLE_LEN: usize = 20;

/// A fresh opaque handle for a port URL (`{handle}.{domain}`): random, not derivable
/// from the instance id.
pub fn port_handle() -> String {
    random_label(HANDLE_LEN)
}

impl InstanceId {
    /// The DNS label of the instance's URL: the id without its prefix.
    pub fn label(&self) -> &str {
        &self.0[Self::PREFIX.len()..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_have_the_documented_shape() {
        let id = InstanceId::generate();
        assert!(id.as_str().starts_with("inst_"));
        assert_eq!(id.label().len(), 10);
        assert_eq!(InstanceId::parse(id.as_str()), Some(id.clone()));
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in ["inst_", "inst_ABCDEFGHIJ", "inst_abc", "ws_abcdefghij12", "inst_abcdefghij1", "inst_abc/efghij"] {
            assert_eq!(InstanceId::parse(bad), None, "{bad}");
        }
    }
}
