//! nginx's `open_file_cache` for static files: open descriptors with their metadata and
//! ready-made validators, kept by path for [`VALID`] (nginx's `open_file_cache_valid`),
//! then checked with one `stat` (same device, inode, size and modification time: kept;
//! otherwise reopened). At most [`MAX_ENTRIES`] paths are kept (nginx's `max`); a path
//! that does not exist is remembered too, so a request that looks for a precompressed
//! sidecar costs no system call while the answer is fresh.
//!
//! Small files (up to [`SMALL_FILE`]) are read once and kept in memory, without a
//! descriptor: their answer is then one `writev` of head and body. Larger ones keep their
//! descriptor (so at most [`MAX_ENTRIES`] are held) and are mapped on first use for
//! `sendfile(2)` ([`crate::sendfile`]), and read with `pread` where that cannot be used.
//!
//! The system calls here are made on the runtime's thread, as nginx makes them on its
//! worker's: a `stat`/`open` of a file being served is a page-cache hit, and the cache
//! makes them rare. A file changed in place is seen within [`VALID`].

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use foldhash::fast::RandomState;
use http::HeaderValue;

/// How long a cached answer for a path is used without looking at the file again.
pub(crate) const VALID: Duration = Duration::from_secs(1);
/// How many paths are kept.
pub(crate) const MAX_ENTRIES: usize = 4096;
/// Files up to this size are kept in memory while cached.
pub(crate) const SMALL_FILE: u64 = 32 * 1024;

/// One open regular file and what its answers need.
#[derive(Debug)]
pub(crate) struct OpenFile {
    /// `None` for a small file: its content is all that is needed, and no descriptor is
    /// held for it.
    file: Option<Arc<File>>,
    len: u64,
    /// Seconds since the epoch of the modification time (`Last-Modified`'s precision).
    modified_secs: u64,
    /// `"<mtime hex>-<size hex>"`, nginx's strong entity tag, unquoted.
    etag_core: String,
    etag: HeaderValue,
    last_modified: HeaderValue,
    content_type: HeaderValue,
    identity: Identity,
    small: Option<Bytes>,
    mapped: OnceLock<Option<Bytes>>,
}

/// What says a path still names the same, unchanged file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Identity {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }
}

impl OpenFile {
    /// Opens `path` (uncached), with the content type its name `named` gives it; `None`
    /// when it is not a regular file.
    pub(crate) fn open(path: &Path, named: &Path) -> io::Result<Option<OpenFile>> {
        let mut file = File::open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Ok(None);
        }
        let len = meta.len();
        let small = if len <= SMALL_FILE {
            let mut content = Vec::with_capacity(len as usize);
            (&mut file).take(len).read_to_end(&mut content)?;
            Some(Bytes::from(content))
        } else {
            None
        };
        let modified = meta.modified().unwrap_or(UNIX_EPOCH);
        let modified_secs = modified
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let etag_core = format!("{modified_secs:x}-{len:x}");
        let mime = mime_guess::from_path(named).first_or_octet_stream();
        Ok(Some(OpenFile {
            file: small.is_none().then(|| Arc::new(file)),
            len: small.as_ref().map_or(len, |s| s.len() as u64),
            modified_secs,
            // Quotes, hex digits and a dash; a date; a MIME type: always valid values.
            etag: HeaderValue::try_from(format!("\"{etag_core}\""))
                .unwrap_or(HeaderValue::from_static("\"0-0\"")),
            etag_core,
            last_modified: HeaderValue::try_from(httpdate::fmt_http_date(modified))
                .unwrap_or(HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT")),
            content_type: HeaderValue::try_from(mime.as_ref())
                .unwrap_or(HeaderValue::from_static("application/octet-stream")),
            identity: Identity::of(&meta),
            small,
            mapped: OnceLock::new(),
        }))
    }

    /// The file's size in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Its modification time in whole seconds since the epoch.
    pub(crate) fn modified_secs(&self) -> u64 {
        self.modified_secs
    }

    /// The strong entity tag, with quotes.
    pub(crate) fn etag(&self) -> &HeaderValue {
        &self.etag
    }

    /// The entity tag without its quotes, to derive a sidecar's from.
    pub(crate) fn etag_core(&self) -> &str {
        &self.etag_core
    }

    /// `Last-Modified`.
    pub(crate) fn last_modified(&self) -> &HeaderValue {
        &self.last_modified
    }

    /// `Content-Type` from the file's name.
    pub(crate) fn content_type(&self) -> &HeaderValue {
        &self.content_type
    }

    /// The descriptor, for reads; `None` for a small file (see [`OpenFile::small`]).
    pub(crate) fn file(&self) -> Option<&File> {
        self.file.as_deref()
    }

    /// The whole content, when the file is small enough to be kept in memory.
    pub(crate) fn small(&self) -> Option<&Bytes> {
        self.small.as_ref()
    }

