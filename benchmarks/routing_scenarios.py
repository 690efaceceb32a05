"""Green routing on unseen-style work: run ``simulate`` on every scenario, compare each policy to the bound.

Each YAML under ``benchmarks/scenarios/`` varies one or more of: traces and regions, number and size of
clusters, client geography, SLO tightness, load, ``threshold_gco2``, token lengths and tails, learned vs
configured latency profiles. Routers see what a gateway sees (the simulator's defaults: learned profiles,
5 s scrapes, one gateway replica per client site, estimated energy). The table has one row per scenario ×
policy: carbon, gap to the provable LP lower bound, SLO violations and p95 time to first token; the summary
checks the targets (low_carbon within 10% of the bound everywhere, 5% in the median scenario, and no more
SLO violations than latency-first). ``--bench`` times ``Router.choose`` at 4 and 64 clusters.

    .venv/bin/python benchmarks/routing_scenarios.py [--scenarios DIR] [--only NAME ...] [--bench] [--json]

Runs one scenario at a time (a few minutes in all on two cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
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
HEADER = ("scenario", "policy", "carbon_kg", "vs_bound", "slo_violations", "p95_ttft_ms", "requests")
TARGET_WORST, TARGET_MEDIAN = 0.10, 0.05


def rows(name: str, result: SimulationResult) -> list[list[str]]:
    bound_g = result.bound.carbon_g
    out = []
    for policy, r in (*result.policies.items(), ("greedy_hindsight", result.oracle)):
        versus = f"{(r.carbon_g / bound_g - 1.0) * 100.0:+.1f}%" if bound_g > 0 else "n/a"
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
    out.append([name, "bound", f"{bound_g / 1000.0:.3f}", "+0.0%", "", "", ""])
    return out


def verdict(results: dict[str, SimulationResult]) -> list[str]:
    """The acceptance summary: low_carbon's gap to the bound and its violations against latency-first."""
    gaps: list[float] = []
    lines = []
    for name, result in results.items():
        low, fastest = result.policies.get("low_carbon"), result.policies.get("latency")
        if low is None or result.bound.carbon_g <= 0:
            continue
        gap = low.carbon_g / result.bound.carbon_g - 1.0
        gaps.append(gap)
        more = fastest is not None and low.slo_violations > fastest.slo_violations
        flags = [f"gap {gap * 100.0:+.1f}%" + (" > 10%" if gap > TARGET_WORST else "")]
        if more and fastest is not None:
            flags.append(f"violations {low.slo_violations} > latency's {fastest.slo_violations}")
        lines.append(f"  {name}: " + ", ".join(flags))
    if gaps:
        median = statistics.median(gaps)
        lines.insert(
            0,
            f"low_carbon vs bound: median {median * 100.0:+.1f}% (target ≤ {TARGET_MEDIAN * 100:.0f}%), "
            f"worst {max(gaps) * 100.0:+.1f}% (target ≤ {TARGET_WORST * 100:.0f}%)",
        )
    return lines


def render(table: list[list[str]]) -> str:
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(HEADER)]

    def line(cells: list[str] | tuple[str, ...]) -> str:
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(HEADER), *(line(row) for row in table)])


def bench_choose(clusters: int = 4, rounds: int = 5, n: int = 20_000) -> float:
    """Best-of-rounds µs per ``Router.choose`` with green routing on, some clusters queueing, a fresh scrape
    of each (so the stale-scrape spread is computed), and the snapshot refreshed on its timer, not inside."""
    names = [f"c{k}" for k in range(clusters)]
    fleet = Fleet(
        [
            ClusterSettings.model_validate(
                {"name": c, "region": f"r-{c}", "url": f"http://{c}/v1", "models": ["m"]}
            )
            for c in names
        ]
    )

    class Grid:
        def for_ranking(self, regions: list[str]) -> dict[str, Intensity]:
            return {r: Intensity(r, 100.0 + 50.0 * (i % 7), 0.0, "bench") for i, r in enumerate(regions)}

    class Energy:
        def expected_j(self, cluster: str, model: str, prompt: int, completion: int) -> float:
            return 1.0 + 0.05 * prompt + 0.3 * completion

    latency = LatencySettings(
        slo_ttft_ms=400.0,
        clusters={
            c: ClusterLatencySettings(rtt_ms=10.0 * (k % 8 + 1), max_concurrency=40)
            for k, c in enumerate(names)
        },
    )
    clock = [0.0]
    green = GreenRoutingSettings(enabled=True, threshold_gco2=220, snapshot_interval=1e9)
    router = Router(fleet, Grid(), Energy(), green, latency, clock=lambda: clock[0])
    for k, c in enumerate(names):
        router.scraped(c, 30 + 10 * (k % 4), 0, None)  # some past their 40 slots
    clock[0] = 2.0  # the scrapes are two seconds old
    router.refresh()
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
    results: dict[str, SimulationResult] = {}
    for path in files:
        started = time.perf_counter()
        result = simulate(load_sim_config(path))
        print(f"{path.stem}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
        table.extend(rows(path.stem, result))
        results[path.stem] = result
    timings = {k: round(bench_choose(k), 3) for k in (4, 64)} if args.bench else {}
    if args.json:
        out: dict[str, object] = {name: r.as_json() for name, r in results.items()}
        if timings:
            out["choose_us"] = {str(k): v for k, v in timings.items()}
        print(json.dumps(out, indent=2))
        return 0
    print(render(table))
    print()
    print("\n".join(verdict(results)))
    for k, us in timings.items():
        target = 15.0 if k <= 4 else 40.0
        print(f"Router.choose: {us} µs per decision at {k} clusters (target ≤ {target:.0f} µs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
