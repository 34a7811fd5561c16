//! What a server costs, read from `/proc`: CPU time and memory of a whole process tree
//! (nginx's master and worker, PHP-FPM's master and children), and the machine's load.

use std::collections::HashMap;
use std::fs;
use std::time::Duration;

/// CPU time of a process tree at one moment, to subtract from a later one.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTime {
    /// User plus system time of every live process in the tree (all threads, and the
    /// children the root has reaped).
    pub total: Duration,
    /// The system (kernel) part of `total`.
    pub system: Duration,
}

impl CpuTime {
    fn from_ticks(ticks: u64, system_ticks: u64) -> CpuTime {
        let hz = ticks_per_second();
        CpuTime {
            total: Duration::from_nanos(ticks * 1_000_000_000 / hz),
            system: Duration::from_nanos(system_ticks * 1_000_000_000 / hz),
        }
    }

    /// The CPU time the tree used between `earlier` and `self`.
    pub fn since(self, earlier: CpuTime) -> Duration {
        self.total.saturating_sub(earlier.total)
    }

    /// The part of [`since`](Self::since) spent in the kernel.
    pub fn system_since(self, earlier: CpuTime) -> Duration {
        self.system.saturating_sub(earlier.system)
    }
}

/// One `/proc/PID/stat` line, the fields this bench reads.
#[derive(Debug, Clone, Copy)]
struct Stat {
    ppid: u32,
    /// utime + stime, in clock ticks.
    ticks: u64,
    /// stime alone.
    system_ticks: u64,
    /// cutime + cstime: reaped children, in clock ticks.
    child_ticks: u64,
    /// cstime alone.
    child_system_ticks: u64,
}

fn read_stat(pid: u32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: fields start after ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field N is fields[N - 3].
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some(Stat {
        ppid: u32::try_from(field(4)?).ok()?,
        ticks: field(14)? + field(15)?,
        system_ticks: field(15)?,
        child_ticks: field(16)? + field(17)?,
        child_system_ticks: field(17)?,
    })
}

/// `pid` and all its live descendants.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if let Some(stat) = read_stat(child) {
                children.entry(stat.ppid).or_default().push(child);
            }
        }
    }
    let mut tree = vec![pid];
    let mut next = 0;
    while next < tree.len() {
        if let Some(kids) = children.get(&tree[next]) {
            tree.extend(kids);
        }
        next += 1;
    }
    tree
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// CPU time used so far by `pid`'s tree.
pub fn cpu_time(pid: u32) -> CpuTime {
    let tree = process_tree(pid);
    let (mut ticks, mut system_ticks) = (0, 0);
    for (i, &member) in tree.iter().enumerate() {
        if let Some(stat) = read_stat(member) {
            ticks += stat.ticks;
            system_ticks += stat.system_ticks;
            if i == 0 {
                ticks += stat.child_ticks;
                system_ticks += stat.child_system_ticks;
            }
        }
    }
    CpuTime::from_ticks(ticks, system_ticks)
}

/// The number in a `/proc/PID/status` line (`VmRSS: 1234 kB` gives 1234).
fn status_number(pid: u32, name: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text
        .lines()
        .find(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with(':')))?;
    line[name.len() + 1..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU time used so far by one process (all its threads, none of its children).
pub fn own_cpu_time(pid: u32) -> CpuTime {
    read_stat(pid).map_or_else(CpuTime::default, |stat| {
        CpuTime::from_ticks(stat.ticks, stat.system_ticks)
    })
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`), in bytes.
fn status_bytes(pid: u32, name: &str) -> Option<u64> {
    status_number(pid, name).map(|kib| kib * 1024)
}

/// Resident memory now, summed over `pid`'s tree, in bytes.
pub fn rss(pid: u32) -> u64 {
    process_tree(pid)
        .iter()
        .filter_map(|&p| status_bytes(p, "VmRSS"))
        .sum()
}

/// Peak resident memory (`VmHWM`), summed over `pid`'s tree, in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    process_tree(pid)
        .iter()
        .filter_map(|&p| status_bytes(p, "VmHWM"))
        .sum()
}

/// Number of threads of one process.
pub fn threads(pid: u32) -> u64 {
    status_number(pid, "Threads").unwrap_or(0)
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Busy and total jiffies of the whole machine, from `/proc/stat`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineCpu {
    busy: u64,
    total: u64,
}

impl MachineCpu {
    /// Now.
    pub fn now() -> Self {
        let text = fs::read_to_string("/proc/stat").unwrap_or_default();
        let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
            return Self::default();
        };
        let values: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        let total: u64 = values.iter().take(8).sum();
        // idle + iowait
        let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
        Self {
            busy: total - idle,
            total,
        }
    }

    /// Share of the machine's CPU that was busy since `earlier` (0..1).
    pub fn busy_since(self, earlier: MachineCpu) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return f64::NAN;
        }
        self.busy.saturating_sub(earlier.busy) as f64 / total as f64
    }
}