    /// The whole file mapped for `sendfile(2)`, mapped on first use; `None` when it
    /// cannot be (then it is read).
    pub(crate) fn mapped(&self) -> Option<&Bytes> {
        let file = self.file.as_ref()?;
        self.mapped
            .get_or_init(|| match crate::sendfile::map(file, self.len) {
                Ok(mapped) => Some(mapped),
                Err(err) => {
                    tracing::debug!(error = %err, "cannot map a file; reading it instead");
                    None
                }
            })
            .as_ref()
    }
}

struct Slot {
    checked: Instant,
    /// `None`: no regular file at this path.
    file: Option<Arc<OpenFile>>,
}

/// Open files by path, shared by every tenant (they share the document root).
struct OpenFileCache {
    slots: Mutex<HashMap<PathBuf, Slot, RandomState>>,
}

static CACHE: LazyLock<OpenFileCache> = LazyLock::new(|| OpenFileCache {
    slots: Mutex::new(HashMap::with_hasher(RandomState::default())),
});

/// The regular file at `path`, from the cache while fresh: `Ok(None)` when there is none
/// (missing, or not a regular file), an error when it cannot be opened (permissions).
pub(crate) fn lookup(path: &Path) -> io::Result<Option<Arc<OpenFile>>> {
    CACHE.lookup(path, Instant::now())
}

impl OpenFileCache {
    fn lookup(&self, path: &Path, now: Instant) -> io::Result<Option<Arc<OpenFile>>> {
        let stale = {
            let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            match slots.get(path) {
                Some(slot) if now.duration_since(slot.checked) < VALID => {
                    return Ok(slot.file.clone())
                }
                Some(slot) => Some(slot.file.clone()),
                None => None,
            }
        };
        let file = match std::fs::metadata(path) {
            Ok(meta) => match stale.flatten() {
                Some(kept) if kept.identity == Identity::of(&meta) => Some(kept),
                _ if !meta.is_file() => None,
                _ => OpenFile::open(path, path)?.map(Arc::new),
            },
            Err(err) if is_absent(&err) => None,
            Err(err) => return Err(err),
        };
        self.store(path, now, file.clone());
        Ok(file)
    }

    fn store(&self, path: &Path, now: Instant, file: Option<Arc<OpenFile>>) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.len() >= MAX_ENTRIES && !slots.contains_key(path) {
            slots.retain(|_, slot| now.duration_since(slot.checked) < VALID);
            if slots.len() >= MAX_ENTRIES {
                // Every entry is fresh: more files in use than the cache holds. Start
                // over rather than keep a recency list on every hit.
                slots.clear();
            }
        }
        slots.insert(path.to_path_buf(), Slot { checked: now, file });
    }
}

fn is_absent(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// Seconds since the epoch of an HTTP date.
pub(crate) fn http_date_secs(value: &HeaderValue) -> Option<u64> {
    let date: SystemTime = httpdate::parse_http_date(value.to_str().ok()?).ok()?;
    date.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> OpenFileCache {
        OpenFileCache {
            slots: Mutex::new(HashMap::with_hasher(RandomState::default())),
        }
    }

    #[test]
    fn a_fresh_entry_is_reused_and_a_changed_file_reopened_after_validity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.css");
        std::fs::write(&path, "one").unwrap();
        let cache = cache();
        let start = Instant::now();
        let first = cache.lookup(&path, start).unwrap().unwrap();
        assert_eq!(first.small().unwrap().as_ref(), b"one");
        assert_eq!(first.content_type(), "text/css");

        std::fs::write(&path, "three").unwrap();
        let within = cache.lookup(&path, start + VALID / 2).unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &within), "fresh entry reused");
        let after = cache.lookup(&path, start + VALID * 2).unwrap().unwrap();
        assert_eq!(after.small().unwrap().as_ref(), b"three");

        let unchanged = cache.lookup(&path, start + VALID * 4).unwrap().unwrap();
        assert!(Arc::ptr_eq(&after, &unchanged), "unchanged file kept");
    }

    #[test]
    fn a_missing_file_is_remembered_until_validity_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.css.br");
        let cache = cache();
        let start = Instant::now();
        assert!(cache.lookup(&path, start).unwrap().is_none());
        std::fs::write(&path, "x").unwrap();
        assert!(cache.lookup(&path, start + VALID / 2).unwrap().is_none());
        assert!(cache.lookup(&path, start + VALID * 2).unwrap().is_some());
        assert!(
            cache.lookup(dir.path(), start).unwrap().is_none(),
            "a directory is no file"
        );
    }

    #[test]
    fn the_cache_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache();
        let now = Instant::now();
        for i in 0..MAX_ENTRIES + 10 {
            let _ = cache.lookup(&dir.path().join(format!("f{i}")), now);
        }
        assert!(cache.slots.lock().unwrap().len() <= MAX_ENTRIES);
    }
}
