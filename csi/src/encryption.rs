//! Per-volume encryption, as both halves of the driver see it. The StorageClass parameter
//! `lvms.topolvm.io/encryption: luks2` (checked at CreateVolume) travels to the node in the
//! volume context, like the mkfs options; the key comes with NodePublishVolume, from the Secret
//! the StorageClass names in `csi.storage.k8s.io/node-publish-secret-name` and `-namespace`
//! (kubelet reads it and passes its entries as the request's secrets).

use std::collections::HashMap;

use lvm::crypt::Key;
use tonic::Status;

/// StorageClass parameter and volume context key.
pub const ENCRYPTION_KEY: &str = "lvms.topolvm.io/encryption";
/// The one value that turns encryption on.
pub const LUKS2: &str = "luks2";
/// The Secret's entry holding the key.
pub const SECRET_KEY_ENTRY: &str = "key";

/// Whether `map` (StorageClass parameters or a volume context) asks for LUKS2; `none` or no
/// entry is no encryption, anything else a bad argument naming the field.
pub fn requested(map: &HashMap<String, String>, field: &str) -> Result<bool, Status> {
    match map.get(ENCRYPTION_KEY).map(String::as_str) {
        None | Some("none") => Ok(false),
        Some(LUKS2) => Ok(true),
        Some(other) => Err(Status::invalid_argument(format!(
            "{field}[{ENCRYPTION_KEY}]: {other:?} is not an encryption this driver knows: use {LUKS2:?} (or \"none\")"
        ))),
    }
}

/// What CreateVolume adds to the volume context for the node.
pub fn volume_context(params: &HashMap<String, String>) -> Result<HashMap<String, String>, Status> {
    Ok(if requested(params, "parameters")? {
        HashMap::from([(ENCRYPTION_KEY.to_string(), LUKS2.to_string())])
    } else {
        HashMap::new()
    })
}

/// The key of encrypted volume `volume` from NodePublishVolume's secrets. The errors say what
/// to fix and list the entries found, never a value.
pub fn key(secrets: &HashMap<String, String>, volume: &str) -> Result<Key, Status> {
    if secrets.is_empty() {
        return Err(Status::invalid_argument(format!(
            "volume {volume} is encrypted ({ENCRYPTION_KEY}: {LUKS2}) but NodePublishVolume brought no secrets: \
             the StorageClass must name the key's Secret in csi.storage.k8s.io/node-publish-secret-name and \
             csi.storage.k8s.io/node-publish-secret-namespace"
        )));
    }
    let Some(value) = secrets.get(SECRET_KEY_ENTRY) else {
        let mut entries: Vec<&str> = secrets.keys().map(String::as_str).collect();
        entries.sort_unstable();
        return Err(Status::invalid_argument(format!(
            "volume {volume}: the node-publish Secret has no entry {SECRET_KEY_ENTRY:?} holding the key (its entries: {})",
            entries.join(", ")
        )));
    };
    Key::new(value.as_bytes().to_vec()).map_err(|e| {
        Status::invalid_argument(format!(
            "volume {volume}: the node-publish Secret's entry {SECRET_KEY_ENTRY:?}: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn only_luks2_turns_it_on_and_a_typo_is_named() {
        assert!(!requested(&map(&[]), "parameters").unwrap());
        assert!(!requested(&map(&[(ENCRYPTION_KEY, "none")]), "parameters").unwrap());
        assert!(requested(&map(&[(ENCRYPTION_KEY, "luks2")]), "parameters").unwrap());
        let e = requested(&map(&[(ENCRYPTION_KEY, "LUKS")]), "parameters").unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message()
                .starts_with("parameters[lvms.topolvm.io/encryption]: \"LUKS\""),
            "{}",
            e.message()
        );
        assert_eq!(
            volume_context(&map(&[(ENCRYPTION_KEY, "luks2")])).unwrap(),
            map(&[(ENCRYPTION_KEY, "luks2")])
        );
        assert!(volume_context(&map(&[])).unwrap().is_empty());
    }

    #[test]
    fn the_key_comes_from_the_secret_entry_and_is_never_quoted() {
        let e = key(&map(&[]), "v1").unwrap_err();
        assert!(
            e.message().contains("node-publish-secret-name"),
            "{}",
            e.message()
        );
        let e = key(&map(&[("passphrase", "s3cret"), ("b", "x")]), "v1").unwrap_err();
        assert!(
            e.message().contains("(its entries: b, passphrase)") && !e.message().contains("s3cret"),
            "{}",
            e.message()
        );
        assert!(key(&map(&[("key", "")]), "v1").is_err());
        assert!(key(&map(&[("key", "s3cret")]), "v1").is_ok());
    }
}
