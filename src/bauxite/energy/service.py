"""Energy figures per request, all at one boundary: GPU + host share (+ PUE, applied by ``EnergyFigure``).

The service speaks its own types: ``begin`` when a request reaches a cluster (a ``Residency``), ``end`` when
it leaves, then a ``RequestWork`` (its tokens and timing) in and an ``EnergyFigure`` out:

* ``estimate`` — best figure now (response headers, the ``bauxite_carbon`` object): the estimator's GPU
  energy at the batch the cluster actually ran over the request's life (time-averaged concurrency of the
  same model on the cluster), so a stream and a non-stream of the same request get the same figure; plus
  the resident-idle energy of the rest of the time it held the cluster (its compute time is inside the
  estimator's figure), so a short request (an embedding) is estimated at the boundary it is settled at.
* ``settle`` — the final figure: at once for clusters without power telemetry; for metered clusters once the
  scrape interval covering the request's end has been split (``attribution.ClusterLedger``), falling back to
  the estimate, flagged, when telemetry is stale or late.
* ``expected_j`` — expected IT energy of a request of a given size on a cluster, for the router.

Every figure keeps its parts: ``gpu_j`` (measured or estimated GPU energy, including the resident-idle
share ``gpu_idle_j`` of the time the request was resident), ``host_j`` (host CPU/DRAM, ``host_frac`` × GPU)
and ``pue``; ``it_j`` = GPU + host, ``energy_j`` = IT × PUE (facility). ``occupancy_s`` is the cluster time
charged to the request (its residency share), the basis of its embodied emissions.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from . import curves
from .attribution import ClusterLedger, Job
from .config import EnergySettings
from .estimator import (
    CalibratedEstimator,
    Overheads,
    PreparedCalibrated,
    RequestShape,
    Serving,
    estimators,
    request_compute_s,
)
from .figures import (
    ClusterEnergy,
    EnergyFigure,
    EnergySource,
    RequestWork,
    Residency,
    token_weights,
)
from .meters import ClusterMeter, build_meter, idle_w_per_gpu
from .occupancy import Occupancy
from .params import EcoLogitsRepository, ModelParams, resolve_params
from .providers import provider_pue

if TYPE_CHECKING:
    from ..clusters import ClusterState, Fleet
    from ..settings import Settings

log = logging.getLogger(__name__)
FALLBACK_J_PER_TOKEN = 0.3  # only if the estimator itself fails: never expected
MEASURED_ERROR_FRAC = 0.05  # GPU energy counters: ±5 %
IDLE_ERROR_FRAC = 0.5
"""Range of the resident-idle part of an estimate (÷ / × 1.5): the configured (or calibrated, 20 % of board
power) idle power against a board's true floor with the model resident (about 9–21 % of board power across
H100/A100 boards, clocks and temperature), plus the power meter's timing jitter, which a millisecond-long
request feels whole."""
EWMA_ALPHA = 0.2
IdleListener = Callable[[str, float, float], None]  # (cluster, idle GPU joules, unallocated seconds)


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
        self._overrides = {name: m.to_params(name) for name, m in settings.models.items()}
        self._estimator = estimators()[settings.method]
        self._params: dict[str, ModelParams] = {}
        self._j_per_work: dict[tuple[str, str], float] = {}  # measured GPU J per token-work, EWMA
        self._clock = clock
        self._meters: dict[str, ClusterMeter] = {}
        self._occupancy: dict[str, Occupancy] = {}
        self._model_occupancy: dict[tuple[str, str], Occupancy] = {}
        self._idle_listeners: list[IdleListener] = []
        self._provider_pue: dict[str, float] = {}  # external cluster -> provider PUE (0: none known)
        self._external = Serving(
            settings.external_serving.gpu,
            settings.external_serving.gpu_count,
            settings.external_serving.batch_size,
        )
        # What an estimate needs of a (cluster, model) beyond the request itself; all of it comes from
        # configuration, so it is worked out on the first request and kept.
        self._plans: dict[tuple[str, str], _Plan] = {}

    @classmethod
    def from_settings(cls, settings: Settings, fleet: Fleet) -> EnergyService:
        return cls(settings.energy, list(fleet.clusters))

    def on_idle(self, listener: IdleListener) -> None:
        """Call ``listener(cluster, idle_gpu_j, unallocated_s)`` after every split interval."""
        self._idle_listeners.append(listener)

    # ---- sizes and serving -----------------------------------------------------------------------

    def params(self, model: str) -> ModelParams:
        """Sizes of a model (cached per name; config overrides, EcoLogits, name, default)."""
        found = self._params.get(model)
        if found is None:
            found = resolve_params(model, self._overrides, self._repository)
            self._params[model] = found
        return found

    def model_params(self, cluster: str, model: str) -> ModelParams:
        """Overrides under the client's or the upstream's name first, then lookups under either name."""
        state = self._clusters.get(cluster)
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

    def pue(self, cluster: str) -> float:
        """The cluster's PUE: configured; else for an external API its provider's published PUE (EcoLogits'
        table, by URL host), else ``pue_external`` (1.1); ``pue_self_hosted`` (1.2) for vllm clusters."""
        state = self._clusters.get(cluster)
        if state is not None and state.settings.pue is not None:
            return state.settings.pue
        if state is not None and state.settings.kind == "vllm":
            return self._settings.pue_self_hosted
        if state is not None:
            found = self._provider_pue.get(cluster)
            if found is None:
                found = self._provider_pue[cluster] = provider_pue(state.settings.url) or 0.0
            if found >= 1.0:
                return found
        return self._settings.pue_external

    def is_external(self, cluster: str) -> bool:
        state = self._clusters.get(cluster)
        return state is None or state.settings.kind == "external"

    # ---- residency ------------------------------------------------------------------------------

    def begin(self, cluster: str, model: str) -> Residency:
        """A request reaches ``cluster``; never raises."""
        now_s = self._clock()
        residency = Residency(cluster, model, now_s)
        try:
            residency.cluster_reading = self._occupancy.setdefault(cluster, Occupancy()).enter(now_s)
            key = (cluster, model)
            residency.model_reading = self._model_occupancy.setdefault(key, Occupancy()).enter(now_s)
            meter = self._meters.get(cluster)
            if meter is not None:
                decode_w, prefill_w, _ = self._token_weights(cluster, model)
                residency.job = Job(now_s, model, decode_w, prefill_w)
                meter.ledger.open(residency.job)
        except Exception:
            log.exception("could not register a request on cluster %s", cluster)
        return residency

    def end(self, residency: Residency) -> None:
        """The request left the cluster (finished, failed or abandoned); idempotent, never raises."""
        if residency.end_s is not None:
            return
        now_s = self._clock()
        residency.end_s = now_s
        if residency.job is not None:
            residency.job.leave(now_s)
        try:
            self._occupancy[residency.cluster].leave(now_s)
            self._model_occupancy[(residency.cluster, residency.model)].leave(now_s)
        except Exception:
            log.exception("could not unregister a request on cluster %s", residency.cluster)

    def abandon(self, residency: Residency) -> None:
        """A failed attempt that will never be reported: its time on the cluster becomes idle."""
        self.end(residency)
        meter = self._meters.get(residency.cluster)
        if meter is not None and residency.job is not None:
            meter.ledger.drop(residency.job)

    def _token_weights(
        self, cluster: str, model: str, batch: float | None = None
    ) -> tuple[float, float, float]:
        """Modelled dynamic GPU joules per output and per prompt token of ``model`` on ``cluster``, and its
        decode step time, at ``batch`` running sequences of it (default: the configured self-hosted batch)."""
        state = self._clusters[cluster]
        params = self.model_params(cluster, model)
        gpu = curves.gpu_spec(state.settings.gpu.type)
        count = state.settings.gpu.count
        return token_weights(params, gpu, count, batch or self._settings.self_hosted_batch_size)

    # ---- estimates -------------------------------------------------------------------------------

    def _serving(self, residency: Residency, params: ModelParams, now_s: float) -> tuple[Serving, float]:
        """Serving assumptions and the cluster seconds charged (residency ÷ mean concurrency)."""
        batch, cluster_s = self._batch(residency, now_s)
        state = self._clusters.get(residency.cluster)
        if state is None or state.settings.kind == "external":
            return self._external, cluster_s
        return Serving(state.settings.gpu.type, state.settings.gpu.count, batch), cluster_s

    def _plan(self, cluster: str, model: str) -> _Plan | None:
        """The fixed part of an estimate of ``model`` on ``cluster`` (calibrated method only; None for
        another method, which takes the general path)."""
        key = (cluster, model)
        found = self._plans.get(key)
        if found is not None or not isinstance(self._estimator, CalibratedEstimator):
            return found
        state = self._clusters.get(cluster)
        params = self.model_params(cluster, model)
        if state is None or state.settings.kind == "external":
            serving = self._external
        else:
            serving = Serving(state.settings.gpu.type, state.settings.gpu.count)
        prepared = self._estimator.prepare(params, serving)
        idle_w = self._idle_w(cluster, serving.gpu_type) * prepared.gpu_count
        found = self._plans[key] = _Plan(
            prepared, self.pue(cluster), idle_w, serving.gpu_type, self._settings.host_frac
        )
        return found

    def _batch(self, residency: Residency, now_s: float) -> tuple[float, float]:
        """(mean batch of the request's model over its residency, cluster seconds charged: residency ÷ the
        cluster's mean concurrency); an external API's fixed batch."""
        state = self._clusters.get(residency.cluster)
        end_s = residency.end_s if residency.end_s is not None else now_s
        span_s = max(end_s - residency.start_s, 0.0)
        if state is None or state.settings.kind == "external":
            return self._external.batch_size, span_s / max(self._external.batch_size, 1.0)
        model_occ = self._model_occupancy.get((residency.cluster, residency.model))
        cluster_occ = self._occupancy.get(residency.cluster)
        if model_occ is None or cluster_occ is None or span_s <= 0:
            batch = cluster_batch = self._settings.self_hosted_batch_size
        else:
            batch = model_occ.mean_since(residency.model_reading, residency.start_s, end_s)
            cluster_batch = cluster_occ.mean_since(residency.cluster_reading, residency.start_s, end_s)
        return batch, span_s / cluster_batch

    def estimate(self, work: RequestWork, residency: Residency) -> EnergyFigure:
        """Best figure known now; never raises."""
        try:
            plan = self._plan(residency.cluster, work.model)
            if plan is not None:
                return self._planned(plan, work, residency)
        except Exception:  # the general path below logs and falls back
            pass
        pue = self.pue(residency.cluster)
        try:
            params = self.model_params(residency.cluster, work.model)
            serving, occupancy_s = self._serving(residency, params, self._clock())
            shape = RequestShape(
                work.prompt_tokens, work.completion_tokens, work.duration_s or None, work.cached_tokens
            )
            est = self._estimator.estimate(shape, params, serving, "gpu", Overheads(pue=1.0))
            count = serving.gpus_for(params)
            idle_w = self._idle_w(residency.cluster, serving.gpu_type) * count
            # The estimator's figure covers the request's own compute time; the rest of the time it held the
            # cluster is resident-idle energy that measured settlement charges it too (one boundary).
            compute_s = request_compute_s(shape, params, serving)
            waiting_j = idle_w * max(occupancy_s - compute_s, 0.0)
            gpu_j = est.energy_j + waiting_j
            idle_j = min(idle_w * max(occupancy_s, compute_s), gpu_j)
            factor = (1.0 + self._settings.host_frac) * pue
            low_j = est.energy_j_min + waiting_j / (1.0 + IDLE_ERROR_FRAC)
            high_j = est.energy_j_max + waiting_j * (1.0 + IDLE_ERROR_FRAC)
            return EnergyFigure(
                gpu_j, idle_j, gpu_j * self._settings.host_frac, pue, low_j * factor, high_j * factor,
                occupancy_s, count, serving.gpu_type, "estimated", est.method,
                sizes_default=est.sizes_default,
            )  # fmt: skip
        except Exception:  # accounting must never fail a request
            log.exception("energy estimate failed for model %r", work.model)
            gpu_j = _fallback_j(work.prompt_tokens, work.completion_tokens)
            factor = (1.0 + self._settings.host_frac) * pue
            return EnergyFigure(
                gpu_j, 0.0, gpu_j * self._settings.host_frac, pue,
                0.2 * gpu_j * factor, 5.0 * gpu_j * factor, method="fallback",
            )  # fmt: skip

    def _planned(self, plan: _Plan, work: RequestWork, residency: Residency) -> EnergyFigure:
        """``estimate``'s figure through the prepared curves: the same floats as the general path.

        The figure is kept on the residency with the physics' inputs, and handed out again while they are
        unchanged: a request is estimated for its response headers and settled moments later, with nothing
        in between that changes the figure."""
        batch, occupancy_s = self._batch(residency, self._clock())
        key = (work.model, work.prompt_tokens, work.completion_tokens, work.cached_tokens, batch, occupancy_s)
        if residency.figure is not None and residency.figure_key == key:
            return residency.figure
        est_j, est_j_min, est_j_max, compute_s = plan.prepared.gpu_figures(
            work.prompt_tokens, work.completion_tokens, work.cached_tokens, batch
        )
        idle_w = plan.idle_w
        # The estimator's figure covers the request's own compute time; the rest of the time it held the
        # cluster is resident-idle energy that measured settlement charges it too (one boundary).
        waiting_j = idle_w * max(occupancy_s - compute_s, 0.0)
        gpu_j = est_j + waiting_j
        idle_j = min(idle_w * max(occupancy_s, compute_s), gpu_j)
        pue, host_frac = plan.pue, plan.host_frac
        factor = (1.0 + host_frac) * pue
        low_j = est_j_min + waiting_j / (1.0 + IDLE_ERROR_FRAC)
        high_j = est_j_max + waiting_j * (1.0 + IDLE_ERROR_FRAC)
        figure = EnergyFigure(
            gpu_j, idle_j, gpu_j * host_frac, pue, low_j * factor, high_j * factor, occupancy_s,
            plan.prepared.gpu_count, plan.gpu_type, "estimated", "calibrated",
            sizes_default=plan.prepared.params.sizes_default,
        )  # fmt: skip
        residency.figure, residency.figure_key = figure, key
        return figure

    def _idle_w(self, cluster: str, gpu_type: str) -> float:
        state = self._clusters.get(cluster)
        if state is not None and state.settings.kind == "vllm":
            return idle_w_per_gpu(state, state.settings.power)
        return curves.idle_w(curves.gpu_spec(gpu_type))

    def expected_j(self, cluster: str, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """Expected IT energy (GPU + host, no PUE) of a request of this size on ``cluster``; never raises."""
        host = 1.0 + self._settings.host_frac
        try:
            measured = self._j_per_work.get((cluster, model))
            if measured is not None:
                work = completion_tokens + self._settings.prefill_token_weight * prompt_tokens
                return measured * work * host
            state = self._clusters.get(cluster)
            params = self.model_params(cluster, model)
            if state is None or state.settings.kind == "external":
                serving = self._external
            else:
                batch = self._settings.self_hosted_batch_size
                serving = Serving(state.settings.gpu.type, state.settings.gpu.count, batch)
            shape = RequestShape(prompt_tokens, completion_tokens)
            return self._estimator.estimate(shape, params, serving, "gpu", Overheads(pue=1.0)).energy_j * host
        except Exception:
            log.exception("expected energy failed for %r on %r", model, cluster)
            return _fallback_j(prompt_tokens, completion_tokens) * host

    # ---- settlement ------------------------------------------------------------------------------

    def settle(self, work: RequestWork, residency: Residency, done: Callable[[EnergyFigure], None]) -> None:
        """Call ``done`` with the final figure: now for estimates, later once measured energy is known.
        ``end`` must have been called. Never raises."""
        once = _Once(done)
        try:
            meter = self._meters.get(residency.cluster)
            loop = _running_loop()
            if meter is None or loop is None or residency.job is None:
                once(self.estimate(work, residency))
                return
            if meter.stale(self._clock()):
                meter.ledger.drop(residency.job)
                once(replace(self.estimate(work, residency), flag="telemetry_stale"))
                return
            self._track(work, residency, residency.job, meter, loop, once)
        except Exception:
            log.exception("energy settlement failed for model %r", work.model)
            self.abandon(residency)  # never leave a job in the ledger that nobody will settle
            once(self.estimate(work, residency))

    def _track(
        self,
        work: RequestWork,
        residency: Residency,
        job: Job,
        meter: ClusterMeter,
        loop: asyncio.AbstractEventLoop,
        once: _Once,
    ) -> None:
        end_s = residency.end_s if residency.end_s is not None else self._clock()
        ttft_s = work.ttft_s if work.ttft_s is not None else 0.0
        uncached = max(work.prompt_tokens - work.cached_tokens, 0)
        job.finish(end_s, residency.start_s + ttft_s, uncached, work.completion_tokens)

        def final(finished: Job, trustworthy: bool) -> None:
            handle.cancel()
            if trustworthy:
                once(self._measured_figure(work, residency, finished, meter.method))
            else:
                once(replace(self.estimate(work, residency), flag="telemetry_reset"))

        def late() -> None:
            meter.ledger.drop(job)
            once(replace(self.estimate(work, residency), flag="telemetry_late"))

        now_s = self._clock()
        handle = loop.call_later(max(max(end_s, now_s) + meter.deadline_s - now_s, 0.0), late)
        job.on_final = final
        meter.pending[handle] = late
        once.after = lambda: meter.pending.pop(handle, None)
        meter.ledger.close_job(job)

    def _measured_figure(
        self, work: RequestWork, residency: Residency, job: Job, method: str
    ) -> EnergyFigure:
        uncached = max(work.prompt_tokens - work.cached_tokens, 0)
        token_work = work.completion_tokens + self._settings.prefill_token_weight * uncached
        if token_work > 0 and method == "measured":
            key = (residency.cluster, work.model)
            old = self._j_per_work.get(key)
            value = job.gpu_j / token_work
            self._j_per_work[key] = value if old is None else old + EWMA_ALPHA * (value - old)
        state = self._clusters[residency.cluster]
        pue = self.pue(residency.cluster)
        facility_j = job.gpu_j * (1.0 + self._settings.host_frac) * pue
        source: EnergySource = "measured" if method == "measured" else "estimated"
        return EnergyFigure(
            job.gpu_j, job.static_j, job.gpu_j * self._settings.host_frac, pue,
            facility_j * (1 - MEASURED_ERROR_FRAC), facility_j * (1 + MEASURED_ERROR_FRAC), job.occupancy_s,
            state.settings.gpu.count, state.settings.gpu.type, source, method,
            sizes_default=self.model_params(residency.cluster, work.model).sizes_default,
        )  # fmt: skip

    # ---- telemetry -------------------------------------------------------------------------------

    def cluster_energy(self) -> list[ClusterEnergy]:
        """Latest power and running GPU-energy totals of every cluster with power telemetry."""
        rows = []
        for name, meter in self._meters.items():
            ledger = meter.ledger
            totals = (ledger.attributed_j, ledger.idle_j, ledger.measured_j, ledger.unallocated_s)
            rows.append(ClusterEnergy(name, meter.region, meter.power_w, *totals))
        return rows

    @property
    def host_frac(self) -> float:
        return self._settings.host_frac

    def metered(self, cluster: str) -> bool:
        return cluster in self._meters

    async def start(self) -> None:
        """Start one background scrape per cluster with a power source; requests never wait on them."""
        for state in self._clusters.values():
            weigh = functools.partial(self._token_weights, state.name)
            meter = build_meter(state, self._settings, self._clock, self._idle_of(state.name), weigh)
            if meter is not None:
                self._meters[state.name] = meter
                meter.start()
            elif state.settings.kind == "vllm":  # unmetered: count its empty time from now
                self._occupancy.setdefault(state.name, Occupancy()).advance(self._clock())

    def unmetered_idle(self) -> list[tuple[str, float, float]]:
        """(cluster, estimated idle GPU joules, seconds with no request resident), running totals, for every
        self-hosted cluster without power telemetry: its resident-idle power over its empty time."""
        now_s = self._clock()
        rows = []
        for name, state in self._clusters.items():
            occupancy = self._occupancy.get(name)
            if state.settings.kind != "vllm" or name in self._meters or occupancy is None:
                continue
            occupancy.advance(now_s)
            idle_w = self._idle_w(name, state.settings.gpu.type) * state.settings.gpu.count
            rows.append((name, idle_w * occupancy.empty_s, occupancy.empty_s))
        return rows

    def _idle_of(self, cluster: str) -> Callable[[float, float], None]:
        def report(idle_j: float, unallocated_s: float) -> None:
            for listener in self._idle_listeners:
                try:
                    listener(cluster, idle_j, unallocated_s)
                except Exception:
                    log.exception("idle-energy listener failed for cluster %s", cluster)

        return report

    async def stop(self) -> None:
        for meter in self._meters.values():
            await meter.stop()
        self._meters.clear()

    def ledger(self, cluster: str) -> ClusterLedger | None:
        meter = self._meters.get(cluster)
        return meter.ledger if meter is not None else None


@dataclass(frozen=True, slots=True)
class _Plan:
    """What an estimate of one model on one cluster needs besides the request (all from configuration)."""

    prepared: PreparedCalibrated
    pue: float
    idle_w: float  # resident-idle power of all the GPUs serving the model
    gpu_type: str
    host_frac: float


class _Once:
    """Calls ``done`` at most once, whatever path gets there first."""

    def __init__(self, done: Callable[[EnergyFigure], None]) -> None:
        self._done: Callable[[EnergyFigure], None] | None = done
        self.after: Callable[[], object] | None = None

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
    """A last-resort GPU figure, used only when the estimator itself raised."""
    return FALLBACK_J_PER_TOKEN * (completion_tokens + 0.25 * prompt_tokens)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


__all__ = [
    "ClusterEnergy",
    "EnergyFigure",
    "EnergyService",
    "EnergySource",
    "RequestWork",
    "Residency",
    "token_weights",
]
