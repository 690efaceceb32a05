"""Avoided carbon against the latency-first counterfactual: net (may be negative), gross, and KV reuse only
when affinity placed the request."""

from __future__ import annotations

from typing import Any

import pytest

from bauxite.avoided import avoided_carbon
from bauxite.records import Capture
from bauxite.units import J_PER_KWH
from test_routing import make_router, req

# make_router's fleet: west 50 g/kWh, east 400, mid 450; every cluster 0.25 J per prompt token and 1 J per
# completion token, so 400 + 100 tokens are 200 J expected anywhere.
WEST_G_PER_J, EAST_G_PER_J, MID_G_PER_J = 50 / J_PER_KWH, 400 / J_PER_KWH, 450 / J_PER_KWH


def capture(**kwargs: Any) -> Capture:
    base: dict[str, Any] = {
        "model": "m",
        "department": "d",
        "endpoint": "chat",
        "started_at": 0.0,
        "started_mono": 0.0,
        "cluster": "west",
        "counterfactual_cluster": "east",
        "prompt_tokens": 400,
        "completion_tokens": 100,
        "status": "ok",
        "route_reason": "low_carbon",
    }
    return Capture(**{**base, **kwargs})


DIFF_G = 200 * (EAST_G_PER_J - WEST_G_PER_J)  # expected grams, counterfactual − chosen
KV_G = 300 * 0.25 * WEST_G_PER_J


@pytest.mark.parametrize(
    ("kwargs", "energy_j", "net_g", "kv_g"),
    [
        ({}, 360.0, DIFF_G * 360 / 200, 0.0),  # scaled to the measured energy
        ({}, 0.0, DIFF_G, 0.0),  # no measurement: expected energy on both
        ({"cluster": "east"}, 360.0, 0.0, 0.0),  # chose what latency-first would have
        ({"cluster": "mid"}, 360.0, 200 * (EAST_G_PER_J - MID_G_PER_J) * 360 / 200, 0.0),  # net < 0
        ({"counterfactual_cluster": ""}, 360.0, 0.0, 0.0),
        # cached tokens the cluster would have had anyway: no KV credit; the skipped prefill is added back
        ({"cached_tokens": 300}, 360.0, DIFF_G * (360 + 75) / 200, 0.0),
        ({"cached_tokens": 300, "route_reason": "kv_cache_affinity"}, 360.0, DIFF_G * 435 / 200, KV_G),
        ({"cached_tokens": 300, "route_reason": "kv_cache_affinity", "cluster": "east"}, 360.0, 0.0, 0.0),
        ({"cluster": "nowhere"}, 360.0, 0.0, 0.0),
    ],
)
def test_avoided_carbon(kwargs: dict[str, Any], energy_j: float, net_g: float, kv_g: float) -> None:
    router, _ = make_router()
    router.choose(req())  # takes the first snapshot
    avoided = avoided_carbon(router.carbon, capture(**kwargs), energy_j)
    assert avoided.green_net_g == pytest.approx(net_g)
    assert avoided.green_gross_g == pytest.approx(max(net_g, 0.0))
    assert avoided.kv_g == pytest.approx(kv_g)


def test_net_never_exceeds_what_the_intensity_difference_allows() -> None:
    router, _ = make_router()
    router.choose(req())
    avoided = avoided_carbon(router.carbon, capture(), 360.0)
    assert avoided.green_net_g <= 360.0 * (EAST_G_PER_J - WEST_G_PER_J) + 1e-12


def test_avoided_carbon_never_raises() -> None:
    router, _ = make_router()
    broken = capture()
    broken.prompt_tokens = "x"  # type: ignore[assignment]
    router.choose(req())
    avoided = avoided_carbon(router.carbon, broken, 1.0)
    assert (avoided.green_net_g, avoided.kv_g) == (0.0, 0.0)
