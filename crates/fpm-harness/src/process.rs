//! Supervision of an external server process running in its own process group.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{HarnessError, Result};

/// How long to wait for a killed process group to disappear.
const GROUP_EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Fails when the server led by `leader` is gone: `NotRunning` if it was never started or
/// already reaped, `ExitedEarly` (with the tail of its log) if it exited since. Clears
/// `leader` in the second case, so the process is not reaped twice.
pub(crate) fn ensure_running(
    leader: &mut Option<GroupLeader>,
    binary: &Path,
    address: &str,
    log_tail: impl FnOnce() -> String,
) -> Result<()> {
    let exited = match leader.as_mut() {
        Some(leader) => leader.try_wait()?,
        None => {
            return Err(HarnessError::NotRunning {
                binary: binary.to_path_buf(),
            })
        }
    };
    if let Some(status) = exited {
        *leader = None;
        return Err(HarnessError::ExitedEarly {
            binary: binary.to_path_buf(),
            status: status.to_string(),
            address: address.to_owned(),
            log_tail: log_tail(),
        });
    }
    Ok(())
}

/// A spawned child that leads its own process group (pgid == pid).
#[derive(Debug)]
pub(crate) struct GroupLeader {
    binary: PathBuf,
    child: Child,
}

impl GroupLeader {
    /// Wraps a child spawned with `process_group(0)`.
    pub(crate) fn new(binary: PathBuf, child: Child) -> Self {
        Self { binary, child }
    }

    /// Pid of the leader, which is also the process group id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` if the leader has exited (and is now reaped).
    pub(crate) fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        let pid = self.pid();
        self.child.try_wait().map_err(|source| HarnessError::Wait {
            binary: self.binary.clone(),
            pid,
            source,
        })
    }

    /// Sends `signal` to the leader only.
    pub(crate) fn signal(&self, signal: libc::c_int, name: &'static str) -> Result<()> {
        let pid = pid_t(self.pid());
        // SAFETY: kill(2) has no memory-safety preconditions; `pid` is the
        // positive pid of our own, not yet reaped, child.
        let rc = unsafe { libc::kill(pid, signal) };
        if rc == 0 {
            return Ok(());
        }
        Err(HarnessError::Signal {
            signal: name,
            target: "process",
            pid,
            source: io::Error::last_os_error(),
        })
    }

    /// SIGKILLs the whole process group, reaps the leader and waits (bounded)
    /// until no live member of the group remains. Consumes the leader.
    pub(crate) fn kill_group(mut self) -> Result<()> {
        let pgid = pid_t(self.pid());
        // SAFETY: killpg(2) has no memory-safety preconditions. `pgid` is the
        // group our child created; Linux does not reuse a pid while it is
        // still the id of a process group with members, so this cannot hit
        // an unrelated group even if the leader already exited.
        let rc = unsafe { libc::killpg(pgid, libc::SIGKILL) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            // ESRCH: every member already gone, nothing to kill.
            if err.raw_os_error() != Some(libc::ESRCH) {
                return Err(HarnessError::Signal {
                    signal: "SIGKILL",
                    target: "process group",
                    pid: pgid,
                    source: err,
                });
            }
        }
        let pid = self.pid();
        self.child.wait().map_err(|source| HarnessError::Wait {
            binary: self.binary.clone(),
            pid,
            source,
        })?;
        wait_for_group_exit(pgid, GROUP_EXIT_TIMEOUT);
        Ok(())
    }
}

fn pid_t(pid: u32) -> libc::pid_t {
    // Linux pids are at most 2^22, so this never truncates.
    pid as libc::pid_t
}

/// Fields of `/proc/<pid>/stat` the harness cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub(crate) pid: u32,
    pub(crate) state: char,
    pub(crate) ppid: u32,
    pub(crate) pgrp: i32,
}

/// Parses the content of a `/proc/<pid>/stat` file. The command name is in
/// parentheses and may itself contain spaces and parentheses, so fields are
/// located after the *last* `)`.
pub(crate) fn parse_stat(content: &str) -> Option<ProcStat> {
    let open = content.find('(')?;
    let close = content.rfind(')')?;
    let pid = content.get(..open)?.trim().parse().ok()?;
    let mut fields = content.get(close + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(ProcStat {
        pid,
        state,
        ppid,
        pgrp,
    })
}

/// Every process currently visible in `/proc`. Processes that vanish while
/// scanning are skipped.
pub(crate) fn all_processes() -> Result<Vec<ProcStat>> {
    let proc_dir = Path::new("/proc");
    let entries = fs::read_dir(proc_dir).map_err(|source| HarnessError::ReadFile {
        path: proc_dir.to_path_buf(),
        source,
    })?;
    Ok(entries
        .filter_map(|entry| entry.ok())
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|entry| fs::read_to_string(entry.path().join("stat")).ok())
        .filter_map(|content| parse_stat(&content))
        .collect())
}

/// Pids of the live (non-zombie) children of `parent`, sorted.
pub(crate) fn live_children(parent: u32) -> Result<Vec<u32>> {
    let mut pids: Vec<u32> = all_processes()?
        .into_iter()
        .filter(|p| p.ppid == parent && p.state != 'Z' && p.state != 'X')
        .map(|p| p.pid)
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

fn group_has_live_members(pgid: i32) -> bool {
    all_processes()
        .map(|procs| {
            procs
                .iter()
                .any(|p| p.pgrp == pgid && p.state != 'Z' && p.state != 'X')
        })
        .unwrap_or(false)
}

fn wait_for_group_exit(pgid: i32, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while group_has_live_members(pgid) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
}

/// The last `lines` lines of each existing file, each section headed by the
/// file's path. Missing or unreadable files are mentioned, not fatal.
pub(crate) fn log_tail(files: &[&Path], lines: usize) -> String {
    let mut out = String::new();
    for path in files {
        out.push_str(&format!("==> {} <==\n", path.display()));
        match fs::read(path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let all: Vec<&str> = text.lines().collect();
                let start = all.len().saturating_sub(lines);
                for line in &all[start..] {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            Err(err) => out.push_str(&format!("(unreadable: {err})\n")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_stat_handles_parentheses_and_spaces_in_command_name() {
        let stat = "1234 (php-fpm: pool (x) y) S 1200 1200 1200 0 -1 4194624 1 0 0 0";
        assert_eq!(
            parse_stat(stat),
            Some(ProcStat {
                pid: 1234,
                state: 'S',
                ppid: 1200,
                pgrp: 1200
            })
        );
    }

    #[test]
    fn parse_stat_rejects_garbage() {
        assert_eq!(parse_stat("not a stat line"), None);
    }

    #[test]
    fn all_processes_includes_the_current_process() {
        let me = std::process::id();
        let procs = all_processes().unwrap();
        assert!(procs.iter().any(|p| p.pid == me));
    }
}
