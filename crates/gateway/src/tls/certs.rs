//! Certificates as files: reading a PEM chain and key into what rustls serves, learning a
//! certificate's lifetime, writing state atomically (mode 0600), and the cache of
//! operator-provided certificate files that notices when they are replaced on disk.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file holds no usable PEM certificate or key.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key does not suit rustls (unsupported algorithm) or does not match.
    #[error("{path}: {reason}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A certificate ready to serve, with its validity period.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    /// The chain and signing key.
    pub key: Arc<CertifiedKey>,
    /// Start of validity, seconds since the epoch.
    pub not_before: i64,
    /// End of validity, seconds since the epoch.
    pub not_after: i64,
}

/// Reads a PEM chain and key from files.
pub fn load_pair(cert: &Path, key: &Path) -> Result<LoadedCert, CertError> {
    let cert_pem = std::fs::read(cert).map_err(|source| CertError::Io {
        path: cert.to_path_buf(),
        source,
    })?;
    let key_pem = std::fs::read(key).map_err(|source| CertError::Io {
        path: key.to_path_buf(),
        source,
    })?;
    parse_pair(&cert_pem, &key_pem, cert, key)
}

/// Parses a PEM chain and key; the paths only name them in errors.
pub fn parse_pair(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<LoadedCert, CertError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|err| CertError::Pem {
            path: cert_path.to_path_buf(),
            reason: err.to_string(),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(CertError::Pem {
            path: cert_path.to_path_buf(),
            reason: "no CERTIFICATE block".into(),
        });
    };
    let (not_before, not_after) = validity(leaf).map_err(|reason| CertError::Pem {
        path: cert_path.to_path_buf(),
        reason,
    })?;
    let key_der = PrivateKeyDer::from_pem_slice(key_pem).map_err(|err| CertError::Pem {
        path: key_path.to_path_buf(),
        reason: format!("no usable private key: {err}"),
    })?;
    let signing_key =
        rustls::crypto::ring::sign::any_supported_type(&key_der).map_err(|err| CertError::Key {
            path: key_path.to_path_buf(),
            reason: err.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|err| CertError::Key {
        path: key_path.to_path_buf(),
        reason: format!("does not match the certificate: {err}"),
    })?;
    Ok(LoadedCert {
        key: Arc::new(certified),
        not_before,
        not_after,
    })
}

/// A certificate's validity period, in seconds since the epoch.
pub fn validity(cert: &CertificateDer<'_>) -> Result<(i64, i64), String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|err| format!("unparsable certificate: {err}"))?;
    let validity = parsed.validity();
    Ok((
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    ))
}

/// Seconds since the epoch, now.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename,
/// so a crash leaves the old file or the new one, never half of one; mode 0600.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CertError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

/// What identifies a file's version on disk: replaced by rename or rewritten in place,
/// one of these changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

#[derive(Debug)]
struct CachedPair {
    stamps: (Option<FileStamp>, Option<FileStamp>),
    cert: LoadedCert,
}

/// Operator-provided certificate files, parsed once and re-read when either file's
/// stamp changes (checked on each handshake: two `stat` calls, so a replaced file is
/// served from the very next handshake, with no watcher to miss an event).
#[derive(Debug, Default)]
pub struct FileCerts {
    pairs: Mutex<HashMap<(PathBuf, PathBuf), Arc<CachedPair>>>,
}

impl FileCerts {
    /// The certificate in the files now. When they changed but do not parse (an editor
    /// half-way through writing them), the last good one keeps serving.
    pub fn get(&self, cert: &Path, key: &Path) -> Option<LoadedCert> {
        let stamps = (stamp(cert), stamp(key));
        let id = (cert.to_path_buf(), key.to_path_buf());
        let cached = self
            .pairs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned();
        if let Some(cached) = &cached {
            if cached.stamps == stamps {
                return Some(cached.cert.clone());
            }
        }
        match load_pair(cert, key) {
            Ok(loaded) => {
                if cached.is_some() {
                    tracing::info!(cert = %cert.display(), "certificate file changed; serving the new one");
                }
                let entry = Arc::new(CachedPair {
                    stamps,
                    cert: loaded.clone(),
                });
                self.pairs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id, entry);
                Some(loaded)
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot load the certificate files; keeping the previous certificate");
                // Remember the broken stamps with the good certificate, so the files are
                // read (and the warning logged) again only when they change again.
                let previous = cached?;
                let entry = Arc::new(CachedPair {
                    stamps,
                    cert: previous.cert.clone(),
                });
                self.pairs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id, entry);
                Some(previous.cert.clone())
            }
        }
    }

    /// Forgets pairs no tenant names any more.
    pub fn retain(&self, keep: impl Fn(&Path, &Path) -> bool) {
        self.pairs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(cert, key), _| keep(cert, key));
    }
}
