//! Config errors that say where: the file, the line and column, and the tenant.
//!
//! Validation works on parsed structs that no longer know their position in the text,
//! so an error records the key path it is about (`tenants.a.hosts[1]`) and the file's
//! position is looked up only when an error is actually reported.

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Why a config (or one tenant's settings) was rejected.
///
/// Display reads like a compiler message: `tenants.toml:12:3: duplicate host
/// "a.example" in tenants "a" and "b"`. The position is absent when the error is not tied
/// to a place in a file (for example from
/// [`TenantSettings::validate`](super::TenantSettings::validate)).
pub struct ConfigError {
    inner: Box<Inner>,
}

struct Inner {
    kind: ConfigErrorKind,
    /// The file, as the operator named it, for messages.
    file: Option<PathBuf>,
    /// 1-based line and column (in characters) within `file`.
    position: Option<(usize, usize)>,
    /// The tenant the error concerns, so tools can point at it without parsing messages.
    tenant: Option<String>,
    /// Which key the error is about; turned into `position` once the text is at hand.
    key_path: Vec<KeySegment>,
}

/// One step of a key path inside the TOML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeySegment {
    Key(String),
    Index(usize),
}

/// A key path of plain keys (`["server", "listen"]`).
pub(crate) fn keys(path: &[&str]) -> Vec<KeySegment> {
    path.iter()
        .map(|k| KeySegment::Key((*k).to_owned()))
        .collect()
}

