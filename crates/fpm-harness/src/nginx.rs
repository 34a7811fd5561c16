//! Starting a private nginx (the reference implementation the gateway is
//! compared with) from a caller-supplied `http { ... }` body.

use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;

use tempfile::TempDir;

use crate::error::{HarnessError, Result};
use crate::fpm::{running_as_root, write_file};
use crate::locate::{fixtures_dir, nginx_binary};
use crate::net::{try_free_port, FpmAddress};
use crate::process::{log_tail, GroupLeader};

/// Debian's stock FastCGI parameter file.
const FASTCGI_PARAMS: &str = "/etc/nginx/fastcgi_params";
/// How long to wait for nginx to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const CONF_FILE: &str = "nginx.conf";
const ERROR_LOG: &str = "error.log";
const STDERR_FILE: &str = "nginx.stderr";

/// A running private nginx (master + 1 worker, foreground, own process
/// group). Dropping it SIGKILLs the group.
#[derive(Debug)]
pub struct Nginx {
    binary: PathBuf,
    port: u16,
    leader: Option<GroupLeader>,
    // Declared last so the processes are gone before the directory is removed.
    dir: TempDir,
}

impl Nginx {
    /// Writes a complete `nginx.conf` around `http_block_config` (the inside
    /// of the `http { }` block: `server { ... }` blocks, upstreams, ...),
    /// starts nginx and waits until the chosen port accepts connections.
    ///
    /// Placeholders replaced in `http_block_config`:
    /// - `{{PORT}}`: a free loopback port (required; see [`Nginx::port`]),
    ///   e.g. `listen 127.0.0.1:{{PORT}};`
    /// - `{{TMP}}`: nginx's private temp directory
    /// - `{{FIXTURES}}`: [`crate::fixtures_dir`]
    /// - `{{FASTCGI_PARAMS}}`: [`Nginx::fastcgi_params_path`]
    ///
    /// Everything outside `http` is fixed: `daemon off`, `master_process
    /// on`, one worker with 4096 connections, `access_log off`, pid file,
    /// error log and all temp paths inside the temp directory, and `user
    /// root` when running as root (so workers can reach root-owned sockets
    /// in private temp directories).
    pub fn start(http_block_config: &str) -> Result<Nginx> {
        Self::start_with_workers(http_block_config, "1")
    }

    /// As [`Nginx::start`], with `worker_processes` set to `workers` (a count, or
    /// `auto`: one per core, as Debian's own `nginx.conf` has it).
    pub fn start_with_workers(http_block_config: &str, workers: &str) -> Result<Nginx> {
        if !http_block_config.contains("{{PORT}}") {
            return Err(HarnessError::InvalidConfig(
                "the nginx config must listen on {{PORT}} so the harness can tell when it is ready"
                    .to_owned(),
            ));
        }
        let binary = nginx_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("nginx-harness-")
            .tempdir()
            .map_err(|source| HarnessError::TempDir {
                what: "nginx",
                source,
            })?;
        let port = try_free_port().map_err(|source| HarnessError::Socket {
            what: "cannot pick a free loopback port for nginx".to_owned(),
            source,
        })?;
        let conf = render_conf(dir.path(), port, workers, http_block_config);
        let conf_path = dir.path().join(CONF_FILE);
        write_file(&conf_path, &conf)?;

        let stderr_path = dir.path().join(STDERR_FILE);
        let stderr = File::create(&stderr_path).map_err(|source| HarnessError::WriteFile {
            path: stderr_path.clone(),
            source,
        })?;
        let stdout = stderr
            .try_clone()
            .map_err(|source| HarnessError::WriteFile {
                path: stderr_path,
                source,
            })?;
        let child = Command::new(&binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            // Error log used before the config is read (default would be
            // /var/log/nginx/error.log, unwritable for non-root users).
            .arg("-e")
            .arg(dir.path().join(ERROR_LOG))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(|source| HarnessError::Spawn {
                binary: binary.clone(),
                source,
            })?;
        let mut nginx = Nginx {
            binary: binary.clone(),
            port,
            leader: Some(GroupLeader::new(binary, child)),
            dir,
        };
        nginx.wait_ready()?;
        Ok(nginx)
    }

    /// The port substituted for `{{PORT}}`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Path of the distribution's `fastcgi_params` file, for `include`.
    pub fn fastcgi_params_path() -> &'static Path {
        Path::new(FASTCGI_PARAMS)
    }

