"""Carbon figures the router ranks by, copied out of the intensity and energy services on a short timer.

Expected grams of a request on a cluster = (fixed + prefill J/token × prompt + decode J/token × completion)
× PUE × intensity / J_PER_KWH. The energy service is probed once per refresh for each (cluster, model) to get
those three coefficients, so a decision is a few multiplications instead of a call into the estimator.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from ..clusters import Fleet
from ..intensity.base import Intensity
from ..units import carbon_g

PROBE_TOKENS = 1000
UNKNOWN_G_PER_KWH = 500.0  # only before any intensity value arrived; above every shipped yearly mean


class IntensitySnapshots(Protocol):
    """What the router needs from the intensity service."""

    def for_ranking(self, regions: list[str]) -> Mapping[str, Intensity]: ...


class EnergyModel(Protocol):
    """What the router needs from the energy service (``pue`` is read when present)."""

    def expected_j(self, cluster: str, model: str, prompt_tokens: int, completion_tokens: int) -> float: ...


@dataclass(frozen=True, slots=True)
class EnergyCoefficients:
    fixed_j: float
    prompt_j_per_token: float
    completion_j_per_token: float

    def energy_j(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            self.fixed_j
            + self.prompt_j_per_token * prompt_tokens
            + self.completion_j_per_token * completion_tokens
        )


_ZERO = EnergyCoefficients(0.0, 0.0, 0.0)
GramsArrays = tuple[list[float], list[float], list[float], list[float]]


def _arrays(rows: list[tuple[float, float, float, float]]) -> GramsArrays:
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows]


_NO_GRAMS = (0.0, 0.0, 0.0, UNKNOWN_G_PER_KWH)


class CarbonSnapshot:
    def __init__(self, fleet: Fleet, intensity: IntensitySnapshots, energy: EnergyModel) -> None:
        self._fleet = fleet
        self._intensity = intensity
        self._energy = energy
        # The energy service knows provider defaults; a model without ``pue`` falls back to config.
        pue_of = getattr(energy, "pue", None)
        self._pue_of: Callable[[str], float] | None = pue_of if callable(pue_of) else None
        self._g_per_kwh: dict[str, float] = {}  # by cluster name
        self._grams_per_j: dict[str, float] = {}  # pue × intensity / J_PER_KWH, by cluster name
        self._coefficients: dict[tuple[str, str], EnergyCoefficients] = {}
        # The hot path's view, per model, as columns in fleet order: (fixed g, g/prompt token,
        # g/completion token, g/kWh) of each cluster; rebuilt whole at each refresh.
        self._arrays: dict[str, GramsArrays] = {}

    def refresh(self) -> None:
        """Re-read intensity per region and energy coefficients per (cluster, model); never raises."""
        regions = sorted({c.region for c in self._fleet.clusters})
        try:
            by_region = self._intensity.for_ranking(regions)
        except Exception:
            by_region = {}  # keep the last snapshot rather than fail a request
        for cluster in self._fleet.clusters:
            found = by_region.get(cluster.region)
            if found is not None and math.isfinite(found.g_per_kwh):
                self._g_per_kwh[cluster.name] = max(found.g_per_kwh, 0.0)
        # A region never heard of must not look green: rank it with (or behind) the dirtiest known one.
        unknown = max(self._g_per_kwh.values(), default=UNKNOWN_G_PER_KWH)
        unknown = max(unknown, UNKNOWN_G_PER_KWH)
        grams: dict[tuple[str, str], tuple[float, float, float, float]] = {}
        for cluster in self._fleet.clusters:
            g_per_kwh = self._g_per_kwh.setdefault(cluster.name, unknown)
            pue = self._pue(cluster.name, cluster.settings.pue)
            self._grams_per_j[cluster.name] = carbon_g(1.0, g_per_kwh, pue)
            for model in cluster.routes:
                e = self._coefficients[(cluster.name, model)] = self._probe(cluster.name, model)
                per_j = self._grams_per_j[cluster.name]
                grams[(cluster.name, model)] = (
                    e.fixed_j * per_j,
                    e.prompt_j_per_token * per_j,
                    e.completion_j_per_token * per_j,
                    g_per_kwh,
                )
        self._arrays = {
            model: _arrays([grams.get((c.name, model), _NO_GRAMS) for c in self._fleet.clusters])
            for model in self._fleet.by_model
        }

    def grams_arrays(self, model: str) -> GramsArrays:
        """Every cluster in fleet order, as four lists: fixed g, g per prompt token, g per completion token
        (zeros where it does not serve ``model``, and before the first refresh) and g/kWh (unknown-high before
        the first refresh)."""
        found = self._arrays.get(model)
        if found is None:
            found = self._arrays[model] = _arrays([_NO_GRAMS] * len(self._fleet.clusters))
        return found

    def _pue(self, cluster: str, configured: float | None) -> float:
        if self._pue_of is not None:
            try:
                value = float(self._pue_of(cluster))
                if math.isfinite(value) and value >= 1.0:
                    return value
            except Exception:
                pass
        return configured if configured is not None else 1.0

    def _probe(self, cluster: str, model: str) -> EnergyCoefficients:
        try:
            fixed = self._energy.expected_j(cluster, model, 0, 0)
            prompt = self._energy.expected_j(cluster, model, PROBE_TOKENS, 0)
            completion = self._energy.expected_j(cluster, model, 0, PROBE_TOKENS)
        except Exception:
            return self._coefficients.get((cluster, model), _ZERO)
        values = (fixed, (prompt - fixed) / PROBE_TOKENS, (completion - fixed) / PROBE_TOKENS)
        if not all(math.isfinite(v) for v in values):
            return self._coefficients.get((cluster, model), _ZERO)
        return EnergyCoefficients(*(max(v, 0.0) for v in values))

    def knows(self, cluster: str) -> bool:
        return cluster in self._grams_per_j

    def g_per_kwh(self, cluster: str) -> float:
        return self._g_per_kwh.get(cluster, 0.0)

    def grams_per_j(self, cluster: str) -> float:
        return self._grams_per_j.get(cluster, 0.0)

    def coefficients(self, cluster: str, model: str) -> EnergyCoefficients:
        return self._coefficients.get((cluster, model), _ZERO)

    def expected_g(self, cluster: str, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        energy_j = self.coefficients(cluster, model).energy_j(prompt_tokens, completion_tokens)
        return energy_j * self.grams_per_j(cluster)
