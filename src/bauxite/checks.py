"""Checks beyond the schema that need the environment (env vars). ``check-config`` and ``serve`` both run
them, so they agree: a problem refuses to start (exit 2), a note is printed as a warning by both."""

from __future__ import annotations

import os

from .settings import Settings


def check_settings(settings: Settings, file: str) -> tuple[list[str], list[str]]:
    """(problems, notes). Problems make the file invalid; notes are worth knowing."""
    from .telemetry.service import MULTIPROC_ENV

    problems: list[str] = []
    notes: list[str] = []
    token_env = settings.telemetry.token_env
    if token_env and not os.environ.get(token_env, "").strip():
        problems.append(
            f"telemetry.token_env: environment variable {token_env} is unset or empty; "
            "set it to the bearer token /metrics and /v1/carbon/* should require"
        )
    problems.extend(
        f"environment variable {name} is set: Prometheus multiprocess mode would write metric files "
        "to disk; unset it"
        for name in MULTIPROC_ENV
        if os.environ.get(name)
    )
    problems.extend(_state_problems(settings, notes))
    for index, key in enumerate(settings.auth.keys):
        if key.key_env and not os.environ.get(key.key_env):
            notes.append(
                f"auth.keys[{index}].key_env: environment variable {key.key_env} is not set; "
                "this key is DISABLED and its callers will get 401"
            )
    for index, cluster in enumerate(settings.clusters):
        if cluster.api_key_env and not os.environ.get(cluster.api_key_env):
            notes.append(
                f"clusters[{index}].api_key_env: environment variable {cluster.api_key_env} is not set; "
                "requests go upstream without a key"
            )
    notes.extend(_unknown_hardware_and_models(settings))
    if not settings.clusters:
        notes.append("no clusters configured: every model request will get 404")
    if not settings.auth.keys and not settings.auth.allow_anonymous:
        notes.append("no API keys and auth.allow_anonymous is false: every request will get 401")
    return [f"{file}: {p}" for p in problems], notes


def _state_problems(settings: Settings, notes: list[str]) -> list[str]:
    """``state.url_env``: unset is a note (the gateway runs on its own state), a value that is no Redis URL
    a problem (the client could not use it)."""
    from .state.config import url_problem

    name = settings.state.url_env
    if not name:
        return []
    value = os.environ.get(name, "")
    if not value:
        notes.append(
            f"state.url_env: environment variable {name} is unset or empty; this gateway will NOT share "
            "state with other replicas (in-process state only)"
        )
        return []
    problem = url_problem(value)
    return [] if problem is None else [f"state.url_env: the value of {name} is wrong: {problem}"]


def _unknown_hardware_and_models(settings: Settings) -> list[str]:
    """Say aloud where energy figures will rest on a default rather than on the named GPU or model."""
    from .energy.hardware import DEFAULT_GPU, GPU_SPECS, find_gpu_spec
    from .energy.params import EcoLogitsRepository, resolve_params

    notes = []
    for index, cluster in enumerate(settings.clusters):
        if find_gpu_spec(cluster.gpu.type) is None:
            notes.append(
                f"clusters[{index}].gpu.type: unknown GPU {cluster.gpu.type!r}; energy estimates use "
                f"{DEFAULT_GPU} "
                f"figures (known: {', '.join(GPU_SPECS)})"
            )
    repository = EcoLogitsRepository()
    for model in settings.model_names():
        if model in settings.energy.models:
            continue
        params = resolve_params(model, {}, repository)
        if params.source == "default":
            notes.append(
                f"model {model!r}: not in EcoLogits' repository and its name gives no size, so its energy is "
                f"estimated as a {params.active_b:g}B dense model; give its sizes under energy.models"
            )
    return notes


def simulation_file_message(file: str) -> str | None:
    """A message when ``file`` is a ``bauxite simulate`` file rather than a gateway config; else None."""
    from .settings import ConfigError, read_yaml
    from .simulate.config import SimConfigError, load_sim_config, looks_like_sim_config

    try:
        data = read_yaml(file)
    except ConfigError:
        return None  # the gateway loader reports unreadable files in its own words
    if not looks_like_sim_config(data):
        return None
    try:
        config = load_sim_config(file)
    except SimConfigError as exc:
        return f"{file}: this is a `bauxite simulate` file, not a gateway config, and it has problems:\n{exc}"
    return (
        f"{file}: this is a `bauxite simulate` file, not a gateway config. It is valid for the simulator "
        f"({len(config.clusters)} clusters, {len(config.clients)} client groups); run it with "
        f"`bauxite simulate --config {file}`"
    )
