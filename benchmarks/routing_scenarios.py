"""Green routing beyond the shipped example: run ``simulate`` on every scenario and print one table.

Each YAML under ``benchmarks/scenarios/`` varies one or more of: traces and regions, number and size of
clusters, client geography, SLO tightness, load, ``threshold_gco2``, token lengths, learned vs configured
latency profiles. The table has one row per scenario × policy: carbon, distance to the oracle, SLO
violations and p95 time to first token. ``--bench`` also times ``Router.choose`` on a four-cluster fleet.

    python benchmarks/routing_scenarios.py [--scenarios DIR] [--only NAME ...] [--bench] [--json]

Runs one scenario at a time (about 2 minutes in all on two cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bauxite.clusters import Fleet
from bauxite.intensity.base import Intensity
from bauxite.routing.config import ClusterLatencySettings, GreenRoutingSettings, LatencySettings
from bauxite.routing.router import Router, RouteRequest
from bauxite.settings import ClusterSettings
from bauxite.simulate.config import load_sim_config
from bauxite.simulate.engine import SimulationResult, simulate

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
HEADER = ("scenario", "policy", "carbon_kg", "vs_oracle", "slo_violations", "p95_ttft_ms", "requests")


def rows(name: str, result: SimulationResult) -> list[list[str]]:
    oracle_g = result.oracle.carbon_g
    out = []
    for policy, r in (*result.policies.items(), ("oracle", result.oracle)):
        versus = f"{(r.carbon_g / oracle_g - 1.0) * 100.0:+.1f}%" if oracle_g > 0 else "n/a"
        out.append(
            [
                name,
                policy,
                f"{r.carbon_g / 1000.0:.3f}",
                versus,
                str(r.slo_violations),
                f"{r.p95_ttft_ms():.0f}",
                str(r.requests),
            ]
        )
    return out


def render(table: list[list[str]]) -> str:
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(HEADER)]

    def line(cells: list[str] | tuple[str, ...]) -> str:
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(HEADER), *(line(row) for row in table)])


def bench_choose(rounds: int = 5, n: int = 20_000) -> float:
    """Best-of-rounds µs per ``Router.choose`` with green routing on, four clusters, some of them queueing."""
    names = ("east", "central", "west", "north")
    fleet = Fleet(
        [
            ClusterSettings.model_validate(
                {"name": c, "region": f"r-{c}", "url": f"http://{c}/v1", "models": ["m"]}
            )
            for c in names
        ]
    )
    for k, state in enumerate(fleet.clusters):
        state.in_flight = 30 + 10 * k  # the last two are past their 40 slots and queue

    class Grid:
        def for_ranking(self, regions: list[str]) -> dict[str, Intensity]:
            return {r: Intensity(r, 100.0 + 50.0 * i, 0.0, "bench") for i, r in enumerate(regions)}

    class Energy:
        def expected_j(self, cluster: str, model: str, prompt: int, completion: int) -> float:
            return 1.0 + 0.05 * prompt + 0.3 * completion

    latency = LatencySettings(
        slo_ttft_ms=400.0,
        clusters={
            c: ClusterLatencySettings(rtt_ms=10.0 * (k + 1), max_concurrency=40) for k, c in enumerate(names)
        },
    )
    router = Router(fleet, Grid(), Energy(), GreenRoutingSettings(enabled=True, threshold_gco2=220), latency)
    request = RouteRequest("m", prompt_tokens=500)
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(n):
            router.choose(request)
        best = min(best, (time.perf_counter() - started) / n * 1e6)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scenarios", type=Path, default=SCENARIOS, help="folder of scenario YAMLs")
    parser.add_argument("--only", nargs="*", default=None, help="scenario names (file stems) to run")
    parser.add_argument("--bench", action="store_true", help="also time Router.choose")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    files = sorted(args.scenarios.glob("*.yaml"))
    if args.only:
        files = [f for f in files if f.stem in args.only]
    table: list[list[str]] = []
    results: dict[str, object] = {}
    for path in files:
        started = time.perf_counter()
        result = simulate(load_sim_config(path))
        print(f"{path.stem}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
        table.extend(rows(path.stem, result))
        results[path.stem] = result.as_json()
    if args.bench:
        results["choose_us"] = round(bench_choose(), 3)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(render(table))
    if args.bench:
        print(f"\nRouter.choose: {results['choose_us']} µs per decision (4 clusters, green routing on)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