/// What was wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file that could not be read (the config or a file it names).
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// TOML syntax error, unknown field, or a value of the wrong type.
    #[error("{0}")]
    Syntax(String),
    /// A tenant name outside `[a-z0-9][a-z0-9_-]{{0,62}}`.
    #[error("invalid tenant name {0:?}: use 1-63 characters from a-z, 0-9, '_' and '-', starting with a letter or digit")]
    InvalidTenantName(String),
    /// A tenant with an empty `hosts` list.
    #[error("tenant {0:?} has no hosts")]
    NoHosts(String),
    /// A host that is not a DNS name or `*.` + a DNS name.
    #[error("invalid host {host:?}: {reason}")]
    InvalidHost {
        /// The host as written.
        host: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The same host (after normalisation) listed twice.
    #[error("{}", duplicate_host_message(host, first, second))]
    DuplicateHost {
        /// The normalised host.
        host: String,
        /// The tenant that listed it first (in name order).
        first: String,
        /// The tenant that listed it again (may equal `first`).
        second: String,
    },
    /// A param name outside `[A-Za-z_][A-Za-z0-9_]*`.
    #[error("invalid param name {0:?}: use letters, digits and '_', not starting with a digit")]
    InvalidParamName(String),
    /// A param name the gateway itself sets per request (or an `HTTP_*` name).
    #[error("param {0:?} is reserved: the gateway sets it from the request")]
    ReservedParamName(String),
    /// A param value PHP could not receive intact.
    #[error("param {name:?}: {reason}")]
    InvalidParamValue {
        /// The param name.
        name: String,
        /// What is wrong with the value (never the value itself: it may be a password).
        reason: String,
    },
    /// Any other setting with a value out of range or unparsable.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The setting, as a dotted key (`server.listen`).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

fn duplicate_host_message(host: &str, first: &str, second: &str) -> String {
    if first == second {
        format!("host {host:?} is listed twice in tenant {first:?}")
    } else {
        format!("duplicate host {host:?} in tenants {first:?} and {second:?}")
    }
}

impl ConfigError {
    pub(crate) fn new(kind: ConfigErrorKind) -> Self {
        Self {
            inner: Box::new(Inner {
                kind,
                file: None,
                position: None,
                tenant: None,
                key_path: Vec::new(),
            }),
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::new(ConfigErrorKind::Invalid {
            field,
            reason: reason.into(),
        })
    }

    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        Self::new(ConfigErrorKind::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Sets the tenant the error concerns.
    pub(crate) fn for_tenant(mut self, tenant: &str) -> Self {
        self.inner.tenant = Some(tenant.to_owned());
        self
    }

    /// Records the key this error is about, relative to what was being validated.
    pub(crate) fn at(mut self, path: impl IntoIterator<Item = KeySegment>) -> Self {
        self.inner.key_path = path.into_iter().collect();
        self
    }

    /// Nests the recorded key path under `prefix` (a tenant's errors under `tenants.NAME`).
    pub(crate) fn within(mut self, prefix: impl IntoIterator<Item = KeySegment>) -> Self {
        let mut path: Vec<KeySegment> = prefix.into_iter().collect();
        path.append(&mut self.inner.key_path);
        self.inner.key_path = path;
        self
    }

    pub(crate) fn in_file(mut self, file: &Path) -> Self {
        self.inner.file = Some(file.to_path_buf());
        self
    }

    pub(crate) fn at_offset(mut self, text: &str, offset: usize) -> Self {
        self.inner.position = Some(line_col(text, offset));
        self
    }

    /// Fills in the line and column from the recorded key path, if it can be found in
    /// `text`. Parses `text` again: only done on the error path, so the happy path keeps
    /// a single parse.
    pub(crate) fn locate(mut self, text: &str) -> Self {
        if self.inner.position.is_some() || self.inner.key_path.is_empty() {
            return self;
        }
        if let Ok(doc) = toml_edit::ImDocument::parse(text) {
            if let Some(span) = locate(doc.as_table(), &self.inner.key_path) {
                self.inner.position = Some(line_col(text, span.start));
            }
        }
        self
    }

    /// What was wrong.
    pub fn kind(&self) -> &ConfigErrorKind {
        &self.inner.kind
    }

    /// The 1-based line in the config file, when the error points at one.
    pub fn line(&self) -> Option<usize> {
        self.inner.position.map(|(line, _)| line)
    }

    /// The 1-based column (in characters) in the config file, when known.
    pub fn column(&self) -> Option<usize> {
        self.inner.position.map(|(_, col)| col)
    }

    /// The tenant the error concerns, if any.
    pub fn tenant(&self) -> Option<&str> {
        self.inner.tenant.as_deref()
    }

    /// The file the error is in, as named when loading.
    pub fn file(&self) -> Option<&Path> {
        self.inner.file.as_deref()
    }

    /// Whether reading a file failed (as opposed to its content being wrong).
    pub fn is_io(&self) -> bool {
        matches!(self.inner.kind, ConfigErrorKind::Io { .. })
    }

    /// Whether the TOML could not be parsed into the expected shape.
    pub fn is_syntax(&self) -> bool {
        matches!(self.inner.kind, ConfigErrorKind::Syntax(_))
    }

    /// Whether two tenants (or one tenant twice) claim the same host.
    pub fn is_duplicate_host(&self) -> bool {
        matches!(self.inner.kind, ConfigErrorKind::DuplicateHost { .. })
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        match (&inner.file, inner.position) {
            (Some(file), Some((line, col))) => write!(f, "{}:{line}:{col}: ", file.display())?,
            // An IO error names its own path.
            (Some(file), None) if !self.is_io() => write!(f, "{}: ", file.display())?,
            _ => {}
        }
        let names_tenant = matches!(
            inner.kind,
            ConfigErrorKind::DuplicateHost { .. }
                | ConfigErrorKind::NoHosts(_)
                | ConfigErrorKind::InvalidTenantName(_)
        );
        if let (Some(tenant), false) = (&inner.tenant, names_tenant) {
            write!(f, "tenant {tenant:?}: ")?;
        }
        write!(f, "{}", inner.kind)
    }
}

impl fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigError")
            .field("kind", &self.inner.kind)
            .field("file", &self.inner.file)
            .field("position", &self.inner.position)
            .field("tenant", &self.inner.tenant)
            .finish()
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.inner.kind {
            ConfigErrorKind::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Converts a byte offset into a 1-based (line, column), counting columns in characters
/// so the column matches what an editor shows for non-ASCII text.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// The span of the deepest item along `path` that exists in the document. Points at the
/// value for a leaf, at the key for a table (the start of `[tenants.a]` is less useful
/// than the `a` in it, and a key is where an editor should jump).
fn locate(root: &toml_edit::Table, path: &[KeySegment]) -> Option<Range<usize>> {
    use toml_edit::{Item, Value};

    let mut best: Option<Range<usize>> = None;
    let mut current: Option<&Item> = None;
    for segment in path {
        let next = match (segment, current) {
            (KeySegment::Key(key), None) => {
                best = root.key(key).and_then(|k| k.span()).or(best);
                root.get(key)
            }
            (KeySegment::Key(key), Some(item)) => {
                let key_span = item
                    .as_table_like()
                    .and_then(|t| t.get_key_value(key))
                    .and_then(|(k, _)| k.span());
                best = key_span.or(best);
                item.get(key.as_str())
            }
            (KeySegment::Index(index), Some(item)) => item.get(*index),
            (KeySegment::Index(_), None) => None,
        };
        let Some(next) = next else { break };
        if let Item::Value(value) = next {
            if !matches!(value, Value::InlineTable(_)) {
                best = value.span().or(best);
            }
        }
        current = Some(next);
    }
    best
}

/// Finds the tenant whose part of the document contains `offset`: serde's errors carry a
/// position but not the key path, and "which tenant" is the first thing an operator with
/// 10,000 of them wants to know.
pub(crate) fn tenant_at(text: &str, offset: usize) -> Option<String> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let tenants = doc.get("tenants")?.as_table_like()?;
    for (name, item) in tenants.iter() {
        let key_span = tenants
            .get_key_value(name)
            .and_then(|(k, _)| k.span())
            .into_iter();
        let extent = key_span
            .chain(item_spans(item))
            .reduce(|a, b| a.start.min(b.start)..a.end.max(b.end));
        if extent.is_some_and(|r| r.contains(&offset)) {
            return Some(name.to_owned());
        }
    }
    None
}

/// Spans of an item and everything under it (a standard table's span stops at the next
/// header, so `[tenants.a.params]` must be visited separately).
fn item_spans(item: &toml_edit::Item) -> Vec<Range<usize>> {
    let mut spans: Vec<Range<usize>> = item.span().into_iter().collect();
    if let Some(table) = item.as_table_like() {
        for (_, child) in table.iter() {
            spans.extend(item_spans(child));
        }
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one_in_characters() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        // 'é' is two bytes but one column.
        let eq = text.find('=').unwrap();
        assert_eq!(
            line_col(text, text[eq + 1..].find('=').unwrap() + eq + 1),
            (2, 4)
        );
        assert_eq!(line_col(text, 10_000), (3, 1));
    }

    #[test]
    fn key_paths_locate_values_and_table_keys() {
        let text = "[tenants.a]\nhosts = [\"x\", \"y\"]\n\n[tenants.b]\nhosts = []\n";
        let err = ConfigError::new(ConfigErrorKind::Syntax("x".into()))
            .at([
                KeySegment::Key("tenants".into()),
                KeySegment::Key("a".into()),
                KeySegment::Key("hosts".into()),
                KeySegment::Index(1),
            ])
            .locate(text);
        assert_eq!((err.line(), err.column()), (Some(2), Some(15)));
        let err = ConfigError::new(ConfigErrorKind::NoHosts("b".into()))
            .at([
                KeySegment::Key("tenants".into()),
                KeySegment::Key("b".into()),
            ])
            .locate(text);
        assert_eq!((err.line(), err.column()), (Some(4), Some(10)));
    }

    #[test]
    fn missing_keys_fall_back_to_the_deepest_found() {
        let text = "[tenants.a]\nhosts = [\"x\"]\n";
        let err = ConfigError::new(ConfigErrorKind::Syntax("x".into()))
            .at([
                KeySegment::Key("tenants".into()),
                KeySegment::Key("a".into()),
                KeySegment::Key("params".into()),
            ])
            .locate(text);
        assert_eq!(err.line(), Some(1));
    }

    #[test]
    fn tenant_at_finds_the_enclosing_tenant_including_subtables() {
        let text = "[tenants.a]\nhosts = [\"x\"]\n[tenants.b]\nhosts = [\"y\"]\n[tenants.b.params]\nA = \"1\"\n[usage]\n";
        assert_eq!(
            tenant_at(text, text.find("\"x\"").unwrap()),
            Some("a".into())
        );
        assert_eq!(tenant_at(text, text.find("A =").unwrap()), Some("b".into()));
        assert_eq!(tenant_at(text, text.find("[usage]").unwrap()), None);
    }

    #[test]
    fn display_reads_like_a_compiler_message() {
        let err = ConfigError::new(ConfigErrorKind::DuplicateHost {
            host: "a.example".into(),
            first: "a".into(),
            second: "b".into(),
        })
        .for_tenant("b")
        .in_file(Path::new("tenants.toml"))
        .at_offset("\n\n\n\n\n\n\n\n\n\n\n  x", 13);
        assert_eq!(
            err.to_string(),
            "tenants.toml:12:3: duplicate host \"a.example\" in tenants \"a\" and \"b\""
        );
        assert_eq!(err.line(), Some(12));
        assert_eq!(err.tenant(), Some("b"));
    }

    #[test]
    fn display_prefixes_the_tenant_when_the_message_does_not_name_it() {
        let err =
            ConfigError::new(ConfigErrorKind::ReservedParamName("HTTPS".into())).for_tenant("t1");
        assert_eq!(
            err.to_string(),
            "tenant \"t1\": param \"HTTPS\" is reserved: the gateway sets it from the request"
        );
    }
}
