//! First start: the `default` workspace and its admin key.

use crate::auth::{generate_secret, hash_secret, secret_prefix};
use berth_core::{now_secs, KeyId, WorkspaceId};
use berth_store::{KeyRecord, Store, WorkspaceRecord};
use std::io::Write;
use std::path::Path;

/// Creates workspace `default` with an admin key when the database is empty.
///
/// The key is `BERTH_ADMIN_KEY` when set; otherwise a fresh one, printed once and
/// written to `DIR/admin.key` (mode 0600).
pub async fn ensure_default_workspace(store: &dyn Store, data_dir: &Path, instance_limit: u32) -> anyhow::Result<()> {
    if store.workspace_count().await? > 0 {
        return Ok(());
    }
    // The key first: a refused one leaves no keyless workspace behind.
    let (secret, generated) = match admin_key_env()? {
        Some(k) => (k, false),
        None => (generate_secret(), true),
    };
    let now = now_secs();
    let ws = WorkspaceRecord { id: WorkspaceId::generate(), name: "default".into(), instance_limit, created_at: now };
    store.create_workspace(&ws).await?;
    store
        .create_key(&KeyRecord {
            id: KeyId::generate(),
            workspace_id: ws.id.clone(),
            name: "admin".into(),
            prefix: secret_prefix(&secret),
            hash: hash_secret(&secret),
            admin: true,
            created_at: now,
            expires_at: None,
            instance_id: None,
        })
        .await?;
    if generated {
        let path = data_dir.join("admin.key");
        write_private(&path, &format!("{secret}\n"))?;
        println!("Created workspace `default` ({}) with admin key:\n\n    {secret}\n", ws.id);
        println!("It is shown once; a copy is in {} (mode 0600).", path.display());
    } else {
        println!("Created workspace `default` ({}) with the admin key from BERTH_ADMIN_KEY.", ws.id);
    }
    Ok(())
}

/// `BERTH_ADMIN_KEY` when it is set, refused when too weak; the server checks it
/// before anything starts.
pub fn admin_key_env() -> anyhow::Result<Option<String>> {
    match std::env::var("BERTH_ADMIN_KEY") {
        Ok(k) if !k.trim().is_empty() => given_admin_key(k.trim()).map(Some),
        _ => Ok(None),
    }
}

/// Shortest `BERTH_ADMIN_KEY` accepted: it guards every workspace.
const MIN_ADMIN_KEY: usize = 32;

/// Checks an operator-given admin key: long enough, printable, no white space.
fn given_admin_key(key: &str) -> anyhow::Result<String> {
    if key.chars().count() < MIN_ADMIN_KEY {
        anyhow::bail!(
            "BERTH_ADMIN_KEY must be at least {MIN_ADMIN_KEY} random characters (it has {}); \
             unset it and berth generates one",
            key.chars().count()
        );
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        anyhow::bail!("BERTH_ADMIN_KEY must not contain white space or control characters");
    }
    Ok(key.to_string())
}

/// Name of the server's secret key file in the data dir.
pub const SECRET_KEY_FILE: &str = "secret.key";

/// The server's secret key (sealing `env` at rest, deriving gateway tokens):
/// `BERTH_SECRET_KEY` (64 hex digits) when set, else the data dir's `secret.key`,
/// made on first start. Losing it loses every instance's `env`: back it up with the
/// database; replicas sharing a database share it too.
pub fn secret_key(data: &Path) -> anyhow::Result<berth_store::seal::SealKey> {
    use anyhow::Context;
    use berth_store::seal::SealKey;
    if let Some(text) = std::env::var("BERTH_SECRET_KEY").ok().filter(|t| !t.trim().is_empty()) {
        return SealKey::from_hex(&text).map_err(|e| anyhow::anyhow!("BERTH_SECRET_KEY: {e}"));
    }
    let path = data.join(SECRET_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => SealKey::from_hex(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}; restore the file this database was used with", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SealKey::generate();
            write_private(&path, &format!("{}\n", key.to_hex()))
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_given_admin_key_must_be_long_and_plain() {
        assert!(super::given_admin_key("sk_short").is_err());
        assert!(super::given_admin_key(&"a b".repeat(20)).is_err());
        let k = format!("sk_{}", "x7".repeat(16));
        assert_eq!(super::given_admin_key(&k).unwrap(), k);
    }
}
