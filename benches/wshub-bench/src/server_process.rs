//! Reading the server's resource use from `/proc/PID`.
//!
//! With two cores the load generator's own core caps how many deliveries per second it can
//! count, so the server's CPU time per delivered message is the fairer measure of efficiency;
//! its resident memory divided by open connections is the idle cost.

use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Clock ticks per second of `utime`/`stime` in `/proc/PID/stat`: `USER_HZ`, 100 on every
/// Linux architecture we run on (the kernel's ABI fixes it regardless of `CONFIG_HZ`).
const USER_HZ: u64 = 100;

/// A process on this machine whose CPU time and memory we read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerProcess {
    pid: u32,
}

/// One reading of a process's counters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    /// User plus system CPU time consumed so far, from `/proc/PID/stat`, at 10 ms resolution.
    pub(crate) cpu: Duration,
    /// On-CPU time of the threads alive now, from `/proc/PID/task/*/schedstat`, in
    /// nanoseconds; `None` when the kernel does not provide schedstat.
    pub(crate) cpu_precise: Option<Duration>,
    /// Resident set size (`VmRSS`).
    pub(crate) rss_bytes: u64,
}

impl ServerProcess {
    /// The process `pid`; fails when it does not exist.
    pub(crate) fn new(pid: u32) -> Result<Self> {
        let process = Self { pid };
        process
            .sample()
            .with_context(|| format!("reading /proc/{pid}"))?;
        Ok(process)
    }

    /// This load generator itself.
    pub(crate) fn current() -> Self {
        Self {
            pid: std::process::id(),
        }
    }

    /// Reads the process's CPU time and RSS now.
    pub(crate) fn sample(&self) -> Result<Sample> {
        Ok(Sample {
            cpu: self.cpu()?,
            cpu_precise: self.cpu_precise(),
            rss_bytes: self.rss_bytes()?,
        })
    }

    fn cpu_precise(&self) -> Option<Duration> {
        let mut total = 0u64;
        for task in std::fs::read_dir(format!("/proc/{}/task", self.pid)).ok()? {
            let schedstat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
            total += schedstat.split_whitespace().next()?.parse::<u64>().ok()?;
        }
        Some(Duration::from_nanos(total))
    }

    fn cpu(&self) -> Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        // The command name (field 2) is in parentheses and may contain spaces, so count fields
        // from the last ')': field 3 (state) comes first, utime and stime are fields 14 and 15.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            bail!("unexpected /proc/{}/stat format", self.pid);
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (Some(utime), Some(stime)) = (fields.get(11), fields.get(12)) else {
            bail!("short /proc/{}/stat", self.pid);
        };
        let ticks = utime.parse::<u64>()? + stime.parse::<u64>()?;
        Ok(Duration::from_millis(ticks * (1000 / USER_HZ)))
    }

    fn rss_bytes(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        for line in status.lines() {
            if let Some(value) = line.strip_prefix("VmRSS:") {
                let kib: u64 = value.trim().trim_end_matches("kB").trim().parse()?;
                return Ok(kib * 1024);
            }
        }
        bail!("no VmRSS in /proc/{}/status", self.pid)
    }
}

/// CPU time spent between two samples of one process.
///
/// Prefers the nanosecond schedstat sum, which makes short runs measurable; but a thread that
/// exited between the samples takes its time out of that sum, so when it falls more than two
/// ticks below the 10 ms `stat` figure, the `stat` figure is used.
pub(crate) fn cpu_between(before: &Sample, after: &Sample) -> Duration {
    let coarse = after.cpu.saturating_sub(before.cpu);
    match (before.cpu_precise, after.cpu_precise) {
        (Some(b), Some(a))
            if a >= b && a.saturating_sub(b) + Duration::from_millis(20) >= coarse =>
        {
            a.saturating_sub(b)
        }
        _ => coarse,
    }
}
