//! [`ProcessCollector`]: the standard `process_*` metrics, read from
//! `/proc/self` at scrape time (Linux; elsewhere it reports nothing).

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// `/proc` reports CPU times and start times in clock ticks of `USER_HZ`,
/// which Linux fixes at 100 for every userspace interface.
const TICKS_PER_SECOND: f64 = 100.0;

/// Reports `process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds` and
/// `process_start_time_seconds`, as the Prometheus client libraries name them.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessCollector;

/// One reading of `/proc/self`.
#[derive(Debug, Default, PartialEq)]
struct Sample {
    cpu_seconds: f64,
    start_time_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    open_fds: u64,
    max_fds: Option<u64>,
}

impl Sample {
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|text| parse_boot_time(&text))?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|text| parse_max_fds(&text));
        let mut sample = parse(&stat, &status, boot_time)?;
        sample.open_fds = open_fds;
        sample.max_fds = max_fds;
        Some(sample)
    }
}

/// CPU time and start time from `/proc/self/stat`, memory from
/// `/proc/self/status`.
fn parse(stat: &str, status: &str, boot_time: u64) -> Option<Sample> {
    // The command name (field 2) may hold spaces and parentheses; the
    // fields after its closing parenthesis are plain numbers.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    // Field n of proc(5) is fields[n - 3] here.
    let number = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let (utime, stime, start_ticks) = (number(14)?, number(15)?, number(22)?);
    let kilobytes = |key: &str| {
        status.lines().find_map(|line| {
            let value = line.strip_prefix(key)?.trim().strip_suffix("kB")?;
            value.trim().parse::<u64>().ok()
        })
    };
    #[allow(clippy::cast_precision_loss)] // tick counts stay far below 2^53
    Some(Sample {
        cpu_seconds: (utime + stime) as f64 / TICKS_PER_SECOND,
        start_time_seconds: boot_time as f64 + start_ticks as f64 / TICKS_PER_SECOND,
        resident_bytes: kilobytes("VmRSS:").unwrap_or(0) * 1024,
        virtual_bytes: kilobytes("VmSize:").unwrap_or(0) * 1024,
        open_fds: 0,
        max_fds: None,
    })
}

/// `btime` of `/proc/stat`: boot time in seconds since the epoch.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
}

/// The soft limit on open files from `/proc/self/limits`.
fn parse_max_fds(text: &str) -> Option<u64> {
    let line = text
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: V,
) -> Result<(), fmt::Error> {
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let Some(sample) = Sample::read() else {
            return Ok(());
        };
        encoder
            .encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                MetricType::Counter,
            )?
            .encode_counter::<NoLabelSet, _, u64>(&sample.cpu_seconds, None)?;
        let e = &mut encoder;
        gauge(
            e,
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            sample.resident_bytes,
        )?;
        gauge(
            e,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            sample.virtual_bytes,
        )?;
        gauge(
            e,
            "process_open_fds",
            "Number of open file descriptors",
            sample.open_fds,
        )?;
        if let Some(max_fds) = sample.max_fds {
            gauge(
                e,
                "process_max_fds",
                "Maximum number of open file descriptors",
                max_fds,
            )?;
        }
        gauge(
            e,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            sample.start_time_seconds,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1 0 0 0 250 50 0 0 20 0 \
                    9 0 12345 1000 200 18446744073709551615";
        let status = "Name:\tx\nVmSize:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        let sample = parse(stat, status, 1_700_000_000).unwrap();
        assert!((sample.cpu_seconds - 3.0).abs() < 1e-9);
        assert!((sample.start_time_seconds - 1_700_000_123.45).abs() < 1e-6);
        assert_eq!(sample.resident_bytes, 1024 * 1024);
        assert_eq!(sample.virtual_bytes, 2048 * 1024);
        assert_eq!(
            parse_boot_time("cpu 1 2\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
        assert_eq!(
            parse_max_fds(
                "Limit Soft Hard Units\nMax open files            1024                 4096                 files\n"
            ),
            Some(1024)
        );
    }

    #[test]
    fn reads_this_process() {
        let sample = Sample::read().expect("/proc is readable on Linux");
        assert!(sample.resident_bytes > 0);
        assert!(sample.open_fds > 0);
        assert!(sample.start_time_seconds > 1_000_000_000.0);
    }
}
