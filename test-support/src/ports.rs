//! Free loopback ports.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Ports for blocks are taken below Linux's ephemeral range (32768 and up),
/// so outgoing connections of the tests themselves never occupy them.
const LOW: u32 = 20_000;
const HIGH: u32 = 32_000;

/// Moves each call of this process to a different block.
static CALLS: AtomicU32 = AtomicU32::new(0);

/// A free TCP port on 127.0.0.1 (bound and released; fine for tests).
///
/// # Panics
/// When the OS has no free port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap_or_else(|error| panic!("no free port on 127.0.0.1: {error}"))
        .port()
}

/// The first of `count` consecutive ports on 127.0.0.1 that are free now
/// (each one could be bound). Two processes racing for the same block is
/// unlikely (the start point depends on the process id and the clock).
///
/// # Errors
/// When no free block is found after 200 tries.
pub fn free_port_block(count: u16) -> Result<u16, String> {
    let count = u32::from(count.max(1));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let seed = std::process::id()
        .wrapping_mul(7_919)
        .wrapping_add(nanos / 1_000)
        .wrapping_add(CALLS.fetch_add(1, Ordering::Relaxed).wrapping_mul(1_009));
    let span = HIGH - LOW - count;
    for attempt in 0..200u32 {
        let base = LOW + seed.wrapping_add(attempt.wrapping_mul(count + 7)) % span;
        if (base..base + count).all(port_is_free) {
            return u16::try_from(base).map_err(|e| e.to_string());
        }
    }
    Err(format!(
        "no {count} consecutive free ports between {LOW} and {HIGH} on 127.0.0.1"
    ))
}

fn port_is_free(port: u32) -> bool {
    u16::try_from(port).is_ok_and(|port| TcpListener::bind(("127.0.0.1", port)).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_is_free_and_the_next_call_picks_another() {
        let first = free_port_block(5).expect("a block");
        let second = free_port_block(5).expect("a block");
        assert_ne!(first, second);
        for port in first..first + 5 {
            assert!(
                TcpListener::bind(("127.0.0.1", port)).is_ok(),
                "port {port} busy"
            );
        }
        assert_ne!(free_port(), 0);
    }
}
