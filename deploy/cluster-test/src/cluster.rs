//! [`LocalCluster`]: `deploy/local-cluster.sh` driven from a test.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::Command;
use tokio::time::timeout;

use crate::server_bin::channels_server_bin;

/// `start` waits up to 20 s per process; a restart drains for up to 15 s.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("cluster-test lives in deploy/cluster-test")
        .to_path_buf()
}

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of `channels-server` processes.
    pub servers: u16,
    /// The `--layer` of every server: `redis` (the default) or `redis-pubsub`.
    pub layer: String,
    /// Publish API token given to every server (`CHANNELS_PUBLISH_TOKEN`).
    pub publish_token: Option<String>,
    /// HS256 secret of client tokens (`CHANNELS_JWT_SECRET`); none keeps the
    /// servers in development mode (anonymous clients).
    pub jwt_secret: Option<String>,
    /// Group histories of every server (`CHANNELS_HISTORY_SIZE` and
    /// `CHANNELS_HISTORY_TTL`, seconds): messages kept per group and for how
    /// long; none keeps no history.
    pub history: Option<(usize, u64)>,
    /// Where the script keeps config, pid files and logs.
    pub state_dir: PathBuf,
}

impl ClusterOptions {
    /// `servers` processes, no publish token, state in `state_dir`.
    pub fn new(servers: u16, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            servers,
            layer: "redis".to_owned(),
            publish_token: None,
            jwt_secret: None,
            history: None,
            state_dir: state_dir.into(),
        }
    }

    /// Runs the servers on another Redis layer (`redis-pubsub`).
    #[must_use]
    pub fn layer(mut self, layer: impl Into<String>) -> Self {
        self.layer = layer.into();
        self
    }

    /// Turns development mode off: clients need a JWT signed with `secret`.
    #[must_use]
    pub fn jwt_secret(mut self, secret: impl Into<String>) -> Self {
        self.jwt_secret = Some(secret.into());
        self
    }

    /// Every group keeps its newest `size` messages for `ttl_secs` seconds,
    /// for clients that recover (docs/protocol.md, "History and recovery").
    #[must_use]
    pub fn history(mut self, size: usize, ttl_secs: u64) -> Self {
        self.history = Some((size, ttl_secs));
        self
    }

    /// Turns the publish API on with `token`.
    #[must_use]
    pub fn publish_token(mut self, token: impl Into<String>) -> Self {
        self.publish_token = Some(token.into());
        self
    }
}

/// A running loopback cluster: nginx on one port, server `i` (1-based) on
/// `base_port + i - 1`, a private Redis. Stopped (with everything the script
/// started) by [`LocalCluster::stop`] or on drop.
#[derive(Debug)]
pub struct LocalCluster {
    state_dir: PathBuf,
    servers: u16,
    base_port: u16,
    nginx_port: u16,
    redis_port: u16,
    stopped: bool,
}

impl LocalCluster {
    /// Picks free ports and runs `deploy/local-cluster.sh start`, which returns
    /// once Redis answers, every server's `/readyz` is 200 and nginx is up.
    ///
    /// # Errors
    /// When no ports are free, the server binary is missing or the script fails
    /// (the error carries its output and the tail of every log).
    pub async fn start(options: ClusterOptions) -> anyhow::Result<Self> {
        let bin = channels_server_bin()?;
        // nginx, redis, then the servers: one block.
        let first =
            test_support::free_port_block(options.servers + 2).map_err(anyhow::Error::msg)?;
        // A run killed before its Drop left processes behind: stop what its
        // state directory recorded, then start clean.
        if options.state_dir.join("cluster.env").exists() {
            let stopped = std::process::Command::new("bash")
                .arg(repo_root().join("deploy/local-cluster.sh"))
                .arg("stop")
                .env("CLUSTER_STATE_DIR", &options.state_dir)
                .output()
                .context("cannot run local-cluster.sh stop")?;
            if !stopped.status.success() {
                bail!(
                    "stopping the leftover cluster in {} failed:\n{}",
                    options.state_dir.display(),
                    String::from_utf8_lossy(&stopped.stderr)
                );
            }
        }
        if options.state_dir.exists() {
            std::fs::remove_dir_all(&options.state_dir)
                .with_context(|| format!("cannot clear {}", options.state_dir.display()))?;
        }
        std::fs::create_dir_all(&options.state_dir)?;
        let cluster = Self {
            state_dir: options.state_dir.clone(),
            servers: options.servers,
            nginx_port: first,
            redis_port: first + 1,
            base_port: first + 2,
            stopped: false,
        };
        let mut command = cluster.script("start");
        command
            .args(["--servers", &cluster.servers.to_string()])
            .args(["--layer", &options.layer])
            .args(["--base-port", &cluster.base_port.to_string()])
            .args(["--nginx-port", &cluster.nginx_port.to_string()])
            .args(["--redis-port", &cluster.redis_port.to_string()])
            .arg("--server-bin")
            .arg(&bin);
        match &options.publish_token {
            Some(token) => command.env("CHANNELS_PUBLISH_TOKEN", token),
            None => command.env_remove("CHANNELS_PUBLISH_TOKEN"),
        };
        match &options.jwt_secret {
            Some(secret) => command.env("CHANNELS_JWT_SECRET", secret),
            None => command.env_remove("CHANNELS_JWT_SECRET"),
        };
        // CHANNELS_* variables reach every server and are kept for restarts.
        match options.history {
            Some((size, ttl)) => command
                .env("CHANNELS_HISTORY_SIZE", size.to_string())
                .env("CHANNELS_HISTORY_TTL", ttl.to_string()),
            None => command
                .env_remove("CHANNELS_HISTORY_SIZE")
                .env_remove("CHANNELS_HISTORY_TTL"),
        };
        cluster.run(command, "start").await?;
        Ok(cluster)
    }

