//! Samples of a process's resident memory and CPU time from
//! `/proc/PID/status` (`VmRSS`) and `/proc/PID/stat` (`utime` + `stime`).

use serde::{Deserialize, Serialize};

/// Clock ticks per second of `/proc/PID/stat` (`USER_HZ`, 100 on every
/// Linux architecture this runs on; reading `sysconf` would need `libc`).
const TICKS_PER_SECOND: u64 = 100;

/// One sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcSample {
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// User plus system CPU time, milliseconds (10 ms resolution).
    pub cpu_ms: u64,
}

/// Samples process `pid`, or this process with `None`.
pub fn sample(pid: Option<u32>) -> std::io::Result<ProcSample> {
    let dir = match pid {
        Some(p) => format!("/proc/{p}"),
        None => "/proc/self".to_owned(),
    };
    let status = std::fs::read_to_string(format!("{dir}/status"))?;
    let stat = std::fs::read_to_string(format!("{dir}/stat"))?;
    parse(&status, &stat).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "unexpected /proc format")
    })
}

fn parse(status: &str, stat: &str) -> Option<ProcSample> {
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    // The command name may hold spaces and parentheses: fields start after
    // the last `)`, with the state (field 3); utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(ProcSample {
        rss_bytes: rss_kb * 1024,
        cpu_ms: (utime + stime) * 1000 / TICKS_PER_SECOND,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let status = "Name:\tbeamline\nVmPeak:\t 999 kB\nVmRSS:\t   2048 kB\nThreads: 3\n";
        let stat = "1234 (beam (line)) S 1 2 3 4 5 6 7 8 9 10 150 50 0 0 20 0 3 0";
        assert_eq!(
            parse(status, stat),
            Some(ProcSample {
                rss_bytes: 2048 * 1024,
                cpu_ms: 2000
            })
        );
        assert_eq!(parse("Name: x\n", stat), None);
    }

    #[test]
    fn samples_this_process() {
        let s = sample(None).expect("/proc/self");
        assert!(s.rss_bytes > 0);
    }
}
