//! Raise the open-file limit so one process can hold thousands of sockets.

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the new soft limit.
///
/// Each WebSocket connection is one file descriptor; the default soft limit (often 1024) would
/// cap a run far below the 20,000 connections this machine allows per process.
///
/// # Errors
///
/// Returns the `getrlimit`/`setrlimit` error.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}