    /// The load balancer's address.
    pub fn nginx_addr(&self) -> SocketAddr {
        loopback(self.nginx_port)
    }

    /// The address of server `index` (1-based).
    pub fn server_addr(&self, index: u16) -> SocketAddr {
        loopback(self.base_port + index - 1)
    }

    /// Every server's address, server 1 first.
    pub fn server_addrs(&self) -> Vec<SocketAddr> {
        (1..=self.servers).map(|i| self.server_addr(i)).collect()
    }

    /// Which server (1-based) listens on `addr`, if one does.
    pub fn server_index(&self, addr: SocketAddr) -> Option<u16> {
        (1..=self.servers).find(|i| self.server_addr(*i) == addr)
    }

    /// Number of servers.
    pub fn servers(&self) -> u16 {
        self.servers
    }

    /// The private Redis's address.
    pub fn redis_addr(&self) -> SocketAddr {
        loopback(self.redis_port)
    }

    /// `local-cluster.sh restart-server index`: SIGTERM, wait for the drain,
    /// start again on the same port, wait for `/readyz`.
    ///
    /// # Errors
    /// When the script fails or takes over 90 s.
    pub async fn restart_server(&self, index: u16) -> anyhow::Result<()> {
        let mut command = self.script("restart-server");
        command.arg(index.to_string());
        self.run(command, "restart-server").await.map(drop)
    }

    /// `local-cluster.sh rolling-restart`: [`LocalCluster::restart_server`]
    /// for every server in turn.
    ///
    /// # Errors
    /// When the script fails or takes over 90 s.
    pub async fn rolling_restart(&self) -> anyhow::Result<()> {
        self.run(self.script("rolling-restart"), "rolling-restart")
            .await
            .map(drop)
    }

    /// `local-cluster.sh status`: `Ok(true)` when every process runs and is ready.
    ///
    /// # Errors
    /// When the script cannot run.
    pub async fn is_healthy(&self) -> anyhow::Result<bool> {
        let mut command = self.script("status");
        let output = timeout(SCRIPT_TIMEOUT, command.output())
            .await
            .context("local-cluster.sh status timed out")??;
        Ok(output.status.success())
    }

    /// `local-cluster.sh stop`: stops nginx, the servers and Redis.
    ///
    /// # Errors
    /// When the script fails.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        // Blocking on purpose: this also runs from Drop, outside any runtime.
        let output = std::process::Command::new("bash")
            .arg(repo_root().join("deploy/local-cluster.sh"))
            .arg("stop")
            .env("CLUSTER_STATE_DIR", &self.state_dir)
            .output()
            .context("cannot run local-cluster.sh stop")?;
        if !output.status.success() {
            bail!(
                "local-cluster.sh stop failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// The last lines of every log in the state directory, for failure reports.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        let Ok(entries) = std::fs::read_dir(&self.state_dir) else {
            return out;
        };
        let mut logs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        logs.sort();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(25)..];
            let _ = writeln!(out, "==> {} <==\n{}", log.display(), tail.join("\n"));
        }
        out
    }

    fn script(&self, subcommand: &str) -> Command {
        let mut command = Command::new("bash");
        command
            .arg(repo_root().join("deploy/local-cluster.sh"))
            .arg(subcommand)
            .env("CLUSTER_STATE_DIR", &self.state_dir)
            .kill_on_drop(true);
        command
    }

    async fn run(&self, mut command: Command, what: &str) -> anyhow::Result<Output> {
        let output = timeout(SCRIPT_TIMEOUT, command.output())
            .await
            .with_context(|| {
                format!(
                    "local-cluster.sh {what} took over {SCRIPT_TIMEOUT:?}\n{}",
                    self.log_tails()
                )
            })?
            .with_context(|| format!("cannot run local-cluster.sh {what}"))?;
        if !output.status.success() {
            bail!(
                "local-cluster.sh {what} failed ({}):\n{}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr),
                self.log_tails()
            );
        }
        Ok(output)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("cluster-test: {error:#}");
        }
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}
