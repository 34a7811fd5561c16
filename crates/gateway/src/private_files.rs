//! A tenant's private files, handed to the gateway by PHP with `X-Accel-Redirect` (nginx)
//! or `X-Sendfile` (Apache's mod_xsendfile): PHP checks access, the gateway serves the
//! file with the static-file path (ranges, validators, HEAD) and PHP-FPM's worker and
//! connection are free as soon as PHP's answer has ended.
//!
//! A file is served only from inside the tenant's `private_root`: the path is refused
//! (403) when it holds a `..` segment, a NUL, or, once canonicalised (symlinks followed),
//! lies outside the canonical root; what was opened is checked again and served through
//! its descriptor, so a symlink swapped in meanwhile leads nowhere. A tenant without a private root never has either
//! header honoured (500), so one tenant's PHP can never name another tenant's files.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use http::header::{self, HeaderName};
use http::{HeaderMap, Method, Request, Response, StatusCode};

use crate::access::RequestRecord;
use crate::body::GatewayBody;
use crate::error::GatewayError;
use crate::request_path::percent_decode;
use crate::tenant::Tenant;

/// nginx's header: a path under the private root, percent-encoded like a URI.
const ACCEL_REDIRECT: &str = "x-accel-redirect";
/// mod_xsendfile's header: an absolute file system path, inside the private root.
const SENDFILE: &str = "x-sendfile";

/// PHP's headers that describe the download and win over what the file would get, as
/// nginx keeps them across an X-Accel-Redirect.
const KEPT_FROM_PHP: [HeaderName; 4] = [
    header::CONTENT_DISPOSITION,
    header::CACHE_CONTROL,
    header::EXPIRES,
    header::SET_COOKIE,
];

/// Which header PHP answered with, and its raw value.
enum Handoff {
    AccelRedirect(Vec<u8>),
    Sendfile(Vec<u8>),
}

impl Handoff {
    fn header(&self) -> &'static str {
        match self {
            Handoff::AccelRedirect(_) => "X-Accel-Redirect",
            Handoff::Sendfile(_) => "X-Sendfile",
        }
    }
}

