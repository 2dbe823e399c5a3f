//! The Docker, compose, nginx and Kubernetes files of `deploy/` pass
//! `deploy/validate.sh` (hadolint, shellcheck, `docker compose config`,
//! kubernetes-validate --strict, `nginx -t`, and the cross-file checks of
//! `deploy/tests/check_deploy.py`), and each of those checks fails on a copy
//! of the files with one typical mistake in it.
//!
//! The image is not built (no Docker engine here): these are static checks.
//! Needs python3 (venv) and PyPI access on the first run, and nginx.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use cluster_test::{channels_server_bin, repo_root};
use tokio::process::Command;
use tokio::time::timeout;

/// The first run creates the validators' venv from PyPI.
const VALIDATE_TIMEOUT: Duration = Duration::from_secs(300);

/// The files validate.sh reads, relative to `deploy/`.
const FILES: [&str; 12] = [
    "channels.toml",
    "Dockerfile",
    "docker-compose.yml",
    "nginx.conf",
    "nginx/channels-proxy.conf",
    "k8s/configmap.yaml",
    "k8s/deployment.yaml",
    "k8s/service.yaml",
    "k8s/hpa.yaml",
    "k8s/pdb.yaml",
    "k8s/redis.yaml",
    "k8s/ingress.yaml",
];

async fn validate(deploy_dir: &Path) -> anyhow::Result<Output> {
    let bin = channels_server_bin()?;
    let mut command = Command::new("bash");
    command
        .arg(repo_root().join("deploy/validate.sh"))
        .arg(deploy_dir)
        .env("CHANNELS_SERVER_BIN", bin)
        .kill_on_drop(true);
    timeout(VALIDATE_TIMEOUT, command.output())
        .await
        .context("deploy/validate.sh took too long")?
        .context("cannot run deploy/validate.sh")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A copy of the deploy files with `from` replaced by `to` in `file`.
fn mutant(name: &str, file: &str, from: &str, to: &str) -> anyhow::Result<PathBuf> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("deploy-mutants")
        .join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    for relative in FILES {
        let target = dir.join(relative);
        std::fs::create_dir_all(target.parent().context("file in a directory")?)?;
        std::fs::copy(repo_root().join("deploy").join(relative), &target)
            .with_context(|| format!("copy deploy/{relative}"))?;
    }
    let path = dir.join(file);
    let original = std::fs::read_to_string(&path)?;
    // The mutation must really change the file, or the test proves nothing.
    ensure!(
        original.contains(from),
        "deploy/{file} no longer contains {from:?}: update this test"
    );
    std::fs::write(&path, original.replacen(from, to, 1))?;
    Ok(dir)
}

#[tokio::test]
async fn deploy_files_pass_every_check_and_each_check_catches_its_mistake() -> anyhow::Result<()> {
    let output = validate(&repo_root().join("deploy")).await?;
    let all = text(&output);
    if !output.status.success() {
        bail!("deploy/validate.sh failed on deploy/:\n{all}");
    }
    for step in [
        "ok: hadolint Dockerfile",
        "ok: shellcheck scripts",
        "ok: docker compose config",
        "ok: kubernetes-validate --strict",
        "ok: nginx -t nginx.conf",
        "ok: channels-server --check-config",
        "ok: check_deploy.py",
    ] {
        ensure!(
            all.contains(step),
            "validate.sh did not report {step:?}:\n{all}"
        );
    }

    // (name, file, from, to, the check that must fail)
    let mistakes = [
        (
            "root-user",
            "Dockerfile",
            "USER 10001:10001\n",
            "",
            "runtime stage runs as a non-root user",
        ),
        (
            "apt-recommends",
            "Dockerfile",
            "apt-get install -y --no-install-recommends curl",
            "apt-get install -y curl",
            "hadolint Dockerfile",
        ),
        (
            "no-healthcheck",
            "Dockerfile",
            "HEALTHCHECK --interval",
            "# HEALTHCHECK --interval",
            "HEALTHCHECK probes /healthz",
        ),
        (
            "compose-typo",
            "docker-compose.yml",
            "stop_grace_period: 30s",
            "stop_grace_periods: 30s",
            "docker compose config",
        ),
        (
            "memory-layer",
            "channels.toml",
            "backend = \"channels_redis.core.RedisChannelLayer\"",
            "backend = \"memory\"",
            "channels.toml: a Redis layer",
        ),
        (
            "config-unknown-key",
            "channels.toml",
            "capacity = 100\n",
            "capacity = 100\ncapacities = 5\n",
            "channels-server --check-config",
        ),
        (
            "compose-config-elsewhere",
            "docker-compose.yml",
            "./channels.toml:/etc/channels-server/channels.toml:ro",
            "./channels.toml:/etc/channels.toml:ro",
            "reads deploy/channels.toml",
        ),
        (
            "k8s-config-drift",
            "k8s/configmap.yaml",
            "prefix = \"asgi\"",
            "prefix = \"other\"",
            "deploy/channels.toml, verbatim",
        ),
        (
            "k8s-schema",
            "k8s/deployment.yaml",
            "periodSeconds: 5",
            "periodSecs: 5",
            "kubernetes-validate",
        ),
        (
            "k8s-short-grace",
            "k8s/deployment.yaml",
            "terminationGracePeriodSeconds: 30",
            "terminationGracePeriodSeconds: 10",
            "covers preStop + drain",
        ),
        (
            "k8s-no-readiness",
            "k8s/deployment.yaml",
            "path: /readyz",
            "path: /healthz",
            "readiness probe on /readyz",
        ),
        (
            "k8s-unknown-env",
            "k8s/configmap.yaml",
            "CHANNELS_LOG_FORMAT",
            "CHANNELS_LOGFORMAT",
            "only known CHANNELS_* variables",
        ),
        (
            "k8s-pdb-selector",
            "k8s/pdb.yaml",
            "matchLabels:\n      app.kubernetes.io/name: channels-server",
            "matchLabels:\n      app.kubernetes.io/name: redis",
            "PDB selects",
        ),
        (
            "ingress-timeout",
            "k8s/ingress.yaml",
            "proxy-read-timeout: \"3600\"",
            "proxy-read-timeout: \"30\"",
            "Ingress read timeout",
        ),
        (
            "nginx-syntax",
            "nginx.conf",
            "worker_connections 16384;",
            "worker_connections 16384",
            "nginx -t",
        ),
        (
            "no-upgrade-header",
            "nginx/channels-proxy.conf",
            "proxy_set_header Upgrade $http_upgrade;\n",
            "",
            "forwards Upgrade",
        ),
        (
            "sticky",
            "nginx.conf",
            "upstream channels {\n",
            "upstream channels {\n        ip_hash;\n",
            "no sticky sessions",
        ),
    ];
    let mut runs = Vec::new();
    for (name, file, from, to, expected) in mistakes {
        let dir = mutant(name, file, from, to)?;
        runs.push(async move { (name, expected, validate(&dir).await) });
    }
    for (name, expected, output) in futures_util::future::join_all(runs).await {
        let output = output?;
        let all = text(&output);
        ensure!(
            !output.status.success(),
            "validate.sh passed with mistake {name:?}:\n{all}"
        );
        // A failed step reads "validate: FAILED: <step>", a failed check
        // "FAIL <check>"; passing checks of the same name do not count.
        let caught = all.lines().any(|line| {
            (line.starts_with("FAIL ") || line.contains("FAILED: ")) && line.contains(expected)
        });
        ensure!(
            caught,
            "mistake {name:?} failed validate.sh but not on {expected:?}:\n{all}"
        );
    }
    Ok(())
}
