"""Config files that used to crash ``check-config`` or pass it and break at run time: each gets the file,
key path and expectation and exit 2, and ``check-config`` and ``serve`` agree on what is valid."""

from __future__ import annotations

import copy
import math
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from bauxite.cli import main

ROOT = Path(__file__).resolve().parent.parent
VALID = """\
enterprise:
  carbon_tracking:
    reporting_interval: "1h"
clusters:
  - name: east
    region: us-east-1
    url: http://127.0.0.1:8001/v1
    models: [tiny-8b]
"""


def check(tmp_path: Path, content: bytes | str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "cfg.yaml"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    code = main(["check-config", str(path)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return code, captured.err


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        (b"\x80\x81server: {}\n", ["not UTF-8", "offset 0"]),
        (VALID.replace("1h", "1s").encode("latin-1") + b"# caf\xe9\n", ["not UTF-8"]),
        ("server:\n  port: " + "9" * 5000 + "\n", ["thousands of digits"]),
        ("server: " + "[" * 5000 + "]" * 5000 + "\n", ["nested deeper than"]),
        ("server: " + "{a: " * 200 + "1" + "}" * 200 + "\n", ["nested deeper than"]),
        (VALID.replace('"1h"', ".nan"), ["enterprise.carbon_tracking.reporting_interval", "finite"]),
        (VALID.replace('"1h"', '"1ms"'), ["reporting_interval", "at least 1s"]),
        (VALID + "    timeouts: {read_s: .nan}\n", ["clusters[0].timeouts.read_s", "finite"]),
        (VALID + "    timeouts: {connect_s: 0}\n", ["clusters[0].timeouts.connect_s", "greater than 0"]),
        (VALID + "    rtt_ms: .inf\n", ["clusters[0].rtt_ms", "finite"]),
        (VALID + "enterprise: {}\n", ["duplicate key 'enterprise'", "line"]),
        (VALID + "server: {header_timeout: -1s}\n", ["server.header_timeout"]),
    ],
    ids=["bad-utf8", "latin1", "5000-digit-int", "deep-list", "deep-map", "nan-interval", "1ms-interval",
         "nan-timeout", "zero-timeout", "inf-rtt", "duplicate-section", "negative-header-timeout"],
)  # fmt: skip
def test_bad_files_name_file_key_and_expectation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | bytes, fragments: list[str]
) -> None:
    code, err = check(tmp_path, content, capsys)
    assert code == 2, err
    assert str(tmp_path / "cfg.yaml") in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-8-sig"])
def test_bom_encoded_files_are_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], encoding: str
) -> None:
    code, err = check(tmp_path, VALID.encode(encoding), capsys)
    assert code == 0, err