/// Why a named file is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Malformed, or not confined to the private root: 403.
    Forbidden(&'static str),
    /// Inside the root but not there (or not a regular file): 404.
    Missing(&'static str),
}

/// PHP-FPM's answer as it goes on: unchanged, unless PHP handed the download to the
/// gateway, in which case it becomes the file (or a 403/404/500) and PHP's own body is
/// let go of without being sent. `request` is the client's request (method, range and
/// conditional headers).
pub(crate) async fn intercept(
    response: Response<GatewayBody>,
    tenant: &Tenant,
    request: &http::request::Parts,
    record: &mut RequestRecord,
    zero_copy: bool,
) -> Result<Response<GatewayBody>, GatewayError> {
    // Most answers carry neither header: one pass over PHP's few header names is cheaper
    // than two hash lookups.
    if !response
        .headers()
        .keys()
        .any(|name| name == ACCEL_REDIRECT || name == SENDFILE)
    {
        return Ok(response);
    }
    let (mut php, body) = response.into_parts();
    crate::response::keep_answered_by(&mut php.extensions, record);
    body.release_upstream(record);
    let accel = php.headers.remove(ACCEL_REDIRECT);
    let sendfile = php.headers.remove(SENDFILE);
    let handoff = match (accel, sendfile) {
        (Some(value), _) => Handoff::AccelRedirect(value.as_bytes().to_vec()),
        (None, Some(value)) => Handoff::Sendfile(value.as_bytes().to_vec()),
        (None, None) => return Err(GatewayError::internal("handoff header vanished")),
    };
    let Some(root) = tenant.private_root.as_deref() else {
        tracing::warn!(
            tenant = %tenant.name,
            header = handoff.header(),
            "PHP handed a file to the gateway, but the tenant has no private_root"
        );
        return Err(GatewayError::internal(format!(
            "{} from a tenant without private_root",
            handoff.header()
        )));
    };
    let file = match locate(root, &handoff).await {
        Ok(file) => file,
        Err(refusal) => {
            let (reason, err) = match refusal {
                Refusal::Forbidden(reason) => (reason, GatewayError::forbidden(reason)),
                Refusal::Missing(reason) => (reason, GatewayError::not_found(reason)),
            };
            let value = match &handoff {
                Handoff::AccelRedirect(v) | Handoff::Sendfile(v) => String::from_utf8_lossy(v),
            };
            tracing::warn!(
                tenant = %tenant.name,
                header = handoff.header(),
                path = %value,
                reason,
                "private file refused"
            );
            return Err(err);
        }
    };
    let mut file_request = Request::new(());
    // nginx's internal redirect serves any method as GET; the file path refuses others.
    *file_request.method_mut() = if request.method == Method::HEAD {
        Method::HEAD
    } else {
        Method::GET
    };
    *file_request.headers_mut() = conditional_headers(&request.headers);
    let mut response = crate::static_files::serve_opened_file(
        &file.fd_path,
        &file.real_path,
        file_request,
        zero_copy,
    )
    .await?;
    // The answer holds its own descriptor of the file: ours may go.
    drop(file);
    let status = response.status();
    let headers = response.headers_mut();
    if matches!(status, StatusCode::OK | StatusCode::PARTIAL_CONTENT) {
        if let Some(content_type) = php.headers.remove(header::CONTENT_TYPE) {
            headers.insert(header::CONTENT_TYPE, content_type);
        }
    }
    for name in KEPT_FROM_PHP {
        let mut values = php.headers.get_all(&name).iter().peekable();
        if values.peek().is_some() {
            headers.remove(&name);
            for value in values {
                headers.append(&name, value.clone());
            }
        }
    }
    Ok(response)
}

/// The request headers the file's answer depends on.
fn conditional_headers(from: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for name in [
        header::RANGE,
        header::IF_RANGE,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
    ] {
        for value in from.get_all(&name) {
            headers.append(&name, value.clone());
        }
    }
    headers
}

/// The file PHP named, open, once it is known to lie inside `root`.
struct Located {
    /// Held open while the file is served: `fd_path` names it.
    _file: std::fs::File,
    /// `/proc/self/fd/N`: opening it opens this very file, whatever the names on the
    /// way point to by then.
    fd_path: PathBuf,
    /// Where the opened file really is (for its content type).
    real_path: PathBuf,
}

/// Finds and opens the file PHP named, refusing anything outside `root`.
///
/// The canonical path (symlinks followed) is checked first, for a clear answer; then the
/// file is opened and where the opened descriptor really points is checked again, so a
/// tenant's PHP that swaps a directory for a symlink after the first check (it can write
/// in its own private root) still cannot reach outside it. The file is then served
/// through that descriptor, never looked up by name again.
async fn locate(root: &Path, handoff: &Handoff) -> Result<Located, Refusal> {
    let candidate = match handoff {
        Handoff::AccelRedirect(value) => accel_path(root, value)?,
        Handoff::Sendfile(value) => sendfile_path(root, value)?,
    };
    let canonical_root = tokio::fs::canonicalize(root)
        .await
        .map_err(|_| Refusal::Missing("the private root does not exist"))?;
    let file = tokio::fs::canonicalize(&candidate)
        .await
        .map_err(|err| match err.kind() {
            io::ErrorKind::NotFound => Refusal::Missing("no such file"),
            _ => Refusal::Forbidden("the file cannot be looked up"),
        })?;
    if !file.starts_with(&canonical_root) {
        return Err(Refusal::Forbidden("the path leads out of private_root"));
    }
    let opened = tokio::task::spawn_blocking(move || open_confined(&file, &canonical_root))
        .await
        .map_err(|_| Refusal::Forbidden("the file cannot be opened"))??;
    Ok(opened)
}

/// Opens `file` (canonical, inside `canonical_root` when checked) and checks that what
/// was opened is a regular file still inside the root.
fn open_confined(file: &Path, canonical_root: &Path) -> Result<Located, Refusal> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;

    // O_NONBLOCK: a FIFO put there by PHP must not block the open; O_NOFOLLOW: the last
    // name was no symlink when checked and must not have become one.
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(file)
        .map_err(|err| match err.kind() {
            io::ErrorKind::NotFound => Refusal::Missing("no such file"),
            _ => Refusal::Forbidden("the file cannot be opened"),
        })?;
    let fd_path = PathBuf::from(format!("/proc/self/fd/{}", opened.as_raw_fd()));
    let real_path = std::fs::read_link(&fd_path)
        .map_err(|_| Refusal::Forbidden("the opened file cannot be verified"))?;
    if !real_path.starts_with(canonical_root) {
        return Err(Refusal::Forbidden("the path leads out of private_root"));
    }
    let meta = opened
        .metadata()
        .map_err(|_| Refusal::Forbidden("the opened file cannot be verified"))?;
    if !meta.is_file() {
        return Err(Refusal::Missing("not a regular file"));
    }
    Ok(Located {
        _file: opened,
        fd_path,
        real_path,
    })
}

/// `X-Accel-Redirect: /path?args`: the path, percent-decoded, under `root`.
fn accel_path(root: &Path, value: &[u8]) -> Result<PathBuf, Refusal> {
    // nginx passes `?args` on to the redirected location; a file has no use for them.
    let path = value.split(|&b| b == b'?').next().unwrap_or_default();
    if !path.starts_with(b"/") {
        return Err(Refusal::Forbidden(
            "X-Accel-Redirect is not an absolute URI path",
        ));
    }
    let decoded =
        percent_decode(path).map_err(|_| Refusal::Forbidden("malformed percent-encoding"))?;
    let relative = confined_segments(&decoded)?;
    Ok(root.join(relative))
}

