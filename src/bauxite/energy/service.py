"""Energy figures for finished requests: instant estimates, and measured GPU energy attributed per request.

* ``estimate`` — best figure now (response headers). Calibrated curves (or EcoLogits, by config) from the
  model's size, the cluster's GPUs and its current batch.
* ``settle`` — the final figure: at once for clusters without power telemetry; for metered clusters once the
  scrape interval covering the request's end has been split (≤ one interval + grace later), falling back to
  the estimate, flagged, when telemetry is stale or late.
* ``expected_j`` — expected energy of a request of a given size on a cluster, for the router: recent measured
  J per token on that cluster when known, else the estimator. Pure arithmetic over cached values.

Figures are IT energy at the configured boundary (``gpu``, or ``full`` = GPU + host share + idle capacity);
PUE is not included — multiply by ``pue(cluster)``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from ..records import Capture
from .attribution import ClusterLedger, Job
from .config import EnergySettings
from .estimator import Boundary, Overheads, RequestShape, Serving, estimators
from .meters import ClusterMeter, build_meter
from .params import EcoLogitsRepository, ModelParams, resolve_params

if TYPE_CHECKING:
    from ..clusters import ClusterState, Fleet
    from ..settings import Settings

log = logging.getLogger(__name__)
EnergySource = Literal["estimated", "measured"]
FALLBACK_J_PER_TOKEN = 0.3  # only if the estimator itself fails: never expected
MEASURED_ERROR_FRAC = 0.05  # GPU energy counters: ±5 %
EWMA_ALPHA = 0.2


@dataclass(frozen=True, slots=True)
class EnergyFigure:
    energy_j: float
    energy_j_min: float
    energy_j_max: float
    source: EnergySource = "estimated"
    method: str = "calibrated"  # calibrated | ecologits | measured | static_power | fallback
    boundary: Boundary = "full"
    flag: str = ""  # why a measured cluster's figure is an estimate: telemetry_stale | telemetry_late | …


@dataclass(frozen=True, slots=True)
class ClusterEnergy:
    cluster: str
    region: str
    power_w: float  # latest total GPU power
    attributed_j_total: float  # measured energy split to requests
    idle_j_total: float  # measured energy with no request in flight (or unclaimed)


class EnergyService:
    def __init__(
        self,
        settings: EnergySettings,
        clusters: list[ClusterState],
        repository: EcoLogitsRepository | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._clusters = {c.name: c for c in clusters}
        self._repository = repository if repository is not None else EcoLogitsRepository()
        self._overrides = {
            name: ModelParams.fixed(m.active_params_b, m.total_params_b, m.precision)
            for name, m in settings.models.items()
        }
        self._estimator = estimators()[settings.method]
        self._overheads = Overheads(settings.host_frac, settings.idle_capacity_frac, 1.0)
        self._params: dict[str, ModelParams] = {}
        self._j_per_work: dict[tuple[str, str], float] = {}  # measured GPU J per token-work, EWMA
        self._clock = clock
        self._meters: dict[str, ClusterMeter] = {}
        self._external = Serving(
            settings.external_serving.gpu,
            settings.external_serving.gpu_count,
            settings.external_serving.batch_size,
        )

    @classmethod
    def from_settings(cls, settings: Settings, fleet: Fleet) -> EnergyService:
        return cls(settings.energy, list(fleet.clusters))

    # ---- estimates -------------------------------------------------------------------------------

    def params(self, model: str) -> ModelParams:
        """Sizes of a model (cached per name; config overrides, EcoLogits, name, default)."""
        found = self._params.get(model)
        if found is None:
            found = resolve_params(model, self._overrides, self._repository)
            self._params[model] = found
        return found

    def _model_params(self, state: ClusterState | None, model: str) -> ModelParams:
        """Overrides under the client's or the upstream's name first, then lookups under either name."""
        names = [model]
        if state is not None and model in state.routes:
            names.append(state.routes[model].upstream_name)
        for name in names:
            if name in self._overrides:
                return self._overrides[name]
        for name in names:
            found = self.params(name)
            if found.source != "default":
                return found
        return self.params(model)

    def _serving(self, state: ClusterState | None) -> Serving:
        if state is None or state.settings.kind == "external":
            return self._external
        running = state.queue_running or state.in_flight
        batch = float(running) if running > 0 else self._settings.self_hosted_batch_size
        return Serving(state.settings.gpu.type, state.settings.gpu.count, batch)

    def _estimate(self, cluster: str, model: str, shape: RequestShape) -> EnergyFigure:
        state = self._clusters.get(cluster)
        est = self._estimator.estimate(
            shape,
            self._model_params(state, model),
            self._serving(state),
            self._settings.boundary,
            self._overheads,
        )
        return EnergyFigure(
            est.energy_j, est.energy_j_min, est.energy_j_max, "estimated", est.method, self._settings.boundary
        )

    def estimate(self, capture: Capture) -> EnergyFigure:
        """Best figure known now (used for response headers); never raises."""
        try:
            shape = RequestShape(
                capture.prompt_tokens,
                capture.completion_tokens,
                capture.duration_s or None,
                capture.cached_tokens,
            )
            return self._estimate(capture.cluster, capture.model, shape)
        except Exception:  # accounting must never fail a request
            log.exception("energy estimate failed for model %r", capture.model)
            energy_j = _fallback_j(capture.prompt_tokens, capture.completion_tokens)
            return EnergyFigure(
                energy_j, 0.2 * energy_j, 5.0 * energy_j, "estimated", "fallback", self._settings.boundary
            )

    def expected_j(self, cluster: str, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """Expected energy of a request of this size on ``cluster`` (for routing); never raises."""
        try:
            measured = self._j_per_work.get((cluster, model))
            if measured is not None:
                work = completion_tokens + self._settings.prefill_token_weight * prompt_tokens
                return measured * work * self._measured_factor()
            return self._estimate(cluster, model, RequestShape(prompt_tokens, completion_tokens)).energy_j
        except Exception:
            log.exception("expected energy failed for %r on %r", model, cluster)
            return _fallback_j(prompt_tokens, completion_tokens)

    def pue(self, cluster: str) -> float:
        """The cluster's PUE: configured, else ``pue_external`` (1.1) or ``pue_self_hosted`` (1.2) by kind."""
        state = self._clusters.get(cluster)
        if state is not None and state.settings.pue is not None:
            return state.settings.pue
        if state is not None and state.settings.kind == "vllm":
            return self._settings.pue_self_hosted
        return self._settings.pue_external

    def _measured_factor(self) -> float:
        """GPU joules → boundary joules for measured energy (idle capacity is measured, host is not)."""
        return 1.0 + self._settings.host_frac if self._settings.boundary == "full" else 1.0

    # ---- settlement ------------------------------------------------------------------------------

    def settle(self, capture: Capture, done: Callable[[EnergyFigure], None]) -> None:
        """Call ``done`` with the final figure: now for estimates, later once measured energy is known."""
        once = _Once(done)
        try:
            meter = self._meters.get(capture.cluster)
            loop = _running_loop()
            if meter is None or loop is None or capture.duration_s < 0:
                once(capture.energy_estimate or self.estimate(capture))
                return
            if meter.stale(self._clock()):
                once(_flagged(capture.energy_estimate or self.estimate(capture), "telemetry_stale"))
                return
            self._track(capture, meter, loop, once)
        except Exception:
            log.exception("energy settlement failed for model %r", capture.model)
            once(self.estimate(capture))

    def _track(
        self, capture: Capture, meter: ClusterMeter, loop: asyncio.AbstractEventLoop, once: _Once
    ) -> None:
        start_s = capture.started_mono
        end_s = start_s + capture.duration_s
        prefill_end_s = start_s + min(
            capture.ttft_s if capture.ttft_s is not None else 0.0, capture.duration_s
        )
        job = Job(
            start_s,
            end_s,
            prefill_end_s,
            max(capture.prompt_tokens - capture.cached_tokens, 0),
            capture.completion_tokens,
        )

        def final(gpu_j: float, trustworthy: bool) -> None:
            handle.cancel()
            if trustworthy:
                once(self._measured_figure(capture, gpu_j, meter.method))
            else:
                once(_flagged(self.estimate(capture), "telemetry_reset"))

        def late() -> None:
            meter.ledger.drop(job)
            once(_flagged(self.estimate(capture), "telemetry_late"))

        now_s = self._clock()
        handle = loop.call_later(max(max(end_s, now_s) + meter.deadline_s - now_s, 0.0), late)
        job.on_final = final
        meter.pending[handle] = late
        once.after = lambda: _forget(meter.pending, handle)
        meter.ledger.add(job)

    def _measured_figure(self, capture: Capture, gpu_j: float, method: str) -> EnergyFigure:
        work = capture.completion_tokens + self._settings.prefill_token_weight * max(
            capture.prompt_tokens - capture.cached_tokens, 0
        )
        if work > 0 and method == "measured":
            key = (capture.cluster, capture.model)
            old = self._j_per_work.get(key)
            value = gpu_j / work
            self._j_per_work[key] = value if old is None else old + EWMA_ALPHA * (value - old)
        energy_j = gpu_j * self._measured_factor()
        source: EnergySource = "measured" if method == "measured" else "estimated"
        return EnergyFigure(
            energy_j,
            energy_j * (1 - MEASURED_ERROR_FRAC),
            energy_j * (1 + MEASURED_ERROR_FRAC),
            source,
            method,
            self._settings.boundary,
        )

    # ---- telemetry -------------------------------------------------------------------------------

    def cluster_energy(self) -> list[ClusterEnergy]:
        """Latest power and running energy totals of every cluster with power telemetry."""
        return [
            ClusterEnergy(name, meter.region, meter.power_w, meter.ledger.attributed_j, meter.ledger.idle_j)
            for name, meter in self._meters.items()
        ]

    async def start(self) -> None:
        """Start one background scrape per cluster with a power source; requests never wait on them."""
        for state in self._clusters.values():
            meter = build_meter(state, self._settings, self._clock)
            if meter is not None:
                self._meters[state.name] = meter
                meter.start()

    async def stop(self) -> None:
        for meter in self._meters.values():
            await meter.stop()
        self._meters.clear()

    def ledger(self, cluster: str) -> ClusterLedger | None:
        meter = self._meters.get(cluster)
        return meter.ledger if meter is not None else None


class _Once:
    """Calls ``done`` at most once, whatever path gets there first."""

    def __init__(self, done: Callable[[EnergyFigure], None]) -> None:
        self._done: Callable[[EnergyFigure], None] | None = done
        self.after: Callable[[], None] | None = None

    def __call__(self, figure: EnergyFigure) -> None:
        done, self._done = self._done, None
        if done is None:
            return
        if self.after is not None:
            self.after()
        try:
            done(figure)
        except Exception:
            log.exception("energy settlement callback failed")


def _fallback_j(prompt_tokens: int, completion_tokens: int) -> float:
    """A last-resort figure, used only when the estimator itself raised."""
    return FALLBACK_J_PER_TOKEN * (completion_tokens + 0.25 * prompt_tokens)


def _flagged(figure: EnergyFigure, flag: str) -> EnergyFigure:
    return replace(figure, flag=flag)


def _forget(pending: dict[asyncio.TimerHandle, Callable[[], None]], handle: asyncio.TimerHandle) -> None:
    pending.pop(handle, None)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