def test_check_config_and_serve_agree_on_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BAUXITE_TEST_UNSET_TOKEN", raising=False)
    monkeypatch.delenv("BAUXITE_TEST_UNSET_KEY", raising=False)
    path = tmp_path / "cfg.yaml"
    keys = "auth:\n  keys:\n    - {department: r, key_env: BAUXITE_TEST_UNSET_KEY}\n"
    path.write_text(VALID + keys + "telemetry: {token_env: BAUXITE_TEST_UNSET_TOKEN}\n")
    for argv in (["check-config", str(path)], ["serve", "--config", str(path), "--port", "0"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "BAUXITE_TEST_UNSET_TOKEN" in err and "unset" in err
        assert "warning:" in err and "BAUXITE_TEST_UNSET_KEY" in err and "DISABLED" in err


def test_state_urls_are_checked_before_serve_would_use_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for url in ("http://redis:6379/0", "not a url"):
        code, err = check(tmp_path, VALID + f"state: {{url: '{url}'}}\n", capsys)
        assert code == 2 and "state.url" in err and "redis://, rediss:// (TLS) or unix://" in err, err
    assert check(tmp_path, VALID + "state: {url: 'unix:///run/redis.sock'}\n", capsys)[0] == 0
    path = tmp_path / "env.yaml"
    path.write_text(VALID + "state: {url_env: BAUXITE_TEST_REDIS_URL}\n")
    monkeypatch.delenv("BAUXITE_TEST_REDIS_URL", raising=False)
    assert main(["check-config", str(path)]) == 0  # runs, on its own state: said aloud
    err = capsys.readouterr().err
    assert "warning: state.url_env" in err and "BAUXITE_TEST_REDIS_URL" in err and "NOT share" in err
    monkeypatch.setenv("BAUXITE_TEST_REDIS_URL", "http://user:pw@redis:6379")
    for argv in (["check-config", str(path)], ["serve", "--config", str(path), "--port", "0"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "BAUXITE_TEST_REDIS_URL" in err and "not a Redis URL" in err and "Traceback" not in err
        assert "pw" not in err  # the value's credentials are not echoed


WEIRD: list[Any] = [
    math.nan, math.inf, -math.inf, -1, 0, 10**400, "", "x" * 300, [], {}, None, True, "1ms", "-5s",
    [[[[[[[[1]]]]]]]], {"a": {"b": {"c": {}}}}, "\udcff", 1e308, "0x10", "http://", "us-east-1",
]  # fmt: skip


def _leaves(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(doc, dict):
        return [path] + [p for k, v in doc.items() for p in _leaves(v, (*path, k))]
    if isinstance(doc, list):
        return [path] + [p for i, v in enumerate(doc) for p in _leaves(v, (*path, i))]
    return [path]


def _mutate(rng: random.Random, doc: Any) -> Any:
    paths = [p for p in _leaves(doc) if p]
    for _ in range(rng.randint(1, 3)):
        if not paths:
            break
        path = rng.choice(paths)
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        choice = rng.random()
        if choice < 0.6:
            parent[path[-1]] = copy.deepcopy(rng.choice(WEIRD))
        elif choice < 0.8 and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[f"{path[-1]}_typo"] = copy.deepcopy(rng.choice(WEIRD))
        paths = [p for p in _leaves(doc) if p]
    return doc


def _render(rng: random.Random, doc: Any) -> bytes:
    text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    roll = rng.random()
    if roll < 0.1:
        return text.encode("utf-16")
    if roll < 0.2:
        cut = rng.randrange(len(text) + 1)
        return text[:cut].encode("utf-8", "surrogateescape")
    if roll < 0.3:
        data = bytearray(text.encode("utf-8", "surrogateescape"))
        data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if roll < 0.35:
        return (text + text.splitlines()[0] + "\n").encode("utf-8", "surrogateescape")  # a duplicate key
    return text.encode("utf-8", "surrogateescape")


def test_300_mutated_configs_never_crash_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(7)
    sources = [yaml.safe_load((ROOT / "examples" / "enterprise.yaml").read_text()), yaml.safe_load(VALID)]
    codes: dict[int, int] = {}
    for _ in range(300):
        doc = _mutate(rng, yaml.safe_load(yaml.safe_dump(rng.choice(sources))))
        code, err = check(tmp_path, _render(rng, doc), capsys)
        assert code in (0, 2), err
        if code == 2:
            assert str(tmp_path / "cfg.yaml") in err
        codes[code] = codes.get(code, 0) + 1
    assert codes.get(2, 0) > 100 and codes.get(0, 0) > 0, codes  # mutations both break and keep files valid


@pytest.mark.parametrize(
    "sections",
    [
        "server: {port: 9100}\ntelemetry: {listen_port: 9100}\n",
        "server: {host: 0.0.0.0, port: 9100}\ntelemetry: {listen_port: 9100}\n",
        "server: {port: 9100}\ntelemetry: {listen_host: localhost, listen_port: 9100}\n",
    ],
    ids=["same-default-host", "wildcard-api", "localhost-alias"],
)
def test_telemetry_listener_on_the_api_port_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sections: str
) -> None:
    code, err = check(tmp_path, VALID + sections, capsys)
    assert code == 2, err
    assert f"{tmp_path / 'cfg.yaml'}: telemetry.listen_port: 9100 is also server.port" in err


@pytest.mark.parametrize(
    "sections",
    [
        "server: {port: 9100}\ntelemetry: {listen_port: 9101}\n",
        "server: {host: 127.0.0.1, port: 9100}\ntelemetry: {listen_host: 10.1.2.3, listen_port: 9100}\n",
        "server: {port: 0}\ntelemetry: {listen_port: 0}\n",
    ],
    ids=["other-port", "other-interface", "both-any-free-port"],
)
def test_telemetry_listener_on_another_address_is_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sections: str
) -> None:
    code, err = check(tmp_path, VALID + sections, capsys)
    assert code == 0, err
