//! Test harness for `deploy/`: starts the loopback cluster of
//! `deploy/local-cluster.sh` (a private `redis-server`, several
//! `channels-server --layer redis` (or `redis-pubsub`) processes and nginx in
//! front) and talks to it with real WebSocket and HTTP clients.
//!
//! The tests are in `tests/`: `local_cluster.rs` (clients spread over every
//! server, a broadcast reaches them all, a rolling restart loses nothing),
//! `history_recovery.rs` (a rolling restart of every server while clients
//! recover from group histories: every message exactly once, in order) and
//! `manifests.rs` (the Dockerfile, compose file and Kubernetes manifests pass
//! their linters and schema checks, `deploy/validate.sh`).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use cluster_test::{ClusterOptions, LocalCluster, WsClient};
//! let mut cluster = LocalCluster::start(ClusterOptions::new(3, "target/demo-cluster")).await?;
//! let client = WsClient::join(cluster.nginx_addr(), "lobby").await?;
//! println!("landed on {}", client.upstream());
//! cluster.stop()?;
//! # Ok(()) }
//! ```

mod client;
mod cluster;
mod http;
mod metrics;
mod server_bin;

pub use client::{UPSTREAM_HEADER, WsClient, WsEvent};
pub use cluster::{ClusterOptions, LocalCluster, repo_root};
pub use http::{HttpResponse, http_get, http_post_json};
pub use metrics::{connections_open, metric_value, server_metric};
pub use server_bin::channels_server_bin;
pub use test_support::free_port_block;
