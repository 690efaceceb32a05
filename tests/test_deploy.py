"""The Dockerfile and the Kubernetes manifests agree with each other and with the gateway: ports, probes,
scrape settings, the autoscaler's target, the shared-state address, the user; and the image's entrypoint
command, run here outside a container (loopback instead of 0.0.0.0), serves and passes its own HEALTHCHECK
and the Deployment's readiness probe, sharing state through a real Redis."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bauxite.settings import settings_from_mapping
from servers import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def dockerfile() -> dict[str, list[str]]:
    """Instructions of the final stage (after the last FROM), continuation lines joined; FROM of all."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    out: dict[str, list[str]] = {"FROM_ALL": []}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word == "FROM":
            out = {"FROM_ALL": [*out["FROM_ALL"], rest]}
        out.setdefault(word, []).append(rest)
    return out


def exec_form(value: str) -> list[str]:
    parsed = json.loads(value)
    assert isinstance(parsed, list) and all(isinstance(x, str) for x in parsed)
    return parsed


def manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def find(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}"
    return found[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def named_port(spec: dict[str, Any], name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    assert name in ports, f"no container port named {name!r}"
    return int(ports[name])


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_dockerfile_builds_a_wheel_and_runs_it_as_a_non_root_user() -> None:
    d = dockerfile()
    assert d["FROM_ALL"] and all("-slim" in base for base in d["FROM_ALL"])
    assert any("pip wheel" in run for run in dockerfile_all_runs())
    assert any("pip install" in run and ".whl" in run for run in d["RUN"])
    user = d["USER"][-1].split(":")[0]
    assert user.isdigit() and int(user) != 0
    assert d["EXPOSE"] == ["8080"]
    command = exec_form(d["ENTRYPOINT"][0]) + exec_form(d["CMD"][0])
    assert command[:2] == ["bauxite", "serve"] and flag(command, "--port") == "8080"
    health = d["HEALTHCHECK"][0]
    assert "http://127.0.0.1:8080/healthz" in health and "CMD" in health


def dockerfile_all_runs() -> list[str]:
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    return [line.strip()[4:] for line in text.splitlines() if line.strip().startswith("RUN ")]


def test_manifests_agree_on_ports_probes_scraping_and_scaling() -> None:
    deployment = find("Deployment", "bauxite")
    spec = container(deployment)
    port = named_port(spec, "http")
    assert str(port) == dockerfile()["EXPOSE"][0] == flag(spec["args"], "--port")
    assert spec["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert spec["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    notes = pod["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true" and notes["prometheus.io/path"] == "/metrics"
    assert int(notes["prometheus.io/port"]) == port
    user = int(dockerfile()["USER"][-1].split(":")[0])
    security = pod["spec"]["securityContext"]
    assert security["runAsUser"] == user and security["runAsNonRoot"] is True
    # One worker per CPU of the limit; the HPA needs a CPU request to compute utilisation.
    assert flag(spec["args"], "--workers") == spec["resources"]["limits"]["cpu"]
    assert spec["resources"]["requests"]["cpu"]
    mount = spec["volumeMounts"][0]["mountPath"]
    assert flag(spec["args"], "--config").startswith(mount + "/")

    service = find("Service", "bauxite")
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]

    hpa = find("HorizontalPodAutoscaler", "bauxite")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "bauxite"}
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] >= 2  # availability: never one replica

    monitor = find("PodMonitor", "bauxite")
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "http"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()

    listed = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"]
    assert all((DEPLOY / name).exists() for name in listed)
    assert "podmonitor.yaml" not in listed  # needs the Prometheus Operator's CRDs


def test_the_configmap_is_a_valid_config_pointing_at_the_redis_service() -> None:
    config = yaml.safe_load(find("ConfigMap", "bauxite-config")["data"]["enterprise.yaml"])
    settings = settings_from_mapping(config, "deploy/configmap.yaml")
    assert settings.state.url is not None
    match = re.fullmatch(r"redis://([a-z0-9-]+):(\d+)/\d+", settings.state.url)
    assert match is not None
    redis_service = find("Service", match.group(1))
    redis = find("Deployment", match.group(1))
    (service_port,) = redis_service["spec"]["ports"]
    assert service_port["port"] == int(match.group(2))
    assert named_port(container(redis), service_port["targetPort"]) == int(match.group(2))
    used_env = {e["name"] for e in container(find("Deployment", "bauxite"))["env"]}
    assert {k.key_env for k in settings.auth.keys if k.key_env} <= used_env


@pytest.fixture
def entrypoint(tmp_path: Path) -> Iterator[tuple[str, list[str], RedisServer]]:
    """The image's command with the ConfigMap's config (state pointed at a local Redis), on loopback."""
    redis = RedisServer(tmp_path)
    config = yaml.safe_load(find("ConfigMap", "bauxite-config")["data"]["enterprise.yaml"])
    config["state"]["url"] = redis.url
    path = tmp_path / "enterprise.yaml"
    path.write_text(yaml.safe_dump(config))
    d = dockerfile()
    command = exec_form(d["ENTRYPOINT"][0]) + exec_form(d["CMD"][0])
    port = str(free_port())
    command[command.index("--config") + 1] = str(path)
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = port
    command = [sys.executable, "-m", "bauxite.cli", *command[1:]]  # the `bauxite` console script
    proc = subprocess.Popen(
        command,
        env={**os.environ, "BAUXITE_KEY_RESEARCH": "sk-deploy-test"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        yield port, exec_form(d["HEALTHCHECK"][0].split("CMD", 1)[1].strip()), redis
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        redis.stop()


def test_the_image_command_serves_and_passes_its_health_and_readiness_checks(
    entrypoint: tuple[str, list[str], RedisServer],
) -> None:
    port, health, _ = entrypoint
    health = [h.replace("127.0.0.1:8080", f"127.0.0.1:{port}") for h in health]
    health[0] = sys.executable if health[0] == "python" else health[0]
    deadline = time.monotonic() + 60
    while subprocess.run(health, capture_output=True).returncode != 0:
        assert time.monotonic() < deadline, "HEALTHCHECK never passed"
        time.sleep(0.3)
    deadline = time.monotonic() + 20
    while True:  # the readiness probe of the Deployment; shared state connects in the background
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
            ready = json.load(resp)
            status = resp.status
        if ready["state"]["shared"] or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert status == 200 and ready["ready"] is True
    assert ready["state"]["kind"] == "redis" and ready["state"]["shared"] is True
