//! Resident memory of server processes, read from `/proc/<pid>/status`.

use std::io;

/// Returns the resident set size (`VmRSS`) of process `pid` in bytes.
///
/// # Errors
///
/// Fails when the process does not exist or its status has no `VmRSS` line.
pub fn read_rss_bytes(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vm_rss(&status).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/{pid}/status has no VmRSS line"),
        )
    })
}

/// Returns the summed RSS in bytes of all `pids`.
///
/// # Errors
///
/// Fails on the first pid whose RSS cannot be read.
pub fn total_rss_bytes(pids: &[u32]) -> io::Result<u64> {
    pids.iter().map(|pid| read_rss_bytes(*pid)).sum()
}

/// Extracts `VmRSS:   1234 kB` from a `/proc/<pid>/status` text, in bytes.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut fields = line.split_whitespace().skip(1);
    let value: u64 = fields.next()?.parse().ok()?;
    let unit = fields.next().unwrap_or("kB");
    match unit {
        "kB" => Some(value * 1024),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_rss_in_kilobytes() {
        let status = "Name:\tx\nVmPeak:\t 10 kB\nVmRSS:\t    2048 kB\nThreads: 1\n";
        assert_eq!(parse_vm_rss(status), Some(2048 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn reads_own_rss() {
        let rss = read_rss_bytes(std::process::id()).expect("own /proc status is readable");
        assert!(rss > 0);
        assert!(read_rss_bytes(u32::MAX).is_err());
    }
}
