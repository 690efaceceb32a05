"""``bauxite serve --workers N``: a supervisor forking N gateway workers and one telemetry hub.

The supervisor runs no event loop and serves nothing. Before forking it creates the shared telemetry
buffer (``shm.SharedRings``), reserves the public port with ``SO_REUSEPORT`` (so ``--port 0`` resolves once
and a port held by another program, or by another ``--workers`` gateway, fails at start with "Address
already in use", not in a restart loop), and opens the hub's loopback
socket (kept across hub restarts, so workers can always reach it). Then it waits for children:

- a worker that dies is replaced (same region, same port); the requests it had in flight are written into its
  region as error records first, so the totals still count every request that reached the gateway;
- a hub that dies is replaced; records wait in the shared buffer meanwhile and nothing is lost but the
  hub's running totals (Prometheus sees a counter reset, which ``rate()`` handles);
- SIGTERM or SIGINT stops the workers first (each finishes its in-flight requests), then the hub (which
  drains the last records and closes the current report window); a repeated signal hurries that stop (kills
  the draining workers, then the hub) but never leaves children behind;
- children get SIGTERM from the kernel when the supervisor dies, even by SIGKILL (Linux).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..records import RequestRecord
from ..server import SHUTDOWN_TIMEOUT_S, bind_socket, run
from ..settings import Settings
from ..telemetry.codec import packer
from ..telemetry.labels import LabelTables
from .board import InFlightBoard
from .feeds import FeedBoard
from .roles import run_hub, run_worker
from .scrapes import ScrapeBoard
from .shm import Region, SharedRings

log = logging.getLogger("bauxite.workers")
RESTART_BACKOFF_S = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0)  # by how many quick deaths came just before
MAX_WORKERS = 256  # each worker is a full gateway (~100 MB resident); more than a host's cores only contend
QUICK_DEATH_S = 5.0  # a child that dies sooner than this after starting counts as crash-looping
PR_SET_PDEATHSIG = 1  # linux/prctl.h
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: the container's CPU limit, if any


class _Stop(Exception):
    """Raised from the signal handler to leave the blocking wait."""


def usable_cpus(cgroup_cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The CPUs this process may use: its CPU set, lowered to its cgroup v2 CPU quota (a container's CPU
    limit) rounded up, when one is set."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = _cpu_quota(cgroup_cpu_max)
    return max(1, min(cpus, quota)) if quota is not None else cpus


def worker_count(text: str, cgroup_cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """Parse ``--workers``: an integer from 1 to ``MAX_WORKERS``, or ``auto`` for ``usable_cpus()`` (at most
    ``MAX_WORKERS``). Raises ``ValueError`` saying what is accepted."""
    if text == "auto":
        return min(usable_cpus(cgroup_cpu_max), MAX_WORKERS)
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_WORKERS:
        raise ValueError(f"--workers must be an integer from 1 to {MAX_WORKERS} or 'auto', got {text!r}")
    return value


def _cpu_quota(path: Path) -> int | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` ("<quota> <period>" or "max <period>"), rounded up."""
    try:
        quota, period = path.read_text().split()[:2]
        return None if quota == "max" else math.ceil(int(quota) / int(period))
    except (OSError, ValueError, ZeroDivisionError):
        return None


@dataclass
class _Child:
    role: str  # "hub" or "worker"
    index: int  # region index for workers, -1 for the hub
    started: float = field(default_factory=time.monotonic)
    quick_deaths: int = 0


