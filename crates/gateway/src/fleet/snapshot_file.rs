//! The last good registry on disk (`[registry] snapshot_file`): written atomically after
//! each registry put in service, read at a start during which PostgreSQL is down.
//!
//! It holds the tenants' settings in clear, database passwords included, so it is
//! written mode 0600.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::registry::{RegistryView, TenantEntry};
use super::FleetError;

#[derive(Serialize, Deserialize)]
struct File {
    version: i64,
    tenants: BTreeMap<String, Row>,
}

#[derive(Serialize, Deserialize)]
struct Row {
    version: i64,
    spec: serde_json::Value,
}

/// Writes `view` to `path` atomically (a temporary file renamed over it).
pub fn save(path: &Path, view: &RegistryView) -> Result<(), FleetError> {
    let file = File {
        version: view.version,
        tenants: view
            .tenants
            .iter()
            .map(|(name, entry)| {
                (
                    name.clone(),
                    Row {
                        version: entry.version,
                        spec: entry.spec.clone(),
                    },
                )
            })
            .collect(),
    };
    let fail = |source| FleetError::SnapshotFile {
        path: path.to_path_buf(),
        source,
    };
    let text = serde_json::to_vec(&file).map_err(|source| FleetError::SnapshotFormat {
        path: path.to_path_buf(),
        source,
    })?;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp_name);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    out.write_all(&text).map_err(fail)?;
    out.sync_all().map_err(fail)?;
    drop(out);
    std::fs::rename(&tmp, path).map_err(fail)
}

/// Reads a registry written by [`save`].
pub fn load(path: &Path) -> Result<RegistryView, FleetError> {
    let text = std::fs::read(path).map_err(|source| FleetError::SnapshotFile {
        path: path.to_path_buf(),
        source,
    })?;
    let file: File =
        serde_json::from_slice(&text).map_err(|source| FleetError::SnapshotFormat {
            path: path.to_path_buf(),
            source,
        })?;
    let mut tenants = BTreeMap::new();
    for (name, row) in file.tenants {
        let entry = TenantEntry::parse(&name, row.version, row.spec)?;
        tenants.insert(name, entry);
    }
    Ok(RegistryView {
        version: file.version,
        tenants,
    })
}
