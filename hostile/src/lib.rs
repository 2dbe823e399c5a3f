//! The attack suite of issue 13 (not published): helpers for the tests in
//! `tests/`, which drive the real `channels-server` binary.
//!
//! - [`server`]: start the binary (`$CHANNELS_SERVER_BIN`, else the
//!   workspace's `target/debug/channels-server`), read its RSS and open
//!   file descriptors from `/proc`, read `/metrics`;
//! - [`raw`]: a WebSocket client over a plain `TcpStream` that sends what a
//!   library refuses to (unmasked, oversized, fragmented, bad UTF-8 frames)
//!   and reads the server's frames byte by byte;
//!
//! The checks the fuzz targets run live in `checks/` (crate `fuzz-checks`);
//! `tests/fuzz_seeds.rs` feeds them every committed seed.

pub mod raw;
pub mod server;
