//! The history benchmark (`history-bench`): what group histories cost on the channels-server
//! gateway (docs/protocol.md, "History and recovery").
//!
//! - [`throughput`]: a broadcast to C subscribers with and without history (run the server
//!   twice, `--history-size 0` and `--history-size N`, and compare);
//! - [`memory`]: bytes per kept message, in Redis and in the server's RSS;
//! - [`recovery`]: C clients reconnecting at once and recovering the P messages they missed.
//!
//! It speaks the gateway protocol ([`gateway`]) in development mode (no token) and publishes
//! over one WebSocket ([`publisher`]); start the server with `--client-rate-limit 0` so that
//! the publisher is not rate limited. `scripts/bench-history.sh` runs all three.

pub mod gateway;
pub mod memory;
pub mod publisher;
pub mod recovery;
pub mod throughput;
