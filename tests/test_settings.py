"""Configuration: the README's minimal config loads as-is; errors name file, key path and expectation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bauxite.cli import main
from bauxite.durations import parse_duration_s
from bauxite.settings import ConfigError, load_settings, settings_from_mapping

MINIMAL = """\
enterprise:
  carbon_tracking:
    enabled: true
    provider: "google_cloud"     # or "aws", "electricity_maps"
    reporting_interval: "1h"
  green_routing:
    enabled: true
    priority: "low_carbon"       # or "balanced", "latency"
    threshold_gco2: 200
"""


def test_minimal_snippet_loads_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "enterprise.yaml"
    path.write_text(MINIMAL)
    settings = load_settings(path)
    assert settings.enterprise.carbon_tracking.provider == "google_cloud"
    assert settings.enterprise.carbon_tracking.reporting_interval == 3600.0
    assert settings.enterprise.green_routing.priority == "low_carbon"
    assert settings.enterprise.green_routing.threshold_gco2 == 200


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("2", 2.0), (1.5, 1.5)],
)
def test_durations(text: str | float, seconds: float) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("bad", ["soon", "-1s", "1 week", True])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration_s(bad)


@pytest.mark.parametrize(
    ("data", "path", "fragment"),
    [
        (
            {"enterprise": {"carbon_tracking": {"provider": "coal"}}},
            "enterprise.carbon_tracking.provider",
            "coal",
        ),
        (
            {"enterprise": {"carbon_tracking": {"reporting_interval": "often"}}},
            "reporting_interval",
            "duration",
        ),
        (
            {"enterprise": {"green_routing": {"threshold_gco2": -5}}},
            "green_routing.threshold_gco2",
            "greater",
        ),
        (
            {"clusters": [{"name": "a", "region": "us-east-1", "url": "ftp://x", "models": ["m"]}]},
            "clusters[0].url",
            "http",
        ),
        (
            {"clusters": [{"name": "a", "region": "us-east-1", "url": "http://x/v1", "models": []}]},
            "clusters[0].models",
            "at least 1",
        ),
        ({"auth": {"keys": [{"department": "d"}]}}, "auth.keys[0]", "exactly one"),
        ({"auth": {"keys": [{"department": "d", "sha256": "abc"}]}}, "auth.keys[0].sha256", "64 hexadecimal"),
        ({"servr": {}}, "servr", "unknown key"),
    ],
)
def test_errors_name_key_path(data: dict[str, object], path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(data, "conf.yaml")
    message = str(info.value)
    assert message.startswith("conf.yaml: ") and path in message and fragment in message


def test_duplicate_cluster_names_rejected() -> None:
    cluster = {"name": "a", "region": "us-east-1", "url": "http://x/v1", "models": ["m"]}
    with pytest.raises(ConfigError, match="used twice"):
        settings_from_mapping({"clusters": [cluster, cluster]})


def test_check_config_valid_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(MINIMAL)
    assert main(["check-config", str(path)]) == 0
    assert "OK" in capsys.readouterr().out


def test_check_config_invalid_exits_2_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("enterprise:\n  green_routing:\n    priority: fastest\n")
    proc = subprocess.run(
        [sys.executable, "-m", "bauxite.cli", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert str(path) in proc.stderr and "enterprise.green_routing.priority" in proc.stderr
    assert "low_carbon" in proc.stderr  # says what was expected
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.parametrize(
    ("content", "fragment"), [("a: [1,\n", "invalid YAML"), ("- just\n- a list\n", "mapping")]
)
def test_check_config_broken_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, fragment: str
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(content)
    assert main(["check-config", str(path)]) == 2
    assert fragment in capsys.readouterr().err


def test_check_config_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "/nonexistent/enterprise.yaml"]) == 2
    assert "cannot read file" in capsys.readouterr().err


def test_serve_refuses_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("server:\n  port: 99999\n")
    assert main(["serve", "--config", str(path)]) == 2
    assert "server.port" in capsys.readouterr().err


def test_unknown_region_lists_close_names() -> None:
    cluster = {"name": "a", "region": "us-east-7", "url": "http://x/v1", "models": ["m"]}
    with pytest.raises(ConfigError) as info:
        settings_from_mapping({"clusters": [cluster]}, "conf.yaml")
    assert "clusters[0].region" in str(info.value) and "us-east-1" in str(info.value)


def test_shipped_examples_are_valid(capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(__file__).resolve().parent.parent
    assert main(["check-config", str(root / "examples" / "enterprise.yaml")]) == 0
    captured = capsys.readouterr()
    assert "OK (3 clusters, 4 models)" in captured.out
    assert "warning:" in captured.err and "BAUXITE_KEY_RESEARCH" in captured.err  # env var not set
