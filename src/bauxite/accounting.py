"""Turns a finished request into a record — facility energy × grid intensity = grams CO2e, plus embodied
emissions — and keeps each cluster's unallocated idle energy and its carbon, so that the requests' figures
plus the clusters' idle figures are the fleet's whole account.

Runs in the proxy's ``finally``; it never raises into the response path (accounting must never break or
delay a request): a failure here loses a record's precision, never a request.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .avoided import avoided_carbon
from .embodied import AccountingSettings
from .energy.service import EnergyFigure, EnergyService, RequestWork, Residency
from .intensity.base import Intensity
from .intensity.service import IntensityService
from .records import Capture, RecordSink, RequestRecord, Scope
from .routing.router import Router
from .units import J_PER_KWH, J_PER_WH

if TYPE_CHECKING:
    from .clusters import ClusterState

log = logging.getLogger("bauxite.accounting")


@dataclass(slots=True)
class ClusterAccount:
    """Running totals of one cluster beyond its requests' records (joules at the facility boundary)."""

    cluster: str
    region: str
    scope: Scope
    power_w: float = 0.0  # latest total GPU power (metered clusters)
    metered: bool = False
    measured_j_total: float = 0.0  # metered GPU energy × (1 + host share) × PUE
    attributed_j_total: float = 0.0  # the part of it charged to requests
    idle_j_total: float = 0.0  # the part with no request resident (or charged to none)
    idle_carbon_g_total: float = 0.0  # location-based
    idle_carbon_market_g_total: float = 0.0
    idle_embodied_g_total: float = 0.0  # embodied share of the unallocated time


