"""Turns a finished request's capture into a record: energy × PUE × grid intensity = grams CO2e.

Runs in the proxy's ``finally``; it never raises into the response path (accounting must never break or
delay a request): a failure here loses a record's precision, never a request.
"""

from __future__ import annotations

import logging
import time

from .avoided import avoided_carbon
from .energy.service import EnergyFigure, EnergyService
from .intensity.base import Intensity
from .intensity.service import IntensityService
from .records import Capture, RecordSink, RequestRecord
from .routing.router import Router
from .units import J_PER_WH, carbon_g

log = logging.getLogger("bauxite.accounting")


class Accountant:
    def __init__(
        self, intensity: IntensityService, energy: EnergyService, router: Router, sink: RecordSink
    ) -> None:
        self._intensity = intensity
        self._energy = energy
        self._router = router
        self._sinks: list[RecordSink] = [sink]

    def add_sink(self, sink: RecordSink) -> None:
        """Also deliver records to ``sink`` (tests, exporters). ``submit`` must not block or raise."""
        self._sinks.append(sink)

    def grid_intensity(self, region: str) -> float:
        """For the x-bauxite-grid-intensity header; the intensity service itself never raises."""
        return self._intensity.current(region).g_per_kwh

    def response_estimate(self, capture: Capture) -> tuple[float, float] | None:
        """(energy_wh, carbon_g) known at response time, for the response headers; None if unknown."""
        try:
            figure = self._energy.estimate(capture)
            capture.energy_estimate = figure
            intensity = self._intensity.current(capture.region)
            pue = self._energy.pue(capture.cluster)
        except Exception:  # the response goes out without the two headers rather than failing
            log.exception("response-time estimate failed on cluster %s", capture.cluster)
            return None
        return figure.energy_j * pue / J_PER_WH, carbon_g(figure.energy_j, intensity.g_per_kwh, pue)

    def finish(self, capture: Capture) -> None:
        """Account a finished request (any outcome). Never raises."""
        try:
            if not capture.cluster:
                return  # refused before any cluster was chosen: nothing ran, nothing to account
            intensity = self._intensity.current(capture.region)
            self._energy.settle(capture, lambda figure: self._emit(capture, intensity, figure))
        except Exception:
            log.exception("accounting failed for a request on cluster %s", capture.cluster)

    def _emit(self, capture: Capture, intensity: Intensity, figure: EnergyFigure) -> None:
        try:
            record = self._record(capture, intensity, figure)
            for sink in self._sinks:
                sink.submit(record)
        except Exception:
            log.exception("could not record a request on cluster %s", capture.cluster)

    def _record(self, capture: Capture, intensity: Intensity, figure: EnergyFigure) -> RequestRecord:
        pue = self._energy.pue(capture.cluster)
        avoided = avoided_carbon(self._router.carbon, capture, figure.energy_j)
        return RequestRecord(
            model=capture.model,
            region=capture.region,
            cluster=capture.cluster,
            department=capture.department,
            endpoint=capture.endpoint,
            status=capture.status,
            http_status=capture.http_status,
            prompt_tokens=capture.prompt_tokens,
            completion_tokens=capture.completion_tokens,
            cached_tokens=capture.cached_tokens,
            ttft_s=capture.ttft_s if capture.ttft_s is not None else -1.0,
            duration_s=capture.duration_s,
            energy_j=figure.energy_j * pue,
            energy_j_min=figure.energy_j_min * pue,
            energy_j_max=figure.energy_j_max * pue,
            energy_measured=figure.source == "measured",
            intensity_g_per_kwh=intensity.g_per_kwh,
            intensity_source=intensity.source,
            pue=pue,
            carbon_g=carbon_g(figure.energy_j, intensity.g_per_kwh, pue),
            avoided_green_g=avoided.green_gross_g,
            avoided_kv_g=avoided.kv_g,
            route_reason=capture.route_reason,
            finished_at=time.time(),
            usage_estimated=capture.usage_estimated,
            avoided_green_net_g=avoided.green_net_g,
        )
