"""What a new user meets in the first hour: printed commands that work, progress, clear refusals, no noise."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bauxite.simulate.cli import plot_problem
from cli_run import BAUXITE, ROOT, bauxite, clean_env, free_port, running_demo, tiny_simulation


def test_demo_banner_commands_run_as_printed() -> None:
    with running_demo() as (base, banner):
        assert f"dashboard       : {base}/dashboard" in banner
        commands = re.findall(r"^  (curl .*?|\S*python\S* -c .*?)(?=\n\n)", banner, flags=re.M | re.S)
        assert len(commands) == 4, banner
        # What each printed command must answer: chat (curl and the Python client), Responses, Messages.
        expected = ["chat.completion", "chat.completion", '"object":"response"', '"type":"message"']
        for command, answer in zip(commands, expected, strict=True):
            assert shutil.which("curl"), "curl is required (see .ci/system-packages.txt)"
            done = subprocess.run(
                ["bash", "-c", command], capture_output=True, text=True, timeout=60, cwd=ROOT, env=clean_env()
            )
            assert done.returncode == 0, (command, done.stderr)
            assert answer in done.stdout.replace("ChatCompletion", "chat.completion"), done.stdout
            if "x-bauxite-include-carbon" in command:
                assert '"bauxite_carbon":{' in done.stdout, done.stdout


def run_with_terminal_stderr(args: list[str], timeout: float = 180.0) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal (as in an interactive shell) and stdout on a pipe."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=slave, cwd=ROOT, env=clean_env())
    os.close(slave)
    terminal = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed its end
                break
            if not chunk:
                break
            terminal += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    proc.stdout.close()
    return proc.wait(30), out, terminal.decode(errors="replace")


def test_simulate_shows_progress_on_a_terminal_and_nothing_extra_with_json(tmp_path: Path) -> None:
    config = str(tiny_simulation(tmp_path))
    code, out, terminal = run_with_terminal_stderr([*BAUXITE, "simulate", "--config", config])
    assert code == 0, terminal
    assert "ETA" in terminal and "low_carbon" in terminal, terminal
    assert re.search(r"\d+/6", terminal), terminal  # four policies, the greedy baseline and the bound
    assert "greedy_hindsight" in out and "ETA" not in out
    code, out, terminal = run_with_terminal_stderr([*BAUXITE, "simulate", "--config", config, "--json"])
    assert code == 0
    assert terminal.strip() == ""
    assert set(json.loads(out)) >= {"policies", "oracle", "bound"}


def test_simulate_table_is_aligned_by_rich(tmp_path: Path) -> None:
    done = bauxite("simulate", "--config", str(tiny_simulation(tmp_path)))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header = lines[0]
    assert header.split()[:2] == ["policy", "carbon_kg"]
    # Numbers are right-aligned under their header: every row ends its carbon column where the header does.
    end = header.index("carbon_kg") + len("carbon_kg")
    for row in lines[1:6]:
        assert re.match(r"\d+\.\d{3}$", row[:end].split()[-1]), row


def test_plot_refuses_an_existing_file_before_simulating(tmp_path: Path) -> None:
    target = tmp_path / "charts.png"
    target.write_bytes(b"not a folder")
    started = time.monotonic()
    done = bauxite("simulate", "--config", str(tiny_simulation(tmp_path, days=60)), "--plot", str(target))
    assert done.returncode == 2
    assert "--plot takes a directory" in done.stderr and str(target) in done.stderr
    assert done.stdout == ""  # nothing was simulated
    assert time.monotonic() - started < 60
    assert target.read_bytes() == b"not a folder"


def test_plot_without_matplotlib_is_refused_before_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an install without the [plot] extra sees
    problem = plot_problem(tmp_path / "charts")
    assert problem is not None and "matplotlib" in problem and "bauxite[plot]" in problem
    assert plot_problem(None) is None


@pytest.mark.parametrize(
    "args",
    [
        ("simulate", "--config", "SIM", "--json"),
        ("intensity", "--json", "us-east-1", "europe-west4"),
        ("estimate", "--model", "gpt-4o", "--json"),
    ],
)
def test_json_into_a_closed_pipe_ends_quietly(args: tuple[str, ...], tmp_path: Path) -> None:
    argv = [a if a != "SIM" else str(tiny_simulation(tmp_path)) for a in args]
    # `true` exits at once, so the command writes into a pipe nobody reads: EPIPE on its first write.
    command = " ".join([*BAUXITE, *argv]) + " | true; echo ${PIPESTATUS[0]} >&2"
    done = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, timeout=180, cwd=ROOT, env=clean_env()
    )
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] in ("0", "1")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("demo", "--port", "70000"), "outside 1-65535"),
        (("demo", "--port", "-1"), "outside 1-65535"),
        (("serve", "--config", "examples/enterprise.yaml", "--port", "http"), "not a port number"),
        (("estimate", "--model", "gpt-4o", "--gpu", "X100"), "unknown GPU type 'X100'; known: H100"),
        (("estimate", "--model", "gpt-4o", "--pue", "0.9"), "--pue must be between 1.0 and 3.0"),
        (("estimate", "--model", "gpt-4o", "--input-tokens", "-5"), "cannot be negative"),
    ],
)
def test_cli_refuses_what_the_config_would_refuse(args: tuple[str, ...], message: str) -> None:
    done = bauxite(*args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_unknown_model_default_is_said_aloud(tmp_path: Path) -> None:
    done = bauxite("estimate", "--model", "acme-mystery-model")
    assert done.returncode == 0
    assert "acme-mystery-model" in done.stderr and "70B dense model" in done.stderr
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "clusters:\n  - {name: a, region: us-east-1, url: 'http://127.0.0.1:1/v1',"
        " models: [acme-mystery-model], gpu: {type: Z900, count: 1}}\n",
        encoding="utf-8",
    )
    done = bauxite("check-config", str(config))
    assert done.returncode == 0
    assert "warning: model 'acme-mystery-model'" in done.stderr and "70B dense model" in done.stderr
    assert "warning: clusters[0].gpu.type: unknown GPU 'Z900'" in done.stderr


def test_simulate_config_errors_speak_like_check_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad-sim.yaml"
    bad.write_text(
        "slo_ttft_ms: 300\nclusters:\n  - {name: a, region: us-east-1, trace: PJM, pue: 0.5}\n"
        "clients:\n  - {name: east, share: 1, rtt_ms: {a: 5}}\n",
        encoding="utf-8",
    )
    done = bauxite("simulate", "--config", str(bad))
    assert done.returncode == 2
    assert done.stderr.startswith("configuration error:\n")
    assert f"{bad}: clusters[0].pue: Input should be greater than or equal to 1" in done.stderr
    done = bauxite("simulate", "--config", "examples/enterprise.yaml")
    assert done.returncode == 2 and "looks like a gateway config" in done.stderr


def test_check_config_recognises_a_simulation_file() -> None:
    done = bauxite("check-config", "examples/simulate.yaml")
    assert done.returncode == 2
    assert "is a `bauxite simulate` file, not a gateway config" in done.stderr
    assert "bauxite simulate --config examples/simulate.yaml" in done.stderr


def test_demo_with_a_config_without_fleet_refuses_before_starting() -> None:
    done = bauxite("demo", "--config", "examples/enterprise.yaml", "--port", "0", timeout=60)
    assert done.returncode == 2
    assert "needs a 'fleet:' section" in done.stderr and "bauxite serve" in done.stderr
    assert "Bauxite demo is running" not in done.stdout


def test_failed_start_prints_no_carbon_report() -> None:
    port = free_port()
    with subprocess.Popen(
        [sys.executable, "-c", f"import socket,time; s=socket.socket(); s.bind(('127.0.0.1',{port})); "
         "s.listen(); print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    ) as holder:  # fmt: skip
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
            done = bauxite("demo", "--port", str(port), timeout=60)
        finally:
            holder.kill()
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    output = done.stdout + done.stderr
    assert "carbon_report" not in output and "Bauxite demo is running" not in output


def test_init_writes_the_starter_files_and_never_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "starter"
    done = bauxite("init", str(target))
    assert done.returncode == 0, done.stderr
    starter = (
        "enterprise.yaml", "demo.yaml", "simulate.yaml", "prometheus/prometheus-local.yml",
        "dashboards/bauxite-carbon.json", "grafana/provisioning/datasources/bauxite-prometheus.yaml",
    )  # fmt: skip
    for name in starter:
        assert (target / name).is_file(), name
    assert (target / "enterprise.yaml").read_bytes() == (ROOT / "examples" / "enterprise.yaml").read_bytes()
    assert bauxite("check-config", str(target / "enterprise.yaml")).returncode == 0
    assert bauxite("check-config", str(target / "demo.yaml")).returncode == 0
    (target / "enterprise.yaml").write_text("# mine\n", encoding="utf-8")
    again = bauxite("init", str(target))
    assert again.returncode == 2 and "already exist" in again.stderr
    assert (target / "enterprise.yaml").read_text(encoding="utf-8") == "# mine\n"