    /// nginx's private directory (config, logs, temp paths).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Current content of nginx's error log.
    pub fn error_log_contents(&self) -> Result<String> {
        let path = self.dir.path().join(ERROR_LOG);
        fs::read(&path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .map_err(|source| HarnessError::ReadFile { path, source })
    }

    /// Pid of the nginx master, `None` after [`Nginx::kill`].
    pub fn master_pid(&self) -> Option<u32> {
        self.leader.as_ref().map(GroupLeader::pid)
    }

    /// SIGKILLs master and workers and reaps the master. No-op if already
    /// killed.
    pub fn kill(&mut self) -> Result<()> {
        match self.leader.take() {
            Some(leader) => leader.kill_group(),
            None => Ok(()),
        }
    }

    fn wait_ready(&mut self) -> Result<()> {
        let addr = FpmAddress::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let address = addr.to_upstream_string();
            let dir = self.dir.path();
            crate::process::ensure_running(&mut self.leader, &self.binary, &address, || {
                Self::log_tail_in(dir)
            })?;
            if addr.connect(Duration::from_millis(10)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let log_tail = self.log_tail();
                let _ = self.kill();
                return Err(HarnessError::NotReady {
                    binary: self.binary.clone(),
                    address: addr.to_upstream_string(),
                    timeout_ms: READY_TIMEOUT.as_millis(),
                    log_tail,
                });
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn log_tail(&self) -> String {
        Self::log_tail_in(self.dir.path())
    }

    /// The end of the logs in `dir`: a function of the directory alone, so it can be
    /// called while another field of `self` is borrowed mutably.
    fn log_tail_in(dir: &Path) -> String {
        log_tail(&[&dir.join(ERROR_LOG), &dir.join(STDERR_FILE)], 40)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // Nothing sensible can be done with an error while dropping.
        let _ = self.kill();
    }
}

fn render_conf(dir: &Path, port: u16, workers: &str, http_block_config: &str) -> String {
    let tmp = dir.display().to_string();
    let body = http_block_config
        .replace("{{PORT}}", &port.to_string())
        .replace("{{TMP}}", &tmp)
        .replace("{{FIXTURES}}", &fixtures_dir().display().to_string())
        .replace("{{FASTCGI_PARAMS}}", FASTCGI_PARAMS);
    let user = if running_as_root() {
        "user root root;\n"
    } else {
        ""
    };
    format!(
        "# Generated by fpm-harness.\n\
         {user}\
         daemon off;\n\
         master_process on;\n\
         worker_processes {workers};\n\
         pid {tmp}/nginx.pid;\n\
         error_log {tmp}/{ERROR_LOG} warn;\n\
         events {{\n    worker_connections 4096;\n}}\n\
         http {{\n\
         \x20   access_log off;\n\
         \x20   client_body_temp_path {tmp}/body;\n\
         \x20   fastcgi_temp_path {tmp}/fastcgi;\n\
         \x20   proxy_temp_path {tmp}/proxy;\n\
         \x20   uwsgi_temp_path {tmp}/uwsgi;\n\
         \x20   scgi_temp_path {tmp}/scgi;\n\
         {body}\n\
         }}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_conf_substitutes_placeholders_and_private_paths() {
        let conf = render_conf(
            Path::new("/tmp/ngx"),
            8080,
            "1",
            "server { listen 127.0.0.1:{{PORT}}; root {{TMP}}/www; include {{FASTCGI_PARAMS}}; }",
        );
        assert!(conf.contains("listen 127.0.0.1:8080;"));
        assert!(conf.contains("root /tmp/ngx/www;"));
        assert!(conf.contains("include /etc/nginx/fastcgi_params;"));
        assert!(conf.contains("pid /tmp/ngx/nginx.pid;"));
        assert!(conf.contains("fastcgi_temp_path /tmp/ngx/fastcgi;"));
        assert!(conf.contains("daemon off;"));
        assert!(!conf.contains("{{"));
    }

    #[test]
    fn config_without_port_placeholder_is_rejected() {
        let err = Nginx::start("server { listen 80; }");
        assert!(matches!(err, Err(HarnessError::InvalidConfig(_))));
    }
}
