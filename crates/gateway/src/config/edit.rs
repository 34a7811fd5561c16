//! Edits of `tenants.toml` for the CLI and the admin API: add, replace, remove, suspend
//! and resume tenants while keeping the operator's comments, key order and layout.
//!
//! Two guarantees make an edit safe to point at a live gateway's file:
//! - nothing is saved that [`Config::parse`] would reject: the new text is validated,
//!   with the same base directory a load uses, before it touches the disk;
//! - the file is replaced atomically (temp file, fsync, rename, fsync of the directory),
//!   so a reload never sees half a file, and a crash leaves the old or the new one.
//!
//! A symlinked file (a Kubernetes ConfigMap mount) is written at its target, so the link
//! stays a link.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use toml_edit::{Array, DocumentMut, InlineTable, Item, Table, TableLike, Value};

use super::error::{line_col, ConfigError};
use super::{base_dir_of, Config, TenantConfig, TenantSettings};

/// Why an edit could not be made or saved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EditError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file is not TOML at all, so it cannot be edited in place.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Syntax {
        /// The config file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the TOML parser said (without quoting the line: it may hold a password).
        message: String,
    },
    /// A key the editor must descend into is not a table (`tenants = 1`).
    #[error("{}: `{key}` is not a table", path.display())]
    NotATable {
        /// The config file.
        path: PathBuf,
        /// The dotted key.
        key: String,
    },
    /// The tenant to change is not in the file.
    #[error("{}: no tenant {tenant:?}", path.display())]
    UnknownTenant {
        /// The config file.
        path: PathBuf,
        /// The tenant asked for.
        tenant: String,
    },
    /// The edit would produce a config the gateway rejects; nothing was written. The
    /// error names the tenant; its line and column are in the edited text, which for an
    /// added tenant is past the end of the file on disk.
    #[error("edit rejected, file not changed: {0}")]
    Invalid(#[source] ConfigError),
    /// Someone else wrote the file between load and save; saving would undo their edit.
    #[error("{} changed on disk since it was read; nothing was written, try again", path.display())]
    ChangedOnDisk {
        /// The file written to (the symlink target, for a link).
        path: PathBuf,
    },
    /// Writing the new file failed; the old one is still in place.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file being replaced (the symlink target, for a link).
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

impl EditError {
    /// Whether the edit was refused because the result would be an invalid config.
    pub fn is_invalid(&self) -> bool {
        matches!(self, Self::Invalid(_))
    }

    /// Whether the tenant named in the edit does not exist.
    pub fn is_unknown_tenant(&self) -> bool {
        matches!(self, Self::UnknownTenant { .. })
    }
}

/// A `tenants.toml` loaded for editing. Edits change the document in memory; [`save`]
/// validates and writes it.
///
/// [`save`]: ConfigDocument::save
#[derive(Debug)]
pub struct ConfigDocument {
    /// The path as the operator named it (possibly a symlink): used in messages, and its
    /// directory is the base for relative paths, exactly as when the gateway loads it.
    path: PathBuf,
    /// The regular file behind `path`: what is actually replaced.
    target: PathBuf,
    /// Base directory for validation; see [`Config::load`].
    base_dir: PathBuf,
    /// The text last read or written, to notice a concurrent writer before overwriting.
    on_disk: String,
    doc: DocumentMut,
}

impl ConfigDocument {
    /// Reads the file at `path` for editing. The file need not be a valid config (an edit
    /// may be what fixes it) but must be valid TOML.
    pub fn load(path: impl AsRef<Path>) -> Result<ConfigDocument, EditError> {
        let path = path.as_ref();
        let read_error = |source| EditError::Read {
            path: path.to_path_buf(),
            source,
        };
        let target = resolve_target(path).map_err(read_error)?;
        let on_disk = fs::read_to_string(&target).map_err(read_error)?;
        let doc = parse_document(path, &on_disk)?;
        let base_dir = base_dir_of(path).map_err(EditError::Invalid)?;
        Ok(Self {
            path: path.to_path_buf(),
            target,
            base_dir,
            on_disk,
            doc,
        })
    }

    /// The path as given to [`load`](Self::load).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file has a tenant called `name`.
    pub fn contains_tenant(&self, name: &str) -> bool {
        self.doc
            .get("tenants")
            .and_then(Item::as_table_like)
            .is_some_and(|tenants| tenants.contains_key(name))
    }

    /// The document as it would be saved.
    pub fn text(&self) -> String {
        self.doc.to_string()
    }

    /// Creates `[tenants.NAME]`, or replaces the settings of an existing one in place
    /// (keeping its comments, key order, and values that did not change). Params are
    /// written as an inline table and hosts as an array, like the shipped example.
    ///
    /// Checks the tenant on its own ([`TenantSettings::validate`]) before it touches the
    /// document, and writes it as given (hosts as typed); conflicts with other tenants
    /// are caught by [`save`](Self::save). Returns the tenant validated.
    pub fn set_tenant(
        &mut self,
        name: &str,
        tenant: &TenantSettings,
    ) -> Result<TenantConfig, EditError> {
        let valid = tenant
            .clone()
            .validate(name)
            .map_err(|err| EditError::Invalid(err.in_file(&self.path)))?;
        let max_concurrency = match tenant.max_concurrency {
            Some(n) => Some(i64::try_from(n).map_err(|_| {
                EditError::Invalid(
                    ConfigError::invalid("max_concurrency", "too large")
                        .for_tenant(name)
                        .in_file(&self.path),
                )
            })?),
            None => None,
        };
        let path = self.path.clone();
        let tenants = tenants_item(&mut self.doc);
        let inline = tenants.is_inline_table();
        let tenants = tenants
            .as_table_like_mut()
            .ok_or_else(|| EditError::NotATable {
                path: path.clone(),
                key: "tenants".to_owned(),
            })?;
        if !tenants.contains_key(name) {
            tenants.insert(name, new_tenant_item(tenant, max_concurrency, inline));
            return Ok(valid);
        }
        let existing = tenants
            .get_mut(name)
            .and_then(Item::as_table_like_mut)
            .ok_or_else(|| EditError::NotATable {
                path,
                key: format!("tenants.{name}"),
            })?;
        update_tenant(existing, tenant, max_concurrency);
        Ok(valid)
    }

    /// Removes `[tenants.NAME]` (and any `[tenants.NAME.params]`), with the comments
    /// written above its header. Returns whether it was there.
    pub fn remove_tenant(&mut self, name: &str) -> bool {
        self.doc
            .get_mut("tenants")
            .and_then(Item::as_table_like_mut)
            .is_some_and(|tenants| tenants.remove(name).is_some())
    }

    /// Suspends (`false`) or resumes (`true`) a tenant. Returns whether that changed
    /// anything. Resuming sets `enabled = true` where the key is written (keeping a
    /// comment on that line) and otherwise leaves the default.
    pub fn set_enabled(&mut self, name: &str, enabled: bool) -> Result<bool, EditError> {
        let path = self.path.clone();
        let tenant = self
            .doc
            .get_mut("tenants")
            .and_then(Item::as_table_like_mut)
            .and_then(|tenants| tenants.get_mut(name))
            .ok_or_else(|| EditError::UnknownTenant {
                path: path.clone(),
                tenant: name.to_owned(),
            })?
            .as_table_like_mut()
            .ok_or_else(|| EditError::NotATable {
                path,
                key: format!("tenants.{name}"),
            })?;
        let current = match tenant.get("enabled") {
            None => true,
            Some(item) => item.as_bool() != Some(false),
        };
        if current == enabled {
            return Ok(false);
        }
        set_value(tenant, "enabled", Value::from(enabled));
        Ok(true)
    }

    /// Validates the edited document as the gateway would load it and, if valid, replaces
    /// the file atomically, keeping its permissions (and its owner, where allowed).
    /// Returns the config the gateway will see, so a caller can apply it at once.
    ///
    /// Refuses (writing nothing) if the result is invalid, or if the file changed since
    /// it was read. Saving an unchanged document validates but does not write.
    pub fn save(&mut self) -> Result<Config, EditError> {
        let text = self.doc.to_string();
        let config =
            Config::parse(&text, &self.path, &self.base_dir).map_err(EditError::Invalid)?;
        if text == self.on_disk {
            return Ok(config);
        }
        let write_error = |source| EditError::Write {
            path: self.target.clone(),
            source,
        };
        // A ConfigMap update re-points the link to a new directory: writing to the old
        // target would then be lost without a word.
        let target = resolve_target(&self.path).map_err(write_error)?;
        let current = fs::read_to_string(&self.target).map_err(write_error)?;
        if target != self.target || current != self.on_disk {
            return Err(EditError::ChangedOnDisk {
                path: self.target.clone(),
            });
        }
        replace_file(&self.target, text.as_bytes()).map_err(write_error)?;
        self.on_disk = text;
        Ok(config)
    }
}

/// The regular file behind `path`: `path` itself, or the end of its symlink chain.
fn resolve_target(path: &Path) -> io::Result<PathBuf> {
    if fs::symlink_metadata(path)?.file_type().is_symlink() {
        fs::canonicalize(path)
    } else {
        Ok(path.to_path_buf())
    }
}

fn parse_document(path: &Path, text: &str) -> Result<DocumentMut, EditError> {
    text.parse::<DocumentMut>().map_err(|err| {
        let (line, column) = line_col(text, err.span().map_or(0, |span| span.start));
        EditError::Syntax {
            path: path.to_path_buf(),
            line,
            column,
            message: err.message().to_owned(),
        }
    })
}

/// The `tenants` item, created as an implicit table (so only `[tenants.NAME]` headers
/// appear) if the file has none.
fn tenants_item(doc: &mut DocumentMut) -> &mut Item {
    doc.entry("tenants").or_insert_with(|| {
        let mut table = Table::new();
        table.set_implicit(true);
        Item::Table(table)
    })
}

/// A new tenant: a `[tenants.NAME]` table, or an inline table if `tenants` itself is
/// written inline.
fn new_tenant_item(tenant: &TenantSettings, max_concurrency: Option<i64>, inline: bool) -> Item {
    let mut table = Table::new();
    table.insert("hosts", Item::Value(hosts_value(tenant)));
    if !tenant.params.is_empty() {
        table.insert("params", Item::Value(params_value(tenant)));
    }
    if !tenant.enabled {
        table.insert("enabled", Item::Value(Value::from(false)));
    }
    if let Some(n) = max_concurrency {
        table.insert("max_concurrency", Item::Value(Value::from(n)));
    }
    if let Some(buffering) = tenant.request_buffering {
        table.insert("request_buffering", Item::Value(Value::from(buffering)));
    }
    if let Some(tls) = &tenant.tls {
        table.insert("tls", Item::Value(tls.toml_value()));
    }
    if let Some(list) = &tenant.compression {
        table.insert("compression", Item::Value(compression_value(list)));
    }
    if let Some(root) = &tenant.private_root {
        table.insert("private_root", Item::Value(Value::from(root.as_str())));
    }
    if let Some(upstream) = &tenant.upstream {
        table.insert("upstream", Item::Value(Value::from(upstream.as_str())));
    }
    if let Some(cache) = &tenant.cache {
        table.insert("cache", Item::Value(cache.toml_value()));
    }
    if inline {
        Item::Value(Value::InlineTable(table.into_inline_table()))
    } else {
        Item::Table(table)
    }
}

/// Rewrites an existing tenant's settings, touching only what differs.
fn update_tenant(table: &mut dyn TableLike, tenant: &TenantSettings, max_concurrency: Option<i64>) {
    let same_hosts = table
        .get("hosts")
        .and_then(Item::as_array)
        .is_some_and(|hosts| {
            hosts.len() == tenant.hosts.len()
                && hosts
                    .iter()
                    .zip(&tenant.hosts)
                    .all(|(old, new)| old.as_str() == Some(new.as_str()))
        });
    if !same_hosts {
        set_value(table, "hosts", hosts_value(tenant));
    }

    if tenant.params.is_empty() {
        table.remove("params");
    } else {
        match table.get_mut("params") {
            Some(Item::Value(Value::InlineTable(params))) => {
                if update_params(params, tenant) {
                    // Re-space `{ A = "1", B = "2" }`: entries added after the old last
                    // one, or a removed last one, leave the padding in the wrong place.
                    params.fmt();
                }
            }
            Some(Item::Table(params)) => {
                update_params(params, tenant);
            }
            _ => set_value(table, "params", params_value(tenant)),
        }
    }

    let written_enabled = table.get("enabled").and_then(Item::as_bool);
    if written_enabled.unwrap_or(true) != tenant.enabled {
        set_value(table, "enabled", Value::from(tenant.enabled));
    }

    match max_concurrency {
        None => {
            table.remove("max_concurrency");
        }
        Some(n) => {
            let written = table.get("max_concurrency").and_then(Item::as_integer);
            if written != Some(n) {
                set_value(table, "max_concurrency", Value::from(n));
            }
        }
    }

    match tenant.request_buffering {
        None => {
            table.remove("request_buffering");
        }
        Some(buffering) => {
            let written = table.get("request_buffering").and_then(Item::as_bool);
            if written != Some(buffering) {
                set_value(table, "request_buffering", Value::from(buffering));
            }
        }
    }

    match &tenant.tls {
        None => {
            table.remove("tls");
        }
        Some(tls) => {
            let written = table
                .get("tls")
                .and_then(|item| toml::from_str::<TlsKey>(&format!("tls = {item}")).ok());
            if written.is_none_or(|written| written.tls != *tls) {
                set_value(table, "tls", tls.toml_value());
            }
        }
    }

    match &tenant.compression {
        None => {
            table.remove("compression");
        }
        Some(list) => {
            let written = table.get("compression").and_then(Item::as_array);
            let same = written.is_some_and(|old| {
                old.len() == list.len()
                    && old
                        .iter()
                        .zip(list)
                        .all(|(old, new)| old.as_str() == Some(new.as_str()))
            });
            if !same {
                set_value(table, "compression", compression_value(list));
            }
        }
    }

    match &tenant.private_root {
        None => {
            table.remove("private_root");
        }
        Some(root) => {
            let written = table.get("private_root").and_then(Item::as_str);
            if written != Some(root.as_str()) {
                set_value(table, "private_root", Value::from(root.as_str()));
            }
        }
    }

    match &tenant.upstream {
        None => {
            table.remove("upstream");
        }
        Some(upstream) => {
            let written = table.get("upstream").and_then(Item::as_str);
            if written != Some(upstream.as_str()) {
                set_value(table, "upstream", Value::from(upstream.as_str()));
            }
        }
    }

    match &tenant.cache {
        None => {
            table.remove("cache");
        }
        Some(cache) => {
            let written = table.get("cache").and_then(|item| {
                let text = match item {
                    Item::Table(sub) => format!("[cache]\n{sub}"),
                    other => format!("cache = {other}"),
                };
                toml::from_str::<CacheKey>(&text).ok()
            });
            if written.is_none_or(|written| written.cache != *cache) {
                table.remove("cache");
                table.insert("cache", Item::Value(cache.toml_value()));
            }
        }
    }
}

/// The `cache` key alone, to compare what is written with what is asked for.
#[derive(serde::Deserialize)]
struct CacheKey {
    cache: crate::config::TenantCacheSettings,
}

/// The `tls` key alone, to compare what is written with what is asked for.
#[derive(serde::Deserialize)]
struct TlsKey {
    tls: crate::config::TlsSetting,
}

/// A tenant's encoding list as written: `["zstd", "br"]`.
fn compression_value(list: &[crate::compression::Encoding]) -> Value {
    Value::Array(list.iter().map(|e| e.as_str()).collect())
}

/// Brings a params table (inline or `[tenants.NAME.params]`) to `tenant.params`: removes
/// params no longer there, rewrites changed values, appends new ones in name order.
/// Returns whether anything changed.
fn update_params(params: &mut dyn TableLike, tenant: &TenantSettings) -> bool {
    let stale: Vec<String> = params
        .iter()
        .map(|(name, _)| name.to_owned())
        .filter(|name| !tenant.params.contains_key(name))
        .collect();
    let mut changed = !stale.is_empty();
    for name in stale {
        params.remove(&name);
    }
    for (name, value) in &tenant.params {
        // `DBPORT = 5432` and "5432" are the same param; keep what the operator wrote.
        let same = params
            .get(name)
            .and_then(Item::as_value)
            .is_some_and(|old| {
                old.as_str() == Some(value.as_str())
                    || old.as_integer().is_some_and(|n| n.to_string() == *value)
            });
        if !same {
            set_value(params, name, Value::from(value.as_str()));
            changed = true;
        }
    }
    changed
}

fn hosts_value(tenant: &TenantSettings) -> Value {
    Value::Array(tenant.hosts.iter().map(String::as_str).collect::<Array>())
}

fn params_value(tenant: &TenantSettings) -> Value {
    let mut params: InlineTable = tenant
        .params
        .iter()
        .map(|(name, value)| (name.as_str(), Value::from(value.as_str())))
        .collect();
    params.fmt();
    Value::InlineTable(params)
}

/// Sets `key` to `value`, keeping the key's formatting and the old value's surrounding
/// whitespace and trailing comment.
fn set_value(table: &mut dyn TableLike, key: &str, mut value: Value) {
    match table.get_mut(key) {
        Some(Item::Value(old)) => {
            *value.decor_mut() = old.decor().clone();
            *old = value;
        }
        Some(other) => *other = Item::Value(value),
        None => {
            table.insert(key, Item::Value(value));
        }
    }
}

/// Replaces `target` with `contents` atomically: a temp file in the same directory
/// (so the rename cannot cross filesystems), written and fsynced, renamed over `target`,
/// then the directory fsynced so the rename itself survives a crash.
fn replace_file(target: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = target
        .file_name()
        .map_or_else(|| "config".into(), |n| n.to_string_lossy());
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    temp.write_all(contents)?;
    let original = fs::metadata(target)?;
    temp.as_file().set_permissions(original.permissions())?;
    keep_owner(temp.as_file(), &original, target);
    temp.as_file().sync_all()?;
    temp.persist(target).map_err(|err| err.error)?;
    File::open(dir)?.sync_all()
}

/// Gives the new file the old one's owner and group. Only root (or the owner, for the
/// group) may; otherwise the file ends up owned by whoever ran the edit, which is said.
fn keep_owner(file: &File, original: &fs::Metadata, target: &Path) {
    use std::os::unix::fs::MetadataExt;

    let Ok(current) = file.metadata() else { return };
    if (current.uid(), current.gid()) == (original.uid(), original.gid()) {
        return;
    }
    if let Err(err) = std::os::unix::fs::fchown(file, Some(original.uid()), Some(original.gid())) {
        tracing::warn!(
            path = %target.display(),
            error = %err,
            "cannot keep the config file's owner; it will belong to the current user"
        );
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const FILE: &str = r#"# Tenants of the demo.
[server]
listen = "127.0.0.1:8080"

[fastcgi]
upstream = "127.0.0.1:9000"
root = "app"   # the shared PHP code

# First customer.
[tenants.centro1]
hosts = ["centro1.example.org", "*.centro1.example.org"]  # and its subdomains
params = { DBHOST = "10.0.0.1", DBPORT = 5432, DBPASS = "secret1" }

# Second customer; pays late.
[tenants.centro2]
hosts = ["centro2.example.org"]
params = { DBHOST = "10.0.0.2", DBPASS = "secret2" }
max_concurrency = 2 # small plan

[tenants.centro2.extra_comment_anchor]
"#;

    /// A config directory with `app/` and a `tenants.toml` holding `text` (also used by
    /// the CLI's tests, which edit files through this module).
    pub(crate) fn scratch(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("app")).unwrap();
        let path = dir.path().join("tenants.toml");
        fs::write(&path, text).unwrap();
        (dir, path)
    }

    /// The shipped layout without the deliberately invalid trailing table.
    fn valid_file() -> String {
        FILE.replace("\n[tenants.centro2.extra_comment_anchor]\n", "")
    }

    fn tenant(hosts: &[&str], params: &[(&str, &str)]) -> TenantSettings {
        TenantSettings {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            ..TenantSettings::default()
        }
    }

    #[test]
    fn adding_a_tenant_appends_it_and_leaves_the_rest_byte_for_byte() {
        let (_dir, path) = scratch(&valid_file());
        let mut doc = ConfigDocument::load(&path).unwrap();
        assert!(!doc.contains_tenant("centro3"));
        let mut new = tenant(
            &["centro3.example.org"],
            &[("DBHOST", "10.0.0.3"), ("DBPASS", "s3")],
        );
        new.max_concurrency = Some(3);
        let added = doc.set_tenant("centro3", &new).unwrap();
        let config = doc.save().unwrap();
        assert_eq!(config.tenants["centro3"], added);

        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!(
                "{}\n[tenants.centro3]\nhosts = [\"centro3.example.org\"]\nparams = {{ DBHOST = \"10.0.0.3\", DBPASS = \"s3\" }}\nmax_concurrency = 3\n",
                valid_file()
            )
        );
        assert_eq!(Config::load(&path).unwrap().tenants.len(), 3);
    }

    #[test]
    fn private_root_is_written_changed_and_removed_with_the_tenant() {
        let (_dir, path) = scratch(&valid_file());
        let mut doc = ConfigDocument::load(&path).unwrap();
        let mut private = tenant(&["centro3.example.org"], &[]);
        private.private_root = Some("/srv/moodledata/centro3".into());
        doc.set_tenant("centro3", &private).unwrap();
        assert_eq!(
            doc.save().unwrap().tenants["centro3"]
                .private_root
                .as_deref(),
            Some("/srv/moodledata/centro3")
        );
        assert!(fs::read_to_string(&path)
            .unwrap()
            .contains("private_root = \"/srv/moodledata/centro3\"\n"));

        private.private_root = Some("/data/{tenant}".into());
        doc.set_tenant("centro3", &private).unwrap();
        assert_eq!(
            doc.save().unwrap().tenants["centro3"]
                .private_root
                .as_deref(),
            Some("/data/{tenant}")
        );
        private.private_root = Some("relative".into());
        assert!(doc.set_tenant("centro3", &private).is_err());
        private.private_root = None;
        doc.set_tenant("centro3", &private).unwrap();
        assert_eq!(doc.save().unwrap().tenants["centro3"].private_root, None);
        assert!(!fs::read_to_string(&path).unwrap().contains("private_root"));
    }

    #[test]
    fn upstream_is_written_changed_and_removed_and_must_name_an_upstream() {
        let text = format!(
            "{}\n[upstreams.big]\nservers = [{{ address = \"127.0.0.1:9001\" }}]\n[upstreams.main]\nservers = [{{ address = \"127.0.0.1:9002\" }}]\n",
            valid_file()
        );
        let (_dir, path) = scratch(&text);
        let mut doc = ConfigDocument::load(&path).unwrap();
        let mut moved = tenant(&["centro3.example.org"], &[]);
        moved.upstream = Some("big".into());
        doc.set_tenant("centro3", &moved).unwrap();
        assert_eq!(
            doc.save().unwrap().tenants["centro3"].upstream.as_deref(),
            Some("big")
        );
        assert!(fs::read_to_string(&path)
            .unwrap()
            .contains("upstream = \"big\"\n"));

        moved.upstream = Some("main".into());
        doc.set_tenant("centro3", &moved).unwrap();
        assert_eq!(
            doc.save().unwrap().tenants["centro3"].upstream.as_deref(),
            Some("main")
        );
        moved.upstream = None;
        doc.set_tenant("centro3", &moved).unwrap();
        assert_eq!(doc.save().unwrap().tenants["centro3"].upstream, None);
        assert!(!fs::read_to_string(&path)
            .unwrap()
            .contains("upstream = \"main\"\n"));

        // A name with no [upstreams] table is refused, and the file keeps its text.
        let before = fs::read_to_string(&path).unwrap();
        moved.upstream = Some("huge".into());
        doc.set_tenant("centro3", &moved).unwrap();
        let err = doc.save().unwrap_err();
        assert!(
            err.to_string().contains("no [upstreams.huge] table"),
            "{err}"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), before);
    }

    #[test]
    fn request_buffering_is_written_changed_and_removed_with_the_tenant() {
        let (_dir, path) = scratch(&valid_file());
        let mut doc = ConfigDocument::load(&path).unwrap();
        let mut streamed = tenant(&["centro3.example.org"], &[]);
        streamed.request_buffering = Some(false);
        doc.set_tenant("centro3", &streamed).unwrap();
        assert_eq!(
            doc.save().unwrap().tenants["centro3"].request_buffering,
            Some(false)
        );
        assert!(fs::read_to_string(&path)
            .unwrap()
            .contains("request_buffering = false\n"));

        streamed.request_buffering = Some(true);
        doc.set_tenant("centro3", &streamed).unwrap();
        assert_eq!(
            doc.save().unwrap().tenants["centro3"].request_buffering,
            Some(true)
        );
        streamed.request_buffering = None;
        doc.set_tenant("centro3", &streamed).unwrap();
        assert_eq!(
            doc.save().unwrap().tenants["centro3"].request_buffering,
            None
        );
        assert!(!fs::read_to_string(&path)
            .unwrap()
            .contains("request_buffering"));
    }

    #[test]
    fn replacing_a_tenant_keeps_its_comments_and_unchanged_values() {
        let (_dir, path) = scratch(&valid_file());
        let mut doc = ConfigDocument::load(&path).unwrap();
        // Same hosts, DBPORT unchanged (written as an integer), DBPASS changed, DBNAME new.
        let mut replacement = tenant(
            &["centro1.example.org", "*.centro1.example.org"],
            &[
                ("DBHOST", "10.0.0.1"),
                ("DBPORT", "5432"),
                ("DBPASS", "rotated"),
                ("DBNAME", "c1"),
            ],
        );
        replacement.enabled = false;
        doc.set_tenant("centro1", &replacement).unwrap();
        doc.save().unwrap();

        let text = fs::read_to_string(&path).unwrap();
        let expected = valid_file().replace(
            "params = { DBHOST = \"10.0.0.1\", DBPORT = 5432, DBPASS = \"secret1\" }\n",
            "params = { DBHOST = \"10.0.0.1\", DBPORT = 5432, DBPASS = \"rotated\", DBNAME = \"c1\" }\nenabled = false\n",
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn changed_values_keep_their_trailing_comments() {
        let (_dir, path) = scratch(&valid_file());
        let mut doc = ConfigDocument::load(&path).unwrap();
        let mut replacement = tenant(&["c2.example.org"], &[("DBHOST", "10.0.0.2")]);
        replacement.max_concurrency = Some(5);
        doc.set_tenant("centro2", &replacement).unwrap();
        doc.save().unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("hosts = [\"c2.example.org\"]\n"), "{text}");
        assert!(
            text.contains("params = { DBHOST = \"10.0.0.2\" }\n"),
            "{text}"
        );
        assert!(
            text.contains("max_concurrency = 5 # small plan\n"),
            "{text}"
        );
        assert!(text.contains("# Second customer; pays late.\n[tenants.centro2]"));
    }

    #[test]
    fn removing_a_tenant_takes_its_header_comment_and_nothing_else() {
        let (_dir, path) = scratch(&valid_file());
        let mut doc = ConfigDocument::load(&path).unwrap();
        assert!(doc.remove_tenant("centro2"));
        assert!(!doc.remove_tenant("centro2"));
        doc.save().unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let end = valid_file().find("\n# Second customer").unwrap();
        assert_eq!(text, &valid_file()[..end]);

        // From the middle: the next tenant keeps its own comment.
        let (_dir, path) = scratch(&valid_file());
        let mut doc = ConfigDocument::load(&path).unwrap();
        assert!(doc.remove_tenant("centro1"));
        doc.save().unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let start = valid_file().find("# First customer").unwrap();
        let next = valid_file().find("# Second customer").unwrap();
        assert_eq!(
            text,
            format!("{}{}", &valid_file()[..start], &valid_file()[next..])
        );
    }

    #[test]
    fn suspend_and_resume_touch_only_the_enabled_key() {
        let (_dir, path) = scratch(&valid_file());
        let mut doc = ConfigDocument::load(&path).unwrap();
        assert!(doc.set_enabled("centro2", false).unwrap());
        assert!(!doc.set_enabled("centro2", false).unwrap());
        let config = doc.save().unwrap();
        assert!(!config.tenants["centro2"].enabled);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            valid_file().replace(
                "max_concurrency = 2 # small plan\n",
                "max_concurrency = 2 # small plan\nenabled = false\n"
            )
        );

        let mut doc = ConfigDocument::load(&path).unwrap();
        assert!(doc.set_enabled("centro2", true).unwrap());
        doc.save().unwrap();
        assert!(Config::load(&path).unwrap().tenants["centro2"].enabled);

        let err = doc.set_enabled("nobody", false).unwrap_err();
        assert!(err.is_unknown_tenant());
        assert!(err.to_string().contains("\"nobody\""), "{err}");
    }

    #[test]
    fn an_edit_that_makes_the_config_invalid_is_refused_and_the_file_kept() {
        let (_dir, path) = scratch(&valid_file());
        let before = fs::read(&path).unwrap();
        let mut doc = ConfigDocument::load(&path).unwrap();
        // centro2's host, claimed again by a new tenant.
        doc.set_tenant("thief", &tenant(&["Centro2.example.org"], &[]))
            .unwrap();
        let err = doc.save().unwrap_err();
        assert!(err.is_invalid());
        let EditError::Invalid(config_error) = &err else {
            unreachable!()
        };
        assert!(config_error.is_duplicate_host());
        assert_eq!(config_error.tenant(), Some("thief"));
        assert_eq!(fs::read(&path).unwrap(), before);

        // A tenant invalid on its own is refused before it reaches the document.
        let err = doc
            .set_tenant("bad", &tenant(&["b.example"], &[("HTTP_HOST", "x")]))
            .unwrap_err();
        assert!(err.is_invalid());
        assert!(!doc.contains_tenant("bad"));
    }

    #[test]
    fn error_messages_never_contain_param_values() {
        let (_dir, path) = scratch(&valid_file());
        let mut doc = ConfigDocument::load(&path).unwrap();
        let mut bad = tenant(&["x.example"], &[("DBPASS", "hunter2\0")]);
        bad.enabled = false;
        let err = doc.set_tenant("x", &bad).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");

        let (_dir, path) = scratch("a = \"hunter2\" b\n");
        let err = ConfigDocument::load(&path).unwrap_err();
        assert!(matches!(err, EditError::Syntax { line: 1, .. }), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn a_concurrent_write_is_not_overwritten() {
        let (_dir, path) = scratch(&valid_file());
        let mut doc = ConfigDocument::load(&path).unwrap();
        let other = valid_file().replace("# First customer.", "# Edited by someone else.");
        fs::write(&path, &other).unwrap();
        doc.set_enabled("centro1", false).unwrap();
        assert!(matches!(doc.save(), Err(EditError::ChangedOnDisk { .. })));
        assert_eq!(fs::read_to_string(&path).unwrap(), other);
    }

    #[test]
    fn a_document_can_be_saved_again_after_saving() {
        let (_dir, path) = scratch(&valid_file());
        let mut doc = ConfigDocument::load(&path).unwrap();
        doc.set_enabled("centro1", false).unwrap();
        doc.save().unwrap();
        doc.set_enabled("centro2", false).unwrap();
        let config = doc.save().unwrap();
        assert!(!config.tenants["centro1"].enabled && !config.tenants["centro2"].enabled);
    }

    #[test]
    fn saving_keeps_the_file_mode_and_leaves_no_temp_files() {
        let (dir, path) = scratch(&valid_file());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let mut doc = ConfigDocument::load(&path).unwrap();
        doc.remove_tenant("centro1");
        doc.save().unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["app", "tenants.toml"]);
    }

    #[test]
    fn a_symlinked_file_is_edited_at_its_target_and_stays_a_link() {
        // Kubernetes style: tenants.toml -> ..data/tenants.toml, ..data -> ..2024_01.
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("app")).unwrap();
        let versioned = dir.path().join("..2024_01");
        fs::create_dir(&versioned).unwrap();
        fs::write(versioned.join("tenants.toml"), valid_file()).unwrap();
        std::os::unix::fs::symlink("..2024_01", dir.path().join("..data")).unwrap();
        let link = dir.path().join("tenants.toml");
        std::os::unix::fs::symlink("..data/tenants.toml", &link).unwrap();

        // `root = "app"` resolves against the link's directory, as when loading; the
        // target's directory has no `app/`, so validating there would fail.
        let mut doc = ConfigDocument::load(&link).unwrap();
        doc.set_enabled("centro1", false).unwrap();
        let config = doc.save().unwrap();
        assert_eq!(config.path, link);

        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(!Config::load(&link).unwrap().tenants["centro1"].enabled);
        let written = fs::read_to_string(versioned.join("tenants.toml")).unwrap();
        assert!(written.contains("enabled = false"));
    }

    #[test]
    fn a_link_repointed_since_loading_is_not_written_through_the_old_target() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("app")).unwrap();
        for version in ["v1", "v2"] {
            fs::create_dir(dir.path().join(version)).unwrap();
            fs::write(dir.path().join(version).join("tenants.toml"), valid_file()).unwrap();
        }
        let link = dir.path().join("tenants.toml");
        std::os::unix::fs::symlink("v1/tenants.toml", &link).unwrap();
        let mut doc = ConfigDocument::load(&link).unwrap();
        doc.set_enabled("centro1", false).unwrap();

        fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink("v2/tenants.toml", &link).unwrap();
        assert!(matches!(doc.save(), Err(EditError::ChangedOnDisk { .. })));
        for version in ["v1", "v2"] {
            let text = fs::read_to_string(dir.path().join(version).join("tenants.toml"));
            assert_eq!(text.unwrap(), valid_file());
        }
    }

    #[test]
    fn the_first_tenant_of_a_file_without_tenants_gets_a_dotted_header() {
        let text = "[server]\nlisten = \"127.0.0.1:8080\"\n\n[fastcgi]\nupstream = \"127.0.0.1:9000\"\nroot = \"app\"\n";
        let (_dir, path) = scratch(text);
        let mut doc = ConfigDocument::load(&path).unwrap();
        doc.set_tenant("a", &tenant(&["a.example"], &[])).unwrap();
        doc.save().unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{text}\n[tenants.a]\nhosts = [\"a.example\"]\n")
        );
    }

    #[test]
    fn params_in_their_own_table_are_edited_in_place() {
        let text = "[server]\nlisten = \"127.0.0.1:8080\"\n\n[fastcgi]\nupstream = \"127.0.0.1:9000\"\nroot = \"app\"\n\n[tenants.a]\nhosts = [\"a.example\"]\n\n[tenants.a.params]\nDBHOST = \"h\"   # primary\nDBPASS = \"old\"\n";
        let (_dir, path) = scratch(text);
        let mut doc = ConfigDocument::load(&path).unwrap();
        doc.set_tenant(
            "a",
            &tenant(&["a.example"], &[("DBHOST", "h"), ("DBPASS", "new")]),
        )
        .unwrap();
        doc.save().unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            text.replace("\"old\"", "\"new\"")
        );
    }

    #[test]
    fn the_tables_marked_invalid_in_the_fixture_are_reported_on_save() {
        // The fixture's `[tenants.centro2.extra_comment_anchor]` is an unknown field.
        let (_dir, path) = scratch(FILE);
        let mut doc = ConfigDocument::load(&path).unwrap();
        doc.set_enabled("centro1", false).unwrap();
        let err = doc.save().unwrap_err();
        let EditError::Invalid(config_error) = err else {
            panic!("{err}")
        };
        assert!(config_error.is_syntax());
        assert_eq!(config_error.tenant(), Some("centro2"));
        // ...and removing the offender is an edit that fixes the file.
        assert!(doc.remove_tenant("centro2"));
        doc.save().unwrap();
    }
}
