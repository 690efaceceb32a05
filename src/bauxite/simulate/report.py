"""The comparison table printed by ``bauxite simulate`` (and the savings line under it)."""

from __future__ import annotations

from ..console import table_text
from .engine import PolicyResult, SimulationResult

_HEADER = ("policy", "carbon_kg", "vs_oracle", "requests", "slo_violations", "p95_ttft_ms", "under_threshold")


def table(result: SimulationResult) -> str:
    oracle_kg = result.oracle.carbon_g / 1000.0
    rows = [_row(name, r, oracle_kg) for name, r in result.policies.items()]
    rows.append(_row("oracle", result.oracle, oracle_kg))
    return table_text(_HEADER, rows) + "\n".join(savings(result))


def _row(name: str, r: PolicyResult, oracle_kg: float) -> list[str]:
    s = r.summary()
    kg = float(s["carbon_kg"])
    versus = f"{(kg / oracle_kg - 1.0) * 100.0:+.1f}%" if oracle_kg > 0 else "n/a"
    return [
        name,
        f"{kg:.3f}",
        versus,
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