/// `X-Sendfile: /absolute/path`: the path as it is, which must lie under `root`.
fn sendfile_path(root: &Path, value: &[u8]) -> Result<PathBuf, Refusal> {
    if !value.starts_with(b"/") {
        return Err(Refusal::Forbidden("X-Sendfile is not an absolute path"));
    }
    let relative = confined_segments(value)?;
    let path = Path::new("/").join(relative);
    let root_relative = confined_segments(root.as_os_str().as_bytes())?;
    let root = Path::new("/").join(root_relative);
    if !path.starts_with(&root) {
        return Err(Refusal::Forbidden("the path is outside private_root"));
    }
    Ok(path)
}

/// `path`'s names joined as a relative path, empty and `.` segments dropped. A `..`, a
/// NUL, or anything else that is not a plain name refuses the whole path.
fn confined_segments(path: &[u8]) -> Result<PathBuf, Refusal> {
    if path.contains(&0) {
        return Err(Refusal::Forbidden("the path contains a NUL byte"));
    }
    let mut relative = PathBuf::new();
    for segment in path.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => return Err(Refusal::Forbidden("the path contains \"..\"")),
            name => {
                let name = OsStr::from_bytes(name);
                if !matches!(
                    Path::new(name).components().next(),
                    Some(Component::Normal(_))
                ) {
                    return Err(Refusal::Forbidden("the path holds an unusable name"));
                }
                relative.push(name);
            }
        }
    }
    Ok(relative)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accel(value: &str) -> Result<PathBuf, Refusal> {
        accel_path(Path::new("/srv/data/a"), value.as_bytes())
    }

    fn sendfile(value: &str) -> Result<PathBuf, Refusal> {
        sendfile_path(Path::new("/srv/data/a"), value.as_bytes())
    }

    #[test]
    fn accel_paths_are_decoded_under_the_root_and_merge_slashes() {
        assert_eq!(
            accel("/filedir/ab/cd"),
            Ok("/srv/data/a/filedir/ab/cd".into())
        );
        assert_eq!(
            accel("//filedir//x?y=1"),
            Ok("/srv/data/a/filedir/x".into())
        );
        assert_eq!(
            accel("/my%20file.pdf"),
            Ok("/srv/data/a/my file.pdf".into())
        );
        assert_eq!(
            accel("%2Ffiledir%2Fx"),
            Err(Refusal::Forbidden(
                "X-Accel-Redirect is not an absolute URI path"
            ))
        );
    }

    #[test]
    fn accel_escapes_are_refused_in_any_encoding() {
        for escape in [
            "/../b/secret",
            "/x/../../b",
            "/..%2f..%2fetc/passwd",
            "/%2e%2e/b",
            "/x%00.txt",
            "/bad%zz",
            "relative",
        ] {
            assert!(
                matches!(accel(escape), Err(Refusal::Forbidden(_))),
                "{escape}"
            );
        }
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_after_the_check_leads_nowhere() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(dir.path().join("other")).unwrap();
        std::fs::write(dir.path().join("other/secret"), "x").unwrap();
        std::fs::write(root.join("own"), "mine").unwrap();
        let root = root.canonicalize().unwrap();
        // As if `root/sub` was a directory when the canonical path was checked, and a
        // symlink to another tenant's directory by the time it is opened.
        std::os::unix::fs::symlink(dir.path().join("other"), root.join("sub")).unwrap();
        let err = open_confined(&root.join("sub/secret"), &root).err();
        assert_eq!(
            err,
            Some(Refusal::Forbidden("the path leads out of private_root"))
        );
        // The last name having become a symlink is refused at the open.
        std::os::unix::fs::symlink(root.join("own"), root.join("link")).unwrap();
        assert!(matches!(
            open_confined(&root.join("link"), &root).err(),
            Some(Refusal::Forbidden(_))
        ));
        let opened = open_confined(&root.join("own"), &root).unwrap();
        assert_eq!(opened.real_path, root.join("own"));
        assert_eq!(std::fs::read(&opened.fd_path).unwrap(), b"mine");
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let fifo = root.join("pipe");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|status| status.success()) {
            eprintln!("skipped: mkfifo is not available");
            return;
        }
        assert_eq!(
            open_confined(&fifo, &root).err(),
            Some(Refusal::Missing("not a regular file"))
        );
    }

    #[test]
    fn sendfile_paths_must_lie_inside_the_root() {
        assert_eq!(sendfile("/srv/data/a/f"), Ok("/srv/data/a/f".into()));
        assert_eq!(sendfile("/srv/data//a/./f"), Ok("/srv/data/a/f".into()));
        for outside in [
            "/srv/data/b/f",
            "/srv/data/ab/f",
            "/etc/passwd",
            "/srv/data/a/../b/f",
            "srv/data/a/f",
            "/srv/data/a/f\0",
        ] {
            assert!(
                matches!(sendfile(outside), Err(Refusal::Forbidden(_))),
                "{outside}"
            );
        }
    }
}
