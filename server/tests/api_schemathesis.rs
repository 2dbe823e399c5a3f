//! The HTTP API against its own OpenAPI document: schemathesis (from PyPI,
//! pinned in `interop/requirements-api.txt`) loads `GET /api/openapi.json`
//! from a real `channels-server` process (memory layer, a publish token) and
//! runs every check it has (`--checks all`: server errors, status codes,
//! content types, response schemas, valid data accepted, invalid data
//! refused, auth enforced, unsupported methods) with a bounded number of
//! generated requests per endpoint. It must find nothing.
//!
//! The interpreter is `$CHANNELS_INTEROP_PYTHON` (set by `scripts/test.sh`)
//! or `target/interop-venv/bin/python` (made by `scripts/install-deps.sh`);
//! the binary is `$CHANNELS_SERVER_BIN` or the one cargo built. For a deeper
//! run set `CHANNELS_SCHEMATHESIS_EXAMPLES` (per endpoint, default 40) and
//! `CHANNELS_SCHEMATHESIS_SEED` (default a fixed one, so a run is repeatable).

// Helpers outside #[test] fns unwrap too: a panic is how a test reports failure.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use test_support::ServerProcess;

const TOKEN: &str = "schemathesis-token";

/// Generated requests per endpoint and phase: about 10 s of requests here.
const DEFAULT_EXAMPLES: &str = "40";

/// A fixed seed, so a failure shows up again on the next run.
const DEFAULT_SEED: &str = "20261130";

/// The whole run, Python's start included, ends within this.
const RUN_TIMEOUT: Duration = Duration::from_secs(240);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn python() -> PathBuf {
    let path = std::env::var_os("CHANNELS_INTEROP_PYTHON").map_or_else(
        || workspace_root().join("target/interop-venv/bin/python"),
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "the Python interop venv is missing ({}): run `bash scripts/install-deps.sh`",
        path.display()
    );
    path
}

fn server_bin() -> PathBuf {
    std::env::var_os("CHANNELS_SERVER_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_channels-server")),
        PathBuf::from,
    )
}

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::test]
async fn schemathesis_finds_no_failures_with_every_check() {
    let server = ServerProcess::start(
        server_bin(),
        &[
            "--bind",
            "127.0.0.1:0",
            "--layer",
            "memory",
            "--publish-token",
            TOKEN,
            // The presence endpoints answer from the store, not 501, and
            // every group keeps a history (a 404 right after a publish is a
            // schemathesis failure: ST302).
            "--presence",
            "--history-size",
            "10",
            // Channels nobody reads keep what schemathesis sends them; a
            // full one answers 503, which is right, but not what this
            // test is about.
            "--channel-capacity",
            "1000000",
        ],
        &[],
    );
    let workdir = std::env::temp_dir().join(format!(
        "channels-schemathesis-{}",
        test_support::redis::unique_prefix()
    ));
    std::fs::create_dir_all(&workdir).unwrap();
    let url = format!("http://{}/api/openapi.json", server.addr());
    let auth = format!("Authorization: Bearer {TOKEN}");
    let examples = setting("CHANNELS_SCHEMATHESIS_EXAMPLES", DEFAULT_EXAMPLES);
    let seed = setting("CHANNELS_SCHEMATHESIS_SEED", DEFAULT_SEED);
    let run = tokio::process::Command::new(python())
        .args(["-m", "schemathesis.cli", "run", &url])
        .args(["--checks", "all"])
        .args(["--header", &auth])
        .args(["--max-examples", &examples])
        .args(["--seed", &seed])
        .args(["--request-timeout", "10"])
        .arg("--no-color")
        // Its example database and reports stay out of the work tree.
        .current_dir(&workdir)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(RUN_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("schemathesis did not finish within {RUN_TIMEOUT:?}"))
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", python().display()));
    let _ = std::fs::remove_dir_all(&workdir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report = format!(
        "schemathesis exited with {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- server\n{}",
        output.status,
        server.output()
    );
    assert!(output.status.success(), "{report}");
    assert!(stdout.contains("No issues found"), "{report}");
    // Every operation but the document itself (which schemathesis leaves
    // out) is selected: "Operations: 11 selected / 11 total".
    let operations: Vec<u32> = stdout
        .lines()
        .find(|line| line.trim_start().starts_with("Operations:"))
        .map(|line| {
            line.split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(operations, [11, 11], "every endpoint is tested: {report}");
    // Print the summary for the log (cargo shows it with --nocapture).
    if let Some(summary) = stdout.find("Test cases:") {
        println!("{}", &stdout[summary..]);
    }
}
