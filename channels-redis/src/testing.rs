//! Test helpers (feature `testing`): a real `redis-server` on a free port
//! (plain, TLS with a certificate made on the spot, or a replica), a Redis
//! Sentinel, and unique key prefixes so many tests can share one server.
//!
//! ```no_run
//! use channels_redis::testing::{RedisServer, TestCertificates};
//!
//! let server = channels_redis::testing::RedisServer::start()?;
//! let url = server.url(); // redis://127.0.0.1:<port>
//!
//! let certificates = TestCertificates::generate()?;
//! let tls = RedisServer::start_tls(&certificates)?;
//! let url = tls.tls_url(); // rediss://127.0.0.1:<tls port>; trust certificates.ca_file()
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io::{self, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long `start`/`restart` wait for the server to answer PING.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` child process (from `PATH`, or `$REDIS_SERVER`) on
/// 127.0.0.1, without persistence. Dropping it kills the server; a small shell
/// watchdog also kills it when the test process exits without dropping it
/// (a server kept in a `static`).
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    /// The TLS port, for a server made by [`RedisServer::start_tls`].
    tls_port: Option<u16>,
    child: Option<Child>,
    redis_pid: Option<String>,
    extra_args: Vec<String>,
    /// Sentinel mode: the config file to run with `--sentinel`.
    sentinel_config: Option<PathBuf>,
    /// Password PING must authenticate with.
    password: Option<String>,
}

/// Runs redis-server in the background, prints its pid, and kills it once
/// the test process (`$1`) is gone, then removes `$2` (a Sentinel's config
/// directory) if given.
const WATCHDOG: &str = r#"parent=$1; cleanup=$2; shift 2; "$@" & r=$!; echo $r; while kill -0 "$parent" 2>/dev/null && kill -0 "$r" 2>/dev/null; do sleep 1; done; kill -9 "$r" 2>/dev/null; if [ -n "$cleanup" ]; then rm -rf "$cleanup"; fi"#;

/// A direct connection to the Redis at `url`, no layer in between: for a test
/// that looks at or changes keys itself.
///
/// # Errors
/// When `url` is not a Redis URL or nothing answers there.
pub async fn connect(url: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await
}

/// The connections to the Redis at `url` that have client tracking on
/// (`CLIENT LIST` flag `t`), one `CLIENT LIST` line each (`user=…`,
/// `laddr=…` tell them apart): those of layers caching group members.
///
/// # Errors
/// When nothing answers at `url`.
pub async fn tracking_clients(url: &str) -> redis::RedisResult<Vec<String>> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut connect(url).await?)
        .await?;
    Ok(list
        .lines()
        .filter(|line| {
            line.split(' ').any(|field| {
                field
                    .strip_prefix("flags=")
                    .is_some_and(|flags| flags.contains('t'))
            })
        })
        .map(str::to_owned)
        .collect())
}

/// How many connections to the Redis at `url` wait in a blocking command
/// (`INFO clients`' `blocked_clients`), e.g. a receive loop in its BZPOPMIN.
///
/// # Errors
/// When nothing answers at `url`, or the reply lacks the field.
pub async fn blocked_clients(url: &str) -> redis::RedisResult<u64> {
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query_async(&mut connect(url).await?)
        .await?;
    info.lines()
        .find_map(|line| line.strip_prefix("blocked_clients:"))
        .and_then(|count| count.trim().parse().ok())
        .ok_or_else(|| {
            let missing = (
                redis::ErrorKind::UnexpectedReturnType,
                "INFO clients has no blocked_clients count",
            );
            missing.into()
        })
}

/// Returns a key prefix no other test in this process uses (`t<pid>_<n>_`).
pub fn unique_prefix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "t{}_{}_",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A free TCP port on 127.0.0.1 (bound and released; fine for tests).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn server_binary() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    ///
    /// # Errors
    /// When `redis-server` cannot be run or does not answer within 10 s.
    pub fn start() -> io::Result<Self> {
        Self::start_with_args(&[])
    }

    /// Like [`RedisServer::start`], passing extra `redis-server` arguments.
    ///
    /// # Errors
    /// As [`RedisServer::start`].
    pub fn start_with_args(extra_args: &[&str]) -> io::Result<Self> {
        let mut last_error = None;
        for _ in 0..3 {
            let mut server = Self {
                port: free_port()?,
                tls_port: None,
                child: None,
                redis_pid: None,
                extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
                sentinel_config: None,
                password: None,
            };
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }

    /// Starts a server that also takes TLS connections on a second free port
    /// ([`RedisServer::tls_url`]), with the server certificate and key of
    /// `certificates` and no client certificates required. The plain port
    /// stays open for readiness checks and for inspecting keys.
    ///
    /// # Errors
    /// As [`RedisServer::start`] (also when this `redis-server` was built
    /// without TLS).
    pub fn start_tls(certificates: &TestCertificates) -> io::Result<Self> {
        let mut last_error = None;
        for _ in 0..3 {
            let tls_port = free_port()?;
            let args = [
                "--tls-port".to_owned(),
                tls_port.to_string(),
                "--tls-cert-file".to_owned(),
                path_text(&certificates.cert_file),
                "--tls-key-file".to_owned(),
                path_text(&certificates.key_file),
                "--tls-ca-cert-file".to_owned(),
                path_text(&certificates.ca_file),
                "--tls-auth-clients".to_owned(),
                "no".to_owned(),
            ];
            let mut server = Self {
                port: free_port()?,
                tls_port: Some(tls_port),
                child: None,
                redis_pid: None,
                extra_args: args.to_vec(),
                sentinel_config: None,
                password: None,
            };
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }

    /// Starts a replica of `master` (`--replicaof 127.0.0.1 <port>`) on a
    /// free port; it answers PING before it has synced.
    ///
    /// # Errors
    /// As [`RedisServer::start`].
    pub fn start_replica(master: &RedisServer) -> io::Result<Self> {
        Self::start_with_args(&["--replicaof", "127.0.0.1", &master.port().to_string()])
    }

    fn launch(&mut self) -> io::Result<()> {
        let port = self.port.to_string();
        let parent = std::process::id().to_string();
        let mut command = Command::new("sh");
        let cleanup = self
            .sentinel_config
            .as_ref()
            .and_then(|config| config.parent())
            .map(|dir| dir.to_string_lossy().into_owned())
            .unwrap_or_default();
        command.args(["-c", WATCHDOG, "sh", &parent, &cleanup, &server_binary()]);
        match &self.sentinel_config {
            Some(config) => {
                command
                    .arg(config)
                    .arg("--sentinel")
                    .args(["--port", &port]);
            }
            None => {
                command.args([
                    "--port",
                    &port,
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    // Replication in memory too: a replica (or a demoted
                    // master) would otherwise write dump.rdb to the cwd.
                    "--repl-diskless-sync",
                    "yes",
                    "--repl-diskless-load",
                    "swapdb",
                ]);
            }
        }
        let mut child = command
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run redis-server: {e}")))?;
        let mut pid = String::new();
        if let Some(stdout) = child.stdout.as_mut() {
            let mut byte = [0u8; 1];
            while stdout.read(&mut byte)? == 1 && byte[0] != b'\n' {
                pid.push(char::from(byte[0]));
            }
        }
        self.redis_pid = Some(pid.trim().to_owned()).filter(|p| !p.is_empty());
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                return Err(io::Error::other(format!("redis-server exited: {status}")));
            }
            if ping(self.port, self.password.as_deref()).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "redis-server did not answer PING",
        ))
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `rediss://127.0.0.1:<tls port>` of a server made by
    /// [`RedisServer::start_tls`].
    ///
    /// # Panics
    /// On a server started without TLS.
    pub fn tls_url(&self) -> String {
        let port = self
            .tls_port
            .expect("tls_url needs a server made by RedisServer::start_tls");
        format!("rediss://127.0.0.1:{port}")
    }

    /// The TLS port of a server made by [`RedisServer::start_tls`].
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(pid) = self.redis_pid.take() {
            let _ = Command::new("kill")
                .args(["-9", &pid])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty: no persistence).
    ///
    /// # Errors
    /// As [`RedisServer::start`].
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            match self.launch() {
                Ok(()) => return Ok(()),
                // The port may linger briefly after the kill.
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends (AUTH and) PING over a raw socket and expects `+PONG`.
fn ping(port: u16, password: Option<&str>) -> io::Result<()> {
    let mut stream = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut expected: Vec<u8> = Vec::new();
    if let Some(password) = password {
        write!(
            stream,
            "*2\r\n$4\r\nAUTH\r\n${}\r\n{password}\r\n",
            password.len()
        )?;
        expected.extend_from_slice(b"+OK\r\n");
    }
    stream.write_all(b"PING\r\n")?;
    expected.extend_from_slice(b"+PONG\r\n");
    let mut reply = vec![0u8; expected.len()];
    stream.read_exact(&mut reply)?;
    if reply == expected {
        Ok(())
    } else {
        Err(io::Error::other("unexpected PING reply"))
    }
}

/// A Redis Sentinel (`redis-server <conf> --sentinel`) monitoring one master,
/// for Sentinel tests. Dropping it kills it and removes its config directory.
#[derive(Debug)]
pub struct RedisSentinel {
    server: RedisServer,
    dir: PathBuf,
}

impl RedisSentinel {
    /// Starts a Sentinel on a free port monitoring `master` as `master_name`
    /// (quorum 1), requiring `password` from clients when given.
    ///
    /// # Errors
    /// When the Sentinel cannot be started or does not answer within 10 s.
    pub fn start(
        master: &RedisServer,
        master_name: &str,
        password: Option<&str>,
    ) -> io::Result<Self> {
        Self::start_with_config(master, master_name, password, &[])
    }

    /// Like [`RedisSentinel::start`], adding `lines` to the Sentinel's
    /// config file, e.g. `sentinel down-after-milliseconds <name> 500` and
    /// `sentinel failover-timeout <name> 2000` for a quick failover.
    ///
    /// # Errors
    /// As [`RedisSentinel::start`].
    pub fn start_with_config(
        master: &RedisServer,
        master_name: &str,
        password: Option<&str>,
        lines: &[&str],
    ) -> io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("channels-redis-sentinel-{}", unique_prefix()));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("sentinel.conf");
        let mut text = format!(
            "bind 127.0.0.1\nsentinel monitor {master_name} 127.0.0.1 {} 1\n",
            master.port()
        );
        if let Some(password) = password {
            text.push_str(&format!("requirepass \"{password}\"\n"));
        }
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(&config, text)?;
        let mut last_error = None;
        for _ in 0..3 {
            let mut server = RedisServer {
                port: free_port()?,
                tls_port: None,
                child: None,
                redis_pid: None,
                extra_args: Vec::new(),
                sentinel_config: Some(config.clone()),
                password: password.map(str::to_owned),
            };
            match server.launch() {
                Ok(()) => return Ok(Self { server, dir }),
                Err(e) => last_error = Some(e),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last_error.unwrap_or_else(|| io::Error::other("redis sentinel did not start")))
    }

    /// The Sentinel's port.
    pub fn port(&self) -> u16 {
        self.server.port()
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        self.server.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// A certificate authority and a server certificate it signed, for
/// `localhost` and `127.0.0.1`, made on the spot and written as PEM files to a
/// temporary directory that dropping this removes. Each call makes a new CA,
/// so the CA of one does not trust the server certificate of another.
#[derive(Debug)]
pub struct TestCertificates {
    dir: PathBuf,
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl TestCertificates {
    /// Makes a CA and a server certificate and writes `ca.pem`, `server.pem`
    /// and `server.key`.
    ///
    /// # Errors
    /// When a key cannot be made or a file cannot be written.
    pub fn generate() -> io::Result<Self> {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let failed = |e: rcgen::Error| io::Error::other(format!("making a test certificate: {e}"));
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(
            DnType::CommonName,
            format!("channels-redis test CA {}", unique_prefix()),
        );
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(failed)?)
            .map_err(failed)?;
        let server_key = KeyPair::generate().map_err(failed)?;
        let mut server_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .map_err(failed)?;
        server_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let server = server_params.signed_by(&server_key, &ca).map_err(failed)?;

        let dir = std::env::temp_dir().join(format!("channels-redis-tls-{}", unique_prefix()));
        std::fs::create_dir_all(&dir)?;
        let certificates = Self {
            ca_file: dir.join("ca.pem"),
            cert_file: dir.join("server.pem"),
            key_file: dir.join("server.key"),
            dir,
        };
        std::fs::write(&certificates.ca_file, ca.pem())?;
        std::fs::write(&certificates.cert_file, server.pem())?;
        std::fs::write(&certificates.key_file, server_key.serialize_pem())?;
        Ok(certificates)
    }

    /// The CA certificate (PEM): what a client trusts.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The server certificate (PEM).
    pub fn cert_file(&self) -> &Path {
        &self.cert_file
    }

    /// The server's private key (PEM).
    pub fn key_file(&self) -> &Path {
        &self.key_file
    }
}

impl Drop for TestCertificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
