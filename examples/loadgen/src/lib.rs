//! Load generator and ceiling servers for Hashrocket's websocket-shootout protocol.
//!
//! The protocol: a client sends `{"type":"echo","payload":P}` and gets the same frame back; a
//! client sends `{"type":"broadcast","payload":P}`, every connected client receives
//! `{"type":"broadcast","payload":P}` and the sender also gets `{"type":"broadcastResult","payload":P}`.
//!
//! This crate teaches how to measure a WebSocket fan-out honestly: every payload carries a unique
//! key and its send time, so each client records latency, detects duplicates and counts losses;
//! a run with any loss or duplicate is invalid whatever its speed.
//!
//! - the `loadgen` binary ([`load`]) connects N clients, broadcasts at a rate or as fast as a
//!   bounded number of broadcasts in flight allows, and prints one JSON line ([`report`]);
//! - the `ceiling-server` binary ([`ceiling`]) is the hand-written tokio/axum server with no
//!   channel layer (`--mode local`) or a plain Redis PUBLISH fan-out (`--mode redis`) that the
//!   rust-channels server is compared against;
//! - the `history-bench` binary ([`history`]) measures what group histories cost on the
//!   channels-server gateway (broadcast throughput, bytes per kept message, recovery time).
//! - the `soak` binary ([`soak`]) speaks the channels-server gateway protocol instead: thousands
//!   of churning clients on one group with history, one steady publisher, the servers' RSS and
//!   open fds sampled, and every missing message judged (told or not, inside or outside the
//!   Redis outage windows); `scripts/soak.sh` runs it for 30 minutes.
//!
//! ```text
//! cargo run --release -p loadgen --bin ceiling-server -- --bind 127.0.0.1:8000 --mode local
//! cargo run --release -p loadgen --bin loadgen -- --url ws://127.0.0.1:8000/ws \
//!     --clients 1000 --mode broadcast --max 64 --duration 10 --pid $(pgrep -n ceiling-server)
//! ```

pub mod ceiling;
pub mod cpu;
pub mod error;
pub mod history;
pub mod load;
pub mod nofile;
pub mod protocol;
pub mod report;
pub mod rss;
pub mod soak;
pub mod target;

pub use error::LoadError;