class Accountant:
    def __init__(
        self,
        intensity: IntensityService,
        energy: EnergyService,
        router: Router,
        sink: RecordSink | None = None,
        *,
        clusters: list[ClusterState] | None = None,
        settings: AccountingSettings | None = None,
    ) -> None:
        self._intensity = intensity
        self._energy = energy
        self._router = router
        self._sinks: list[RecordSink] = [sink] if sink is not None else []
        self._settings = settings if settings is not None else AccountingSettings()
        self._states = {c.name: c for c in clusters or []}
        self._accounts = {
            c.name: ClusterAccount(c.name, c.region, _scope(c.settings.kind)) for c in clusters or []
        }
        self._basis: dict[str, tuple[str, str]] = {}  # region -> (signal, basis) last used, to log a switch
        self._unmetered_seen: dict[str, tuple[float, float]] = {}  # estimated idle already accounted
        energy.on_idle(self._idle)

    def add_sink(self, sink: RecordSink) -> None:
        """Also deliver records to ``sink`` (telemetry, tests). ``submit`` must not block or raise."""
        self._sinks.append(sink)

    # ---- the request's life ---------------------------------------------------------------------

    def begin(self, capture: Capture) -> None:
        """The proxy sent ``capture`` to ``capture.cluster``; an earlier failed attempt is abandoned."""
        try:
            if capture.residency is not None:
                self._energy.abandon(capture.residency)
            capture.residency = self._energy.begin(capture.cluster, capture.model)
        except Exception:
            log.exception("could not register a request on cluster %s", capture.cluster)

    def leave(self, capture: Capture) -> None:
        """The request left its cluster (the attempt is over, whatever its outcome)."""
        if capture.residency is not None:
            self._energy.end(capture.residency)

    def grid_intensity(self, region: str) -> float:
        """For the x-bauxite-grid-intensity header; the intensity service itself never raises."""
        return self._intensity.current(region).g_per_kwh

    def response_estimate(self, capture: Capture) -> tuple[float, float] | None:
        """(energy_wh, carbon_g) known now, for the response headers; None if unknown."""
        found = self._estimate(capture)
        if found is None:
            return None
        figure, intensity = found
        return figure.energy_j / J_PER_WH, _grams(figure.energy_j, intensity.g_per_kwh)

    def carbon_extension(self, capture: Capture) -> dict[str, Any] | None:
        """The ``bauxite_carbon`` object for a client that asked (x-bauxite-include-carbon); None if unknown.

        Energy in Wh at the facility boundary, grams CO2e location-based with the range of the energy figure,
        and whether the figure is estimated or will be settled from measured GPU energy later.
        """
        found = self._estimate(capture)
        if found is None:
            return None
        figure, intensity = found
        g_per_kwh = intensity.g_per_kwh
        metered = self._energy.metered(capture.cluster)
        return {
            "energy_wh": round(figure.energy_j / J_PER_WH, 9),
            "energy_wh_min": round(figure.energy_j_min / J_PER_WH, 9),
            "energy_wh_max": round(figure.energy_j_max / J_PER_WH, 9),
            "carbon_g": round(_grams(figure.energy_j, g_per_kwh), 9),
            "carbon_g_min": round(_grams(figure.energy_j_min, g_per_kwh), 9),
            "carbon_g_max": round(_grams(figure.energy_j_max, g_per_kwh), 9),
            "embodied_g": round(self._embodied_g(capture.cluster, figure), 9),
            "region": capture.region,
            "grid_intensity_g_per_kwh": round(g_per_kwh, 3),
            "grid_intensity_source": intensity.source,
            "grid_intensity_signal": intensity.signal,
            "grid_intensity_basis": intensity.basis,
            "pue": figure.pue,
            "boundary": "facility",
            "source": figure.source,
            # A metered cluster's figure is re-settled from measured GPU energy once the scrape interval
            # covering the request closes; that figure reaches metrics and reports, not this response.
            "settles_later": metered,
        }

    def _estimate(self, capture: Capture) -> tuple[EnergyFigure, Intensity] | None:
        try:
            if capture.residency is None:
                return None
            figure = self._energy.estimate(_work(capture), capture.residency)
            return figure, self._intensity.current(capture.region)
        except Exception:  # the response goes out without the figures rather than failing
            log.exception("response-time estimate failed on cluster %s", capture.cluster)
            return None

    def finish(self, capture: Capture) -> None:
        """Account a finished request (any outcome). Never raises."""
        try:
            residency = capture.residency
            if not capture.cluster or residency is None:
                return  # refused before any cluster was chosen: nothing ran, nothing to account
            self._energy.end(residency)
            work = _work(capture)
            self._energy.settle(work, residency, lambda figure: self._emit(capture, figure))
        except Exception:
            log.exception("accounting failed for a request on cluster %s", capture.cluster)

    # ---- records ---------------------------------------------------------------------------------

    def _emit(self, capture: Capture, figure: EnergyFigure) -> None:
        try:
            record = self._record(capture, figure, self._intensity.current(capture.region))
            for sink in self._sinks:
                sink.submit(record)
        except Exception:
            log.exception("could not record a request on cluster %s", capture.cluster)

    def _record(self, capture: Capture, figure: EnergyFigure, intensity: Intensity) -> RequestRecord:
        self._note_basis(capture.region, intensity)
        market = self._settings.market_factors.get(capture.region)
        market_g_per_kwh = market.g_per_kwh if market is not None else intensity.g_per_kwh
        avoided = avoided_carbon(self._router.carbon, capture, figure.it_j)
        account = self._accounts.get(capture.cluster)
        energy_j = figure.energy_j
        return RequestRecord(
            model=capture.model, region=capture.region, cluster=capture.cluster,
            department=capture.department, endpoint=capture.endpoint, status=capture.status,
            http_status=capture.http_status, prompt_tokens=capture.prompt_tokens,
            completion_tokens=capture.completion_tokens, cached_tokens=capture.cached_tokens,
            ttft_s=capture.ttft_s if capture.ttft_s is not None else -1.0, duration_s=capture.duration_s,
            energy_j=energy_j, energy_j_min=figure.energy_j_min, energy_j_max=figure.energy_j_max,
            gpu_j=figure.gpu_j, gpu_idle_j=figure.gpu_idle_j, host_j=figure.host_j,
            energy_measured=figure.source == "measured",
            intensity_g_per_kwh=intensity.g_per_kwh, intensity_source=intensity.source,
            intensity_signal=intensity.signal, intensity_basis=intensity.basis, pue=figure.pue,
            carbon_g=_grams(energy_j, intensity.g_per_kwh), market_g_per_kwh=market_g_per_kwh,
            carbon_market_g=_grams(energy_j, market_g_per_kwh), market_factor=market is not None,
            embodied_g=self._embodied_g(capture.cluster, figure),
            scope=account.scope if account is not None else "scope2", sizes_default=figure.sizes_default,
            avoided_green_g=avoided.green_gross_g, avoided_kv_g=avoided.kv_g,
            route_reason=capture.route_reason, finished_at=time.time(),
            usage_estimated=capture.usage_estimated, avoided_green_net_g=avoided.green_net_g,
        )  # fmt: skip

    def _embodied_g(self, cluster: str, figure: EnergyFigure) -> float:
        return self._settings.embodied.g_per_s(figure.gpu_type, figure.gpu_count) * figure.occupancy_s

    def _note_basis(self, region: str, intensity: Intensity) -> None:
        """Log once when a region's intensity changes basis (e.g. a live feed fell back to a yearly table)."""
        now = (intensity.signal, intensity.basis)
        before = self._basis.get(region)
        if before is not None and before != now:
            log.warning(
                "grid intensity of region %s changed basis from %s/%s to %s/%s (source %s); records carry "
                "the basis each figure used",
                region, before[0], before[1], now[0], now[1], intensity.source,
            )  # fmt: skip
        self._basis[region] = now

    # ---- cluster idle ----------------------------------------------------------------------------

    def _idle(self, cluster: str, idle_gpu_j: float, unallocated_s: float) -> None:
        """A metered interval was split: its unallocated idle energy and time become the cluster's carbon."""
        account = self._accounts.get(cluster)
        state = self._states.get(cluster)
        if account is None or state is None:
            return
        pue = self._energy.pue(cluster)
        idle_j = idle_gpu_j * (1.0 + self._energy.host_frac) * pue
        intensity = self._intensity.current(account.region)
        market = self._settings.market_factors.get(account.region)
        account.idle_j_total += idle_j
        account.idle_carbon_g_total += _grams(idle_j, intensity.g_per_kwh)
        account.idle_carbon_market_g_total += _grams(
            idle_j, market.g_per_kwh if market is not None else intensity.g_per_kwh
        )
        rate = self._settings.embodied.g_per_s(state.settings.gpu.type, state.settings.gpu.count)
        account.idle_embodied_g_total += rate * unallocated_s

    def cluster_accounts(self) -> list[ClusterAccount]:
        """Every configured cluster's account, with the energy service's latest meter totals; an unmetered
        self-hosted cluster's estimated idle energy since the last call is accounted now."""
        factor = 1.0 + self._energy.host_frac
        for row in self._energy.cluster_energy():
            account = self._accounts.get(row.cluster)
            if account is None:
                continue
            pue = self._energy.pue(row.cluster)
            account.metered = True
            account.power_w = row.power_w
            account.measured_j_total = row.measured_j_total * factor * pue
            account.attributed_j_total = row.attributed_j_total * factor * pue
        for cluster, idle_gpu_j, empty_s in self._energy.unmetered_idle():
            seen_j, seen_s = self._unmetered_seen.get(cluster, (0.0, 0.0))
            self._unmetered_seen[cluster] = (idle_gpu_j, empty_s)
            self._idle(cluster, idle_gpu_j - seen_j, empty_s - seen_s)
        return list(self._accounts.values())


def _work(capture: Capture) -> RequestWork:
    """The energy service's view of a request: tokens and timing, TTFT counted from reaching the cluster."""
    ttft_s = capture.ttft_s
    if ttft_s is not None and capture.residency is not None:
        ttft_s = max(ttft_s - (capture.residency.start_s - capture.started_mono), 0.0)
    return RequestWork(
        capture.model, capture.prompt_tokens, capture.completion_tokens, capture.cached_tokens,
        capture.duration_s, ttft_s,
    )  # fmt: skip


def _scope(kind: str) -> Scope:
    """Self-hosted: purchased electricity (Scope 2); external APIs: purchased services (Scope 3 cat. 1)."""
    return "scope3_cat1" if kind == "external" else "scope2"


def _grams(energy_j: float, g_per_kwh: float) -> float:
    """Grams CO2e of ``energy_j`` facility joules at ``g_per_kwh``."""
    return energy_j / J_PER_KWH * g_per_kwh


__all__ = ["Accountant", "ClusterAccount", "Residency"]
