//! CPU time of processes, read from `/proc/<pid>/stat`: the cost per delivery that does not
//! depend on how fast the client is.

use std::io;

/// Clock ticks per second of `utime`/`stime` in `/proc/<pid>/stat`: Linux reports them in
/// `USER_HZ`, which is 100 on every architecture this crate builds for (x86, arm, riscv).
const USER_HZ: f64 = 100.0;

/// Returns the CPU seconds (user + system) process `pid` has used so far.
///
/// # Errors
///
/// Fails when the process does not exist or its stat line cannot be read.
pub fn read_cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat)
        .map(|ticks| ticks as f64 / USER_HZ)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("/proc/{pid}/stat has no utime/stime fields"),
            )
        })
}

/// Returns the summed CPU seconds of all `pids`.
///
/// # Errors
///
/// Fails on the first pid whose stat cannot be read.
pub fn total_cpu_seconds(pids: &[u32]) -> io::Result<f64> {
    pids.iter().map(|pid| read_cpu_seconds(*pid)).sum()
}

/// CPU seconds per million deliveries, rounded to three decimals; `None` without deliveries.
pub fn per_million(cpu_seconds: f64, deliveries: u64) -> Option<f64> {
    if deliveries == 0 {
        return None;
    }
    Some((cpu_seconds * 1e6 / deliveries as f64 * 1000.0).round() / 1000.0)
}

/// `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` line, in ticks.
///
/// The command name (field 2) is in parentheses and may hold spaces or `)`, so fields are
/// counted from the last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utime_and_stime_after_the_name() {
        let stat = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 1 0";
        assert_eq!(parse_cpu_ticks(stat), Some(281));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn own_cpu_time_grows_with_work() {
        // Spin until the reading shows 50 ms of CPU (on a loaded machine
        // 100 ms of wall time may be far less CPU); a reading that never
        // grows fails at the deadline.
        let before = read_cpu_seconds(std::process::id()).expect("own stat is readable");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut x = 0u64;
        let after = loop {
            for _ in 0..1_000_000 {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            }
            let now = read_cpu_seconds(std::process::id()).expect("own stat is readable");
            if now - before >= 0.05 || std::time::Instant::now() > deadline {
                break now;
            }
        };
        std::hint::black_box(x);
        assert!(after - before >= 0.05, "{before} -> {after}");
        assert!(read_cpu_seconds(u32::MAX).is_err());
        assert_eq!(per_million(2.0, 4_000_000), Some(0.5));
        assert_eq!(per_million(1.0, 0), None);
    }
}
