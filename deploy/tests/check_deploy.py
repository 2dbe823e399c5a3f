#!/usr/bin/env python3
"""Policy and cross-file checks of deploy/ that schemas cannot express.

Run by deploy/validate.sh after hadolint, `docker compose config` and
kubernetes-validate. Usage:

    check_deploy.py DEPLOY_DIR (--server-help TEXT | --server-source CONFIG_RS)

The CHANNELS_* names used anywhere must be flags of channels-server: taken
from its --help output (preferred) or from server/src/config.rs.
Prints one line per check and a closing "N passed, N failed" line; exits 1 on
any failure.
"""

import argparse
import re
import sys
from pathlib import Path

import tomllib

import yaml

# The server's drain timeout (server/src/config.rs DEFAULT_DRAIN_TIMEOUT).
DRAIN_SECONDS = 10
# The server's default idle timeout; nginx must not cut idle sockets sooner.
IDLE_SECONDS = 60

results = []


def check(name, ok, detail=""):
    results.append((name, bool(ok), detail))


def seconds(value):
    """'30s', '1m30s', '3600s' or a number -> seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    if re.fullmatch(r"\d+(\.\d+)?", str(value).strip()):
        return float(value)
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", str(value)):
        total += float(amount) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def flag_env_names(args):
    text = args.server_help if args.server_help else Path(args.server_source).read_text()
    return set(re.findall(r"CHANNELS_[A-Z_]+", text))


def check_dockerfile(deploy, env_names):
    text = (deploy / "Dockerfile").read_text()
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]
    froms = [l for l in lines if l.upper().startswith("FROM ")]
    check("Dockerfile: multi-stage build", len(froms) >= 3, f"{len(froms)} FROM lines")
    cook = text.find("cargo chef cook")
    copy_all = text.find("COPY . .", text.find("AS builder"))
    check(
        "Dockerfile: dependencies cooked in their own layer before the sources are copied",
        "AS builder" in text and 0 <= cook < copy_all,
    )
    final = text[text.rfind("\nFROM ") :]
    users = re.findall(r"^USER\s+(\S+)", final, re.M)
    check(
        "Dockerfile: runtime stage runs as a non-root user",
        users and users[-1].split(":")[0] not in ("root", "0"),
        f"USER {users}",
    )
    check("Dockerfile: runtime is debian-slim or distroless", re.search(r"^FROM\s+\S*(slim|distroless)", final, re.M))
    check(
        "Dockerfile: HEALTHCHECK probes /healthz",
        re.search(r"^HEALTHCHECK\b.*(\n\s.*)*?/healthz", final, re.M),
    )
    check("Dockerfile: STOPSIGNAL SIGTERM", re.search(r"^STOPSIGNAL\s+SIGTERM\s*$", final, re.M))
    check("Dockerfile: ENTRYPOINT is channels-server", re.search(r"^ENTRYPOINT\s+\[\"[^\"]*channels-server\"", final, re.M))
    used = set(re.findall(r"CHANNELS_[A-Z_]+", text))
    check("Dockerfile: every CHANNELS_* variable is a server flag", used <= env_names, f"unknown: {sorted(used - env_names)}")
    bind = re.search(r"CHANNELS_BIND=\S*:(\d+)", text)
    expose = re.search(r"^EXPOSE\s+(\d+)", final, re.M)
    health_port = re.search(r"127\.0\.0\.1:(\d+)/healthz", final)
    check(
        "Dockerfile: bind port, EXPOSE and HEALTHCHECK port agree",
        bind and expose and health_port and bind.group(1) == expose.group(1) == health_port.group(1),
    )


REDIS_BACKENDS = {
    "channels_redis.core.RedisChannelLayer",
    "channels_redis.pubsub.RedisPubSubChannelLayer",
}


def load_config(deploy):
    """deploy/channels.toml, or {} (with a failed check) when it is missing or invalid."""
    try:
        return tomllib.loads((deploy / "channels.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        check("channels.toml: exists and is TOML", False, str(error))
        return {}


def check_compose(deploy, env_names):
    compose = yaml.safe_load((deploy / "docker-compose.yml").read_text())
    services = compose.get("services", {})
    servers = {name: s for name, s in services.items() if name.startswith("server")}
    check("compose: 3 server replicas", len(servers) == 3, f"{sorted(servers)}")
    redis = services.get("redis", {})
    check("compose: a redis service with a healthcheck", redis.get("healthcheck"))
    config = load_config(deploy)
    check(
        "channels.toml: a Redis layer (the replicas share groups through it)",
        config.get("layer", {}).get("backend") in REDIS_BACKENDS,
        f"backend {config.get('layer', {}).get('backend')!r}",
    )
    hosts = config.get("layer", {}).get("config", {}).get("hosts", [])
    for name, service in servers.items():
        env = service.get("environment", {})
        mounts = [str(v) for v in service.get("volumes", [])]
        target = env.get("CHANNELS_CONFIG")
        check(
            f"compose: {name} reads deploy/channels.toml (mounted where CHANNELS_CONFIG points)",
            target and any(m.startswith("./channels.toml:") and m.split(":")[1] == target for m in mounts),
            f"CHANNELS_CONFIG {target!r}, volumes {mounts}",
        )
        url = env.get("CHANNELS_REDIS_URL") or (hosts[0] if hosts else "")
        check(f"compose: {name} points at the redis service", str(url).startswith("redis://redis:"), f"{url!r}")
        check(
            f"compose: {name} does not override the layer of the config file",
            "CHANNELS_LAYER" not in env,
        )
        unknown = {k for k in env if k.startswith("CHANNELS_")} - env_names
        check(f"compose: {name} sets only known CHANNELS_* variables", not unknown, f"unknown: {sorted(unknown)}")
        check(f"compose: {name} has a healthcheck", "/readyz" in str(service.get("healthcheck", {}).get("test")))
        check(
            f"compose: {name} waits for healthy redis",
            service.get("depends_on", {}).get("redis", {}).get("condition") == "service_healthy",
        )
        check(
            f"compose: {name} stops with SIGTERM and time to drain",
            service.get("stop_signal", "SIGTERM") == "SIGTERM"
            and seconds(service.get("stop_grace_period", "10s")) > DRAIN_SECONDS,
        )
    nginx = services.get("nginx", {})
    mounts = " ".join(str(v) for v in nginx.get("volumes", []))
    check("compose: nginx mounts deploy/nginx.conf and the shared proxy settings", "nginx.conf" in mounts and "channels-proxy.conf" in mounts)
    check("compose: nginx has a healthcheck", nginx.get("healthcheck"))
    check(
        "compose: nginx waits for every replica to be healthy",
        all(nginx.get("depends_on", {}).get(s, {}).get("condition") == "service_healthy" for s in servers),
    )
    return servers


def check_nginx(deploy, compose_servers):
    conf = (deploy / "nginx.conf").read_text()
    proxy = (deploy / "nginx" / "channels-proxy.conf").read_text()
    upstreams = set(re.findall(r"^\s*server\s+([\w.-]+):8000\b", conf, re.M))
    check("nginx.conf: the upstream lists exactly the compose replicas", upstreams == set(compose_servers), f"{sorted(upstreams)}")
    check("nginx.conf: no sticky sessions (plain round robin)", not re.search(r"^\s*(ip_hash|hash|sticky|least_conn)\b", conf, re.M))
    check("nginx.conf: maps $http_upgrade to $connection_upgrade", re.search(r"map\s+\$http_upgrade\s+\$connection_upgrade", conf))
    check("nginx.conf: includes the shared proxy settings", "include /etc/nginx/channels-proxy.conf;" in conf)
    check("proxy: HTTP/1.1 to the upstream", re.search(r"^proxy_http_version\s+1\.1;", proxy, re.M))
    check("proxy: forwards Upgrade", re.search(r"^proxy_set_header\s+Upgrade\s+\$http_upgrade;", proxy, re.M))
    check("proxy: forwards Connection: upgrade", re.search(r"^proxy_set_header\s+Connection\s+\$connection_upgrade;", proxy, re.M))
    timeout = re.search(r"^proxy_read_timeout\s+(\S+);", proxy, re.M)
    check(
        "proxy: read timeout longer than the server's idle timeout",
        timeout and seconds(timeout.group(1)) > IDLE_SECONDS,
    )
    check("proxy: no response buffering (frames stream through)", re.search(r"^proxy_buffering\s+off;", proxy, re.M))


def load_k8s(deploy):
    objects = []
    for path in sorted((deploy / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                objects.append(doc)
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def check_k8s(deploy, env_names):
    objects = load_k8s(deploy)
    deployment = objects.get(("Deployment", "channels-server"))
    check("k8s: a Deployment channels-server", deployment)
    if not deployment:
        return
    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    container = spec["containers"][0]
    check(
        "k8s: Deployment selector matches its pod labels",
        deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items(),
    )
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    ready = container.get("readinessProbe", {}).get("httpGet", {})
    live = container.get("livenessProbe", {}).get("httpGet", {})
    check("k8s: readiness probe on /readyz", ready.get("path") == "/readyz" and ready.get("port") in ports)
    check("k8s: liveness probe on /healthz", live.get("path") == "/healthz" and live.get("port") in ports)
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    command = pre_stop.get("exec", {}).get("command", [])
    pre_stop_seconds = pre_stop.get("sleep", {}).get("seconds")
    if pre_stop_seconds is None and len(command) == 2 and command[0] == "sleep":
        pre_stop_seconds = float(command[1])
    check("k8s: preStop waits for endpoint removal", pre_stop_seconds and pre_stop_seconds > 0, f"{pre_stop}")
    grace = spec.get("terminationGracePeriodSeconds", 30)
    check(
        "k8s: terminationGracePeriodSeconds covers preStop + drain",
        grace >= (pre_stop_seconds or 0) + DRAIN_SECONDS + 5,
        f"{grace}s for {pre_stop_seconds}s + {DRAIN_SECONDS}s",
    )
    security = {**spec.get("securityContext", {}), **container.get("securityContext", {})}
    check("k8s: runs as non-root", security.get("runAsNonRoot") is True and security.get("runAsUser", 0) != 0)
    check("k8s: CPU request set (the HPA scales on utilization)", container.get("resources", {}).get("requests", {}).get("cpu"))

    config_refs = [e["configMapRef"]["name"] for e in container.get("envFrom", []) if "configMapRef" in e]
    config = objects.get(("ConfigMap", config_refs[0])) if config_refs else None
    check("k8s: the ConfigMap the Deployment reads exists", config)
    data = config.get("data", {}) if config else {}
    names = set(data) | {e["name"] for e in container.get("env", [])}
    check("k8s: only known CHANNELS_* variables", names <= env_names, f"unknown: {sorted(names - env_names)}")
    check("k8s: the environment does not override the layer of the config file", "CHANNELS_LAYER" not in data)

    # The config file: a ConfigMap volume holding deploy/channels.toml verbatim,
    # mounted where CHANNELS_CONFIG points.
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    file_path = data.get("CHANNELS_CONFIG", "")
    mounted = None
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount.get("name"), {})
        config_map = volume.get("configMap", {}).get("name")
        for item in volume.get("configMap", {}).get("items", []):
            if f"{mount.get('mountPath', '').rstrip('/')}/{item.get('path')}" == file_path:
                mounted = (config_map, item.get("key"))
    check("k8s: CHANNELS_CONFIG names a file mounted from a ConfigMap", mounted, f"CHANNELS_CONFIG {file_path!r}")
    embedded = None
    if mounted:
        embedded = objects.get(("ConfigMap", mounted[0]), {}).get("data", {}).get(mounted[1])
    try:
        original = (deploy / "channels.toml").read_text()
    except OSError:
        original = None
    check("k8s: the mounted config file is deploy/channels.toml, verbatim", embedded is not None and embedded == original)
    file_config = tomllib.loads(embedded) if embedded else {}
    check(
        "k8s: the config file selects a Redis layer",
        file_config.get("layer", {}).get("backend") in REDIS_BACKENDS,
    )
    bind = data.get("CHANNELS_BIND") or file_config.get("server", {}).get("bind", "")
    bind_port = re.search(r":(\d+)$", bind)
    check(
        "k8s: the container port is the port the server binds",
        bind_port and int(bind_port.group(1)) in ports.values(),
        f"bind {bind} ports {ports}",
    )

    service = objects.get(("Service", "channels-server"))
    check("k8s: a Service channels-server", service)
    if service:
        check("k8s: Service selects the Deployment's pods", service["spec"]["selector"].items() <= pod_labels.items())
        check(
            "k8s: Service targets a named container port",
            all(p.get("targetPort") in ports or p.get("targetPort") in ports.values() for p in service["spec"]["ports"]),
        )
        check("k8s: no session affinity (any replica serves any client)", service["spec"].get("sessionAffinity", "None") == "None")

    ingress = objects.get(("Ingress", "channels-server"))
    if ingress and service:
        backends = [
            p["backend"]["service"]
            for rule in ingress["spec"].get("rules", [])
            for p in rule.get("http", {}).get("paths", [])
        ]
        service_ports = {p.get("name") for p in service["spec"]["ports"]} | {p["port"] for p in service["spec"]["ports"]}
        check(
            "k8s: Ingress routes to the Service's port",
            backends
            and all(
                b["name"] == "channels-server" and (b["port"].get("name") or b["port"].get("number")) in service_ports
                for b in backends
            ),
        )
        timeout = ingress["metadata"].get("annotations", {}).get("nginx.ingress.kubernetes.io/proxy-read-timeout", "60")
        check("k8s: Ingress read timeout longer than the server's idle timeout", seconds(timeout) > IDLE_SECONDS)

    hpa = next((o for (k, _), o in objects.items() if k == "HorizontalPodAutoscaler"), None)
    check("k8s: a HorizontalPodAutoscaler (autoscaling/v2)", hpa and hpa["apiVersion"] == "autoscaling/v2")
    if hpa:
        target = hpa["spec"]["scaleTargetRef"]
        check("k8s: HPA scales the Deployment", target["kind"] == "Deployment" and target["name"] == deployment["metadata"]["name"])
        check("k8s: HPA keeps at least 2 replicas", hpa["spec"].get("minReplicas", 1) >= 2)

    pdb = next((o for (k, _), o in objects.items() if k == "PodDisruptionBudget"), None)
    check("k8s: a PodDisruptionBudget", pdb)
    if pdb:
        check("k8s: PDB selects the Deployment's pods", pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items())

    redis_url = data.get("CHANNELS_REDIS_URL", "")
    host = re.match(r"redis://(?:[^@]*@)?([^:/,]+)", redis_url)
    statefulset = objects.get(("StatefulSet", "redis"))
    check("k8s: a Redis StatefulSet for the demo", statefulset)
    if statefulset and host:
        service_name = statefulset["spec"]["serviceName"]
        headless = objects.get(("Service", service_name))
        check("k8s: Redis has its headless Service", headless and headless["spec"].get("clusterIP") == "None")
        check(
            "k8s: CHANNELS_REDIS_URL names the StatefulSet's pod",
            host.group(1).split(".")[:2] == [f"{statefulset['metadata']['name']}-0", service_name],
            redis_url,
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("deploy_dir", type=Path)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--server-help")
    source.add_argument("--server-source")
    args = parser.parse_args()
    env_names = flag_env_names(args)
    if "CHANNELS_LAYER" not in env_names:
        print("check_deploy: no CHANNELS_* names found in the server's help/source", file=sys.stderr)
        return 1
    check_dockerfile(args.deploy_dir, env_names)
    servers = check_compose(args.deploy_dir, env_names)
    check_nginx(args.deploy_dir, servers)
    check_k8s(args.deploy_dir, env_names)
    failed = 0
    for name, ok, detail in results:
        print(f"{'ok  ' if ok else 'FAIL'} {name}" + ("" if ok or not detail else f" ({detail})"))
        failed += not ok
    print(f"check_deploy: {len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