class Supervisor:
    def __init__(self, settings: Settings, host: str, port: int, workers: int) -> None:
        self.settings = settings
        self.host = host
        self.workers = workers
        self.shared = SharedRings(workers, lock_memory=settings.telemetry.lock_memory)
        self.board = InFlightBoard(workers, [c.name for c in settings.clusters])
        self.feeds = FeedBoard()
        self.scrapes = ScrapeBoard([c.name for c in settings.clusters])
        self._pack = packer(LabelTables.from_settings(settings))
        self.pid = os.getpid()
        self._reserve = _reserve_port(host, port)
        self.port = int(self._reserve.getsockname()[1])
        self._hub_sock = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.hub_url = f"http://127.0.0.1:{self._hub_sock.getsockname()[1]}"
        self.children: dict[int, _Child] = {}
        self.lost_requests = 0
        self.signals_while_stopping = 0

    def serve(self) -> int:
        """Fork everything, keep it running until SIGTERM/SIGINT, then stop it in order."""
        previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._spawn(_Child("hub", -1))
            for index in range(self.workers):
                self._spawn(_Child("worker", index))
            log.info(
                "bauxite gateway listening on http://%s:%d (%d workers, %d clusters)",
                self.host, self.port, self.workers, len(self.settings.clusters),
            )  # fmt: skip
            while True:
                pid, status = os.waitpid(-1, 0)
                self._replace(pid, status)
        except _Stop:
            pass
        finally:
            # While stopping, a repeated signal must not end the supervisor (its children would be left
            # running under PID 1): it hurries the stop instead (see ``_shutdown``).
            for sig in previous:
                signal.signal(sig, self._count_signal)
            try:
                self._shutdown()
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
        return 0

    def _count_signal(self, signum: int, frame: object) -> None:
        self.signals_while_stopping += 1
        log.warning("signal %d while stopping: stopping the %s now", signum,
                    "workers" if self.signals_while_stopping == 1 else "telemetry hub")  # fmt: skip

    def _replace(self, pid: int, status: int) -> None:
        child = self.children.pop(pid, None)
        if child is None:
            return
        code = os.waitstatus_to_exitcode(status)
        if child.role == "worker":
            lost = self.record_lost(self.shared.regions[child.index])
            self.board.clear(child.index)
            log.warning("worker %d (pid %d) exited with %d; %d in-flight requests recorded as errors; "
                        "restarting", child.index, pid, code, lost)  # fmt: skip
        else:
            log.warning("telemetry hub (pid %d) exited with %d; restarting", pid, code)
        quick = time.monotonic() - child.started < QUICK_DEATH_S
        child.quick_deaths = child.quick_deaths + 1 if quick else 0
        time.sleep(RESTART_BACKOFF_S[min(child.quick_deaths, len(RESTART_BACKOFF_S) - 1)])
        self._spawn(_Child(child.role, child.index, quick_deaths=child.quick_deaths))

    def record_lost(self, region: Region) -> int:
        """Write one error record per request the dead worker had in flight (no worker writes meanwhile)."""
        lost = region.in_flight
        fields = self._pack(lost_request(time.time()))
        for _ in range(lost):
            region.append(*fields)
        region.set_in_flight(0)
        self.lost_requests += lost
        return lost

    def _spawn(self, child: _Child) -> None:
        child.started = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the supervisor's code
            code = 1
            try:
                code = self._child_main(child)
            except BaseException:
                log.exception("%s %d failed", child.role, child.index)
            finally:
                logging.shutdown()
                os._exit(code)
        self.children[pid] = child

    def _child_main(self, child: _Child) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)  # the child's event loop installs its own handlers
        if not stop_with_parent(self.pid):
            return 0  # the supervisor is already gone: nothing would ever stop or replace this child
        self._reserve.close()
        use_uvloop = self.settings.server.use_uvloop
        if child.role == "hub":
            hub = run_hub(self.settings, self.shared, self.feeds, self.scrapes, self._hub_sock)
            return run(hub, use_uvloop)
        self._hub_sock.close()
        worker = run_worker(
            self.settings,
            self.shared,
            self.board,
            self.feeds,
            self.scrapes,
            child.index,
            self.host,
            self.port,
            self.hub_url,
        )
        return run(worker, use_uvloop)

    def _shutdown(self) -> None:
        """Stop the workers (each drains its in-flight requests), then the hub (it drains the last records
        and closes the current window), each within ``SHUTDOWN_TIMEOUT_S`` + 5 s. A repeated SIGTERM/SIGINT
        kills the workers still draining (their in-flight requests are recorded as errors, as for a crash)
        and the hub still gets its orderly stop; one more kills the hub too."""
        workers = [pid for pid, c in self.children.items() if c.role == "worker"]
        hubs = [pid for pid, c in self.children.items() if c.role == "hub"]
        killed = _stop(workers, SHUTDOWN_TIMEOUT_S + 5, lambda: self.signals_while_stopping >= 1)
        for pid in killed:
            self.record_lost(self.shared.regions[self.children[pid].index])
        _stop(hubs, SHUTDOWN_TIMEOUT_S + 5, lambda: self.signals_while_stopping >= 2)
        self.children.clear()
        self._reserve.close()
        self._hub_sock.close()


def lost_request(finished_at: float) -> RequestRecord:
    """What is known of a request a dead worker had in flight: that it failed, and nothing else (model,
    department and endpoint are the fallback label "other"; it was never routed as far as anyone knows)."""
    return RequestRecord(
        model="", region="", cluster="", department="", endpoint="chat", status="error", http_status=0,
        prompt_tokens=0, completion_tokens=0, cached_tokens=0, ttft_s=-1.0, duration_s=0.0, energy_j=0.0,
        energy_j_min=0.0, energy_j_max=0.0, gpu_j=0.0, gpu_idle_j=0.0, host_j=0.0, energy_measured=False,
        intensity_g_per_kwh=0.0, intensity_source="", intensity_signal="average", intensity_basis="lifecycle",
        pue=1.0, carbon_g=0.0, market_g_per_kwh=0.0, carbon_market_g=0.0, market_factor=False,
        embodied_g=0.0, scope="scope2", sizes_default=False, avoided_green_g=0.0, avoided_kv_g=0.0,
        route_reason="", finished_at=finished_at,
    )  # fmt: skip


def _stop(pids: list[int], timeout_s: float, hurry: Callable[[], bool]) -> list[int]:
    """SIGTERM, wait up to ``timeout_s`` or until ``hurry()`` says so, then SIGKILL whatever is left;
    returns the pids killed."""
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    left = set(pids)
    while left and time.monotonic() < deadline and not hurry():
        for pid in list(left):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                left.discard(pid)
        time.sleep(0.05)
    for pid in left:
        _signal(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    return sorted(left)


def stop_with_parent(parent_pid: int) -> bool:
    """Ask the kernel (Linux ``prctl(PR_SET_PDEATHSIG, SIGTERM)``) to send this process SIGTERM when its
    parent dies, so a supervisor killed with SIGKILL leaves no gateway running unsupervised. False when the
    parent ``parent_pid`` is already gone (it died before the request took effect)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    return os.getppid() == parent_pid


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop


def _reserve_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) a SO_REUSEPORT socket on the public address: workers join its group.

    First the port is taken exclusively (listening, without ``SO_REUSEPORT``) and released: any other
    program on it, another ``--workers`` gateway included, makes that fail with the same "Address already
    in use" error a single-process gateway gives. Without the probe a second supervisor would join the
    first one's ``SO_REUSEPORT`` group and the kernel would split connections between two gateways.
    ``--port 0`` resolves here, once."""
    with bind_socket(host, port, backlog=1) as probe:
        port = int(probe.getsockname()[1])
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def serve_workers(settings: Settings, host: str, port: int, workers: int) -> int:
    """Entry point for ``bauxite serve --workers N`` with N > 1."""
    supervisor = Supervisor(settings, host, port, workers)
    sys.stdout.flush()
    return supervisor.serve()
