"""``create_app(settings)``: the one place where the gateway's parts are built and wired together."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from .accounting import Accountant
from .api import Api
from .auth import Authenticator
from .clusters import Fleet
from .dialects import error_response
from .energy.service import EnergyService
from .http_server import handler_args
from .intensity.service import IntensityService
from .passthrough import Passthrough
from .proxy import Forwarder, Upstream
from .records import Endpoint
from .routing.router import Router
from .routing.stats import ScrapeFactory, StatsScraper
from .settings import Settings
from .state.base import LocalState, SharedState, make_state
from .state.metrics import StateCollector
from .telemetry.ring import Ring
from .telemetry.service import Telemetry
from .transport import UpstreamTransport

log = logging.getLogger("bauxite.app")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Gateway:
    """Everything ``create_app`` built, for tests and the CLI to reach into."""

    settings: Settings
    fleet: Fleet
    intensity: IntensityService
    energy: EnergyService
    telemetry: Telemetry
    router: Router
    upstream: Upstream
    accountant: Accountant
    state: SharedState = field(default_factory=LocalState)


GATEWAY = web.AppKey("gateway", Gateway)


def create_app(
    settings: Settings,
    transport: UpstreamTransport | None = None,
    ring: Ring | None = None,
    state: SharedState | None = None,
    scrapes: ScrapeFactory = StatsScraper,
) -> web.Application:
    """The gateway application. ``transport`` replaces the network client (tests pass a scripted one);
    ``ring`` is the telemetry buffer and ``state`` the shared state when worker processes share them
    (default: from ``settings.state``); ``scrapes`` is where the router's cluster readings come from (default:
    its own ``/metrics`` scrape)."""
    fleet = Fleet(settings.clusters)
    state = state if state is not None else make_state(settings.state)
    intensity = IntensityService.from_settings(settings, state=state)
    energy = EnergyService.from_settings(settings, fleet)
    router = Router.from_settings(settings, fleet, intensity, energy, scrapes)
    accountant = Accountant(
        intensity, energy, router, clusters=list(fleet.clusters), settings=settings.accounting
    )
    telemetry = Telemetry.from_settings(settings, fleet, intensity, accountant.cluster_accounts, ring)
    accountant.add_sink(telemetry)
    upstream = Upstream(fleet.clusters, transport)
    auth = Authenticator(settings.auth)
    api = Api(
        auth,
        fleet,
        Forwarder(upstream, router, accountant),
        accountant,
        settings.auth.department_header,
        settings.server.body_timeout,
        state,
    )
    _share(state, fleet, router, telemetry, settings.state.configured)

    app = web.Application(
        client_max_size=settings.server.max_body_bytes,
        middlewares=[openai_errors],
        handler_args=handler_args(settings.server.header_timeout),
    )
    gateway = Gateway(settings, fleet, intensity, energy, telemetry, router, upstream, accountant, state)
    app[GATEWAY] = gateway
    api.add_routes(app)
    Passthrough(api, fleet, upstream).add_routes(app)
    if settings.telemetry.listen_port is None:  # else /v1/carbon/* lives on the telemetry listener
        intensity.add_routes(app)
    telemetry.add_routes(app)
    app.cleanup_ctx.append(_lifecycle(gateway))
    return app


def _share(state: SharedState, fleet: Fleet, router: Router, telemetry: Telemetry, configured: bool) -> None:
    """Connect the parts whose state replicas share (for in-process state: only the gauge saying a configured
    store is not in use)."""
    if state.kind == "local":
        if configured:
            telemetry.registry.register(StateCollector(state, store_missing=True))
        return
    state.attach(fleet, router)
    telemetry.window_sinks.append(state.publish_window)
    telemetry.shared_windows = state.windows
    telemetry.registry.register(StateCollector(state))


def _lifecycle(gateway: Gateway) -> Callable[[web.Application], AsyncIterator[None]]:
    async def run(app: web.Application) -> AsyncIterator[None]:
        services = (
            gateway.state, gateway.upstream, gateway.intensity, gateway.energy, gateway.router,
            gateway.telemetry,
        )  # fmt: skip
        started = []
        try:
            for service in services:
                await service.start()
                started.append(service)
            yield
        finally:
            for service in reversed(started):
                try:
                    await service.stop()
                except Exception:
                    log.exception("error while stopping %s", type(service).__name__)

    return run


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


@web.middleware
async def openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Unknown paths, wrong methods and unexpected failures still answer in the API's error shape (OpenAI's,
    or Anthropic's under /v1/messages)."""
    endpoint: Endpoint = "messages" if request.path.startswith("/v1/messages") else "chat"
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(endpoint, exc.status, exc.reason, _HTTP_CODES.get(exc.status))
    except Exception:
        log.exception("unhandled error serving %s %s", request.method, request.path)
        return error_response(endpoint, 500, "internal gateway error", "internal_error")
