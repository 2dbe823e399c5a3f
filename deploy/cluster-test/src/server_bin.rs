//! Where the `channels-server` binary under test comes from.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

use crate::cluster::repo_root;

/// A cold build of the server on a 2-core machine takes a few minutes.
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);

/// Returns the `channels-server` binary to run: `$CHANNELS_SERVER_BIN` when
/// set, else the workspace's own, built once per test process with
/// `cargo build -p channels-server --bin channels-server` into the target
/// directory this test runs from (a no-op when it is up to date).
///
/// # Errors
/// When the variable names no file, or the build fails or times out.
pub fn channels_server_bin() -> anyhow::Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| find_or_build().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn find_or_build() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("CHANNELS_SERVER_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("CHANNELS_SERVER_BIN={} is not a file", bin.display());
        }
        return Ok(bin);
    }
    // The test executable is <target>/<profile>/deps/<name>-<hash>.
    let exe = std::env::current_exe().context("cannot find the test executable")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable outside a cargo target directory")?;
    let target_dir = profile_dir
        .parent()
        .context("profile directory has no parent")?;
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("profile directory name is not UTF-8")?;
    let profile = if profile == "debug" { "dev" } else { profile };

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = std::process::Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "channels-server",
            "--bin",
            "channels-server",
        ])
        .args(["--profile", profile])
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(repo_root())
        .spawn()
        .context("cannot run cargo to build channels-server (or set CHANNELS_SERVER_BIN)")?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for cargo")? {
            break status;
        }
        if started.elapsed() > BUILD_TIMEOUT {
            // Best effort: the build is abandoned either way.
            let _ = child.kill();
            bail!("building channels-server took over {BUILD_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if !status.success() {
        bail!("`cargo build -p channels-server` failed ({status})");
    }
    let bin = profile_dir.join("channels-server");
    if !bin.is_file() {
        bail!(
            "cargo built channels-server but {} is missing",
            bin.display()
        );
    }
    Ok(bin)
}
