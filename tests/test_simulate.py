"""The routing simulator: same stream for every policy, the gateway's router inside, honest scoring."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from bauxite.simulate import cli
from bauxite.simulate.config import SimConfig, SimConfigError, load_sim_config
from bauxite.simulate.engine import simulate
from bauxite.simulate.model import intensity_table
from bauxite.simulate.workload import expected_requests, generate
from bauxite.units import J_PER_KWH

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "simulate.yaml"


def small_config(**overrides: Any) -> SimConfig:
    """The shipped example, cut to a few days so a test runs in about a second."""
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    data["period"] = {"start": "2022-06-01", "days": 3, "seconds_per_hour": 4}
    data.update(overrides)
    return SimConfig.model_validate(data)


def test_example_loads() -> None:
    config = load_sim_config(EXAMPLE)
    assert [c.trace for c in config.clusters] == ["PJM", "MISO", "CISO", "BPAT"]
    assert config.routing.green_routing.threshold_gco2 == 200


def test_stream_is_deterministic_and_sized_as_configured() -> None:
    config = small_config()
    first = list(generate(config))
    assert first == list(generate(config))
    assert len(first) == pytest.approx(expected_requests(config), rel=0.05)
    assert list(generate(small_config(seed=99)))[:5] != first[:5]


def test_policies_compare_on_identical_traffic() -> None:
    result = simulate(small_config())
    assert set(result.policies) == {"latency", "round_robin", "low_carbon", "balanced"}
    counts = {r.requests for r in (*result.policies.values(), result.oracle)}
    assert len(counts) == 1
    kg = {name: r.carbon_g for name, r in result.policies.items()}
    low = kg["low_carbon"]
    assert low < kg["round_robin"] < kg["latency"]
    assert result.bound.carbon_g <= min(*kg.values(), result.oracle.carbon_g)
    assert result.oracle.slo_violations == 0


def test_one_site_with_exact_energy_matches_the_greedy_hindsight_baseline() -> None:
    """One gateway (nobody else's requests unseen between scrapes) and exact energy figures: the router
    does as well as the baseline that knows every queue exactly, and meets the SLO."""
    east = {"name": "east", "share": 1, "rtt_ms": {"virginia": 8, "iowa": 28, "california": 68, "oregon": 72}}
    result = simulate(small_config(clients=[east], energy_estimate_error=0.0, policies=["low_carbon"]))
    low = result.policies["low_carbon"]
    assert low.carbon_g <= result.oracle.carbon_g * 1.05
    assert low.slo_violations <= 0.002 * low.requests


def test_latency_policy_is_carbon_blind() -> None:
    """Swapping the grids between clusters changes nothing the latency-first baseline does."""
    config = small_config(policies=["latency", "low_carbon"], energy_estimate_error=0.0)
    data = config.model_dump(mode="json")
    traces = [c["trace"] for c in data["clusters"]]
    for cluster, trace in zip(data["clusters"], reversed(traces), strict=True):
        cluster["trace"] = trace
    swapped = simulate(SimConfig.model_validate(data))
    result = simulate(config)
    assert swapped.policies["latency"].hourly == result.policies["latency"].hourly
    assert swapped.policies["low_carbon"].hourly != result.policies["low_carbon"].hourly


def test_a_cluster_too_far_for_the_slo_is_never_chosen() -> None:
    """The greenest cluster out of latency reach takes nothing, however green; the SLO still holds."""
    far = {"virginia": 8, "iowa": 28, "california": 68, "oregon": 450}
    result = simulate(
        small_config(clients=[{"name": "east", "share": 1, "rtt_ms": far}], policies=["low_carbon"])
    )
    low = result.policies["low_carbon"]
    oregon = [c.name for c in result.config.clusters].index("oregon")
    assert sum(low.hourly[oregon]) == 0
    assert low.slo_violations == 0


def test_strict_threshold_rejects_instead_of_falling_back() -> None:
    routing = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))["routing"]
    routing["green_routing"] = {"threshold_gco2": 1, "strict": True}
    result = simulate(small_config(routing=routing, policies=["low_carbon"]))
    low = result.policies["low_carbon"]
    assert low.requests == 0 and low.rejected > 0


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"slo_ttft_ms": -1}, "slo_ttft_ms"),
        ({"policies": ["fastest"]}, "policies"),
        ({"clients": [{"name": "x", "share": 1, "rtt_ms": {"virginia": 1}}]}, "rtt_ms needs exactly one"),
        ({"surprise": 1}, "surprise"),
        ({"outages": [{"cluster": "nowhere", "start_hour": 0}]}, "outages name unknown clusters"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, patch: dict[str, Any], message: str) -> None:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    data.update(patch)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(SimConfigError, match=message):
        load_sim_config(path)


def test_cli_json_table_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    data["period"] = {"start": "2022-03-01", "days": 2, "seconds_per_hour": 3}
    path = tmp_path / "sim.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")

    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["simulate", "--config", str(path), "--json", "--plot", str(tmp_path / "png")])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    for row in out["policies"].values():
        assert {"carbon_kg", "requests", "slo_violations", "p95_ttft_ms", "share_under_threshold"} <= set(row)
    assert out["oracle"]["carbon_kg"] > 0
    assert 0 < out["bound"]["carbon_kg"] <= min(r["carbon_kg"] for r in out["policies"].values())
    assert {p.name for p in (tmp_path / "png").iterdir()} == {"week.png", "carbon.png"}

    assert cli.main(["--config", str(path)]) == 0
    table = capsys.readouterr().out
    assert "low_carbon" in table and "greedy_hindsight" in table and "less than latency" in table
    assert "vs_bound" in table and "\nbound " in table


def test_cli_reports_bad_config_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("slo_ttft_ms: fast\n", encoding="utf-8")
    assert cli.main(["--config", str(path)]) == 2
    assert "slo_ttft_ms" in capsys.readouterr().err


def test_simulated_avoided_carbon_uses_the_gateway_accounting_and_stays_within_the_grid_gaps() -> None:
    config = small_config(policies=["latency", "low_carbon"], energy_estimate_error=0.0)
    result = simulate(config)
    low, fastest = result.policies["low_carbon"], result.policies["latency"]
    table = intensity_table(config)
    ceiling = 0.0
    for r in generate(config):
        per_cluster = [
            (
                c.j_per_prompt_token * r.prompt_tokens + c.j_per_output_token * r.completion_tokens,
                c.pue * table[k][r.hour],
            )
            for k, c in enumerate(config.clusters)
        ]
        most_j = max(j for j, _ in per_cluster)
        ceiling += most_j * (max(g for _, g in per_cluster) - min(g for _, g in per_cluster)) / J_PER_KWH
    assert 0.0 < low.avoided_g <= ceiling
    assert abs(fastest.avoided_g) < 0.05 * low.avoided_g  # latency-first mostly is its own counterfactual
    assert result.as_json()["policies"]["low_carbon"]["avoided_net_kg"] > 0  # type: ignore[index]


def test_the_latency_header_is_each_requests_own_requirement() -> None:
    """Every request asks for 1 ms: nothing can serve it, every policy is scored against it, the router
    takes its likeliest cluster and says so, and the bound knows none was servable."""
    config = small_config(policies=["low_carbon"])
    work = config.workload.model_copy(update={"header_share": 1.0, "header_latency_ms": 1.0})
    result = simulate(config.model_copy(update={"workload": work}))
    low = result.policies["low_carbon"]
    assert low.slo_violations == low.requests == result.bound.unservable
    assert set(low.reasons) == {"slo_fallback"}
    loose = config.workload.model_copy(update={"header_share": 1.0, "header_latency_ms": 60_000.0})
    relaxed = simulate(config.model_copy(update={"workload": loose})).policies["low_carbon"]
    assert relaxed.slo_violations == 0 and relaxed.carbon_g < low.carbon_g


def test_an_outage_fails_over_cools_down_and_the_bound_knows() -> None:
    """oregon refuses connections for a day: the router fails over (reason failover), then keeps away while
    it cools down, so only a few requests try it; nothing is served there; the bound skips it too."""
    outage = {"cluster": "oregon", "start_hour": 24, "hours": 24}
    config = small_config(policies=["low_carbon"], outages=[outage])
    result = simulate(config)
    low = result.policies["low_carbon"]
    oregon = [c.name for c in config.clusters].index("oregon")
    assert sum(low.hourly[oregon][24:48]) == 0
    assert sum(result.oracle.hourly[oregon][24:48]) == 0
    served_hours = config.period.seconds_per_hour * 24
    # one refused attempt at most per cool-down (10 s, then up to 60 s) per site
    assert 0 < low.reasons["failover"] <= len(config.clients) * (served_hours / 10.0 + 1)
    assert low.requests + low.rejected == result.oracle.requests
    healthy = simulate(small_config(policies=["low_carbon"]))
    assert result.bound.carbon_g >= healthy.bound.carbon_g  # fewer options never lower the optimum


def _cli_simulate(path: Path) -> int:
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["simulate", "--config", str(path)])
    code: int = args.func(args)
    return code


def test_binary_file_bad_yaml_and_infinite_numbers_are_config_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"slo_ttft_ms: 300\n\xff\xfe\x00\x80garbage")
    assert _cli_simulate(binary) == 2
    err = capsys.readouterr().err
    assert f"{binary}: not UTF-8 text" in err and "Traceback" not in err

    broken = tmp_path / "broken.yaml"
    broken.write_text("clusters: [1,\n", encoding="utf-8")
    assert _cli_simulate(broken) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "configuration error:" and len(lines) == 2  # one line, like check-config
    assert lines[1].startswith(f"{broken}: line ") and "invalid YAML" in lines[1]

    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    data["clusters"][0]["j_per_output_token"] = float("inf")
    data["workload"] = {**data.get("workload", {}), "requests_per_s": float("inf")}
    infinite = tmp_path / "inf.yaml"
    infinite.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert ".inf" in infinite.read_text(encoding="utf-8")
    assert _cli_simulate(infinite) == 2
    err = capsys.readouterr().err
    assert f"{infinite}: clusters[0].j_per_output_token: expected a finite number" in err
    assert f"{infinite}: workload.requests_per_s: expected a finite number" in err
