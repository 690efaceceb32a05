"""The comparison table printed by ``bauxite simulate`` (and the savings line under it).

Every row's ``vs_bound`` is its carbon over the provable lower bound (``simulate/bound.py``): a gap of 0 is
optimal. The greedy hindsight baseline is a heuristic with perfect queue knowledge, not an optimum.
"""

from __future__ import annotations

from ..console import table_text
from .engine import PolicyResult, SimulationResult

GREEDY_LABEL = "greedy_hindsight"  # the baseline's honest name; its JSON key stays "oracle"
_HEADER = ("policy", "carbon_kg", "vs_bound", "requests", "slo_violations", "p95_ttft_ms", "under_threshold")


def table(result: SimulationResult) -> str:
    bound_kg = result.bound.carbon_g / 1000.0
    rows = [_row(name, r, bound_kg) for name, r in result.policies.items()]
    rows.append(_row(GREEDY_LABEL, result.oracle, bound_kg))
    rows.append(["bound", f"{bound_kg:.3f}", "+0.0%", "", "", "", ""])
    return table_text(_HEADER, rows) + "\n".join([*savings(result), bound_note(result)])


def gap(carbon_g: float, bound_g: float) -> str:
    """Carbon over the bound as a signed percentage."""
    return f"{(carbon_g / bound_g - 1.0) * 100.0:+.1f}%" if bound_g > 0 else "n/a"


def bound_note(result: SimulationResult) -> str:
    b = result.bound
    note = "bound: LP lower bound for any placement meeting the SLO on every servable request"
    if b.unservable:
        note += f"; {b.unservable} requests no cluster could serve in time even idle"
    if not b.slo_feasible:
        note += "; the load exceeds what any SLO-meeting placement can serve (capacity-only bound)"
    return note


def _row(name: str, r: PolicyResult, bound_kg: float) -> list[str]:
    s = r.summary()
    return [
        name,
        f"{float(s['carbon_kg']):.3f}",
        gap(r.carbon_g, bound_kg * 1000.0),
        str(s["requests"]),
        str(s["slo_violations"]),
        f"{float(s['p95_ttft_ms']):.0f}",
        f"{float(s['share_under_threshold']) * 100.0:.1f}%",
    ]


def savings(result: SimulationResult) -> list[str]:
    """One line per green policy: its saving against each baseline that ran."""
    lines = []
    for green in ("low_carbon", "balanced"):
        if green not in result.policies:
            continue
        mine = result.policies[green].carbon_g
        parts = [
            f"{(1.0 - mine / result.policies[base].carbon_g) * 100.0:.1f}% less than {base}"
            for base in ("latency", "round_robin")
            if base in result.policies and result.policies[base].carbon_g > 0
        ]
        if parts:
            lines.append(f"{green}: " + ", ".join(parts))
    return lines
