//! Server process samples: resident memory and open file descriptors, read from `/proc`.

use std::io;

use serde::Serialize;

use crate::rss::read_rss_bytes;

/// Counts the open file descriptors of process `pid` (entries of `/proc/<pid>/fd`).
///
/// # Errors
///
/// Fails when the process is gone or its fd directory cannot be read.
pub fn count_fds(pid: u32) -> io::Result<u64> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64)
}

/// First, last and highest value of a series.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Span {
    pub(crate) first: u64,
    /// The first value after the warm-up (every client connected once).
    pub(crate) warm: Option<u64>,
    pub(crate) last: u64,
    pub(crate) max: u64,
}

impl Span {
    fn add(&mut self, value: u64, first: bool, warm: bool) {
        if first {
            self.first = value;
        }
        if warm && self.warm.is_none() {
            self.warm = Some(value);
        }
        self.last = value;
        self.max = self.max.max(value);
    }
}

/// Everything sampled from one server process.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ProcessSeries {
    pub(crate) pid: u32,
    pub(crate) samples: u64,
    pub(crate) rss_bytes: Span,
    pub(crate) fds: Span,
    /// Seconds since the start at which the process was first found gone (a crash).
    pub(crate) gone_at: Option<f64>,
}

impl ProcessSeries {
    pub(crate) fn new(pid: u32) -> Self {
        Self {
            pid,
            samples: 0,
            rss_bytes: Span::default(),
            fds: Span::default(),
            gone_at: None,
        }
    }

    /// Reads the process now (`warm`: past the warm-up); returns `(rss, fds)`, or `None`
    /// when it is gone.
    pub(crate) fn sample(&mut self, t: f64, warm: bool) -> Option<(u64, u64)> {
        match (read_rss_bytes(self.pid), count_fds(self.pid)) {
            (Ok(rss), Ok(fds)) => {
                let first = self.samples == 0;
                self.rss_bytes.add(rss, first, warm);
                self.fds.add(fds, first, warm);
                self.samples += 1;
                Some((rss, fds))
            }
            _ => {
                self.gone_at.get_or_insert(t);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_own_process() {
        let mut series = ProcessSeries::new(std::process::id());
        let (rss, fds) = series.sample(0.0, false).expect("own process is readable");
        assert!(rss > 0 && fds >= 3);
        series.sample(1.0, true);
        assert!(series.rss_bytes.warm.is_some());
        assert_eq!(series.samples, 2);
        let mut gone = ProcessSeries::new(u32::MAX);
        assert!(gone.sample(3.0, true).is_none());
        assert_eq!(gone.gone_at, Some(3.0));
    }
}
