"""Carbon avoided by routing: this request's emissions against what a carbon-blind gateway would have emitted.

The counterfactual is the cluster a latency-first gateway with the same information would have chosen for
the same request: the router records it with every decision (its fastest prediction among the same
candidates, from configured or measured round trips and, for clusters never tried, the same default
estimates). Grams are compared with the router's carbon snapshot, the figures it ranked by:

- ``green_net_g`` = expected grams on the counterfactual − expected grams on the chosen cluster, for the
  request's own tokens, scaled by measured / expected energy on the chosen cluster so a model error cancels.
  Negative when the choice emitted more (a fallback, an affinity hit on a dirtier cluster): the net sum says
  what green routing really saved; ``green_gross_g`` counts only the positive part.
- ``kv_g``: prefill energy not spent because the prefix was already cached on the chosen cluster, counted
  only when KV affinity changed the decision (route reason ``kv_cache_affinity``) and the counterfactual was
  another cluster; otherwise the cluster would have had the same hit anyway. Cached tokens × the energy
  model's prefill J/token (the prefill curve) × PUE × intensity of the chosen cluster.

Worked example: 400 prompt + 100 completion tokens, 0.1 J per prompt and 1.6 J per completion token on
both clusters (200 J), PUE 1. Chosen: 50 g/kWh; counterfactual: 400 g/kWh; measured 360 J. Net =
(200 × 400 − 200 × 50) / 3.6e6 × 360/200 = 0.035 g.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .records import Capture
from .routing.snapshot import CarbonSnapshot

KV_REASON = "kv_cache_affinity"


@dataclass(frozen=True, slots=True)
class Avoided:
    green_net_g: float = 0.0  # counterfactual − chosen; negative when the choice emitted more
    kv_g: float = 0.0  # ≥ 0

    @property
    def green_gross_g(self) -> float:
        return self.green_net_g if self.green_net_g > 0.0 else 0.0


NONE = Avoided()


def avoided_carbon(snapshot: CarbonSnapshot, capture: Capture, energy_j: float) -> Avoided:
    """Avoided grams for one finished request; ``energy_j`` is its IT energy on the chosen cluster (measured
    or estimated, without PUE). Never raises: anything unknown gives zeros."""
    try:
        net = _green_net_g(snapshot, capture, energy_j)
        kv = _kv_g(snapshot, capture)
    except Exception:
        return NONE
    return Avoided(net if math.isfinite(net) else 0.0, kv if math.isfinite(kv) and kv > 0.0 else 0.0)


def _green_net_g(snapshot: CarbonSnapshot, capture: Capture, energy_j: float) -> float:
    chosen, other = capture.cluster, capture.counterfactual_cluster
    if not chosen or not other or other == chosen or not (snapshot.knows(chosen) and snapshot.knows(other)):
        return 0.0
    tokens = (capture.model, capture.prompt_tokens, capture.completion_tokens)
    chosen_g = snapshot.expected_g(chosen, *tokens)
    other_g = snapshot.expected_g(other, *tokens)
    chosen_j = snapshot.coefficients(chosen, capture.model).energy_j(
        capture.prompt_tokens, capture.completion_tokens
    )
    if energy_j > 0.0 and chosen_j > 0.0:
        # The measurement excludes the prefill a cache hit skipped; add it back to compare like with like.
        skipped_j = capture.cached_tokens * snapshot.coefficients(chosen, capture.model).prompt_j_per_token
        return (other_g - chosen_g) * (energy_j + skipped_j) / chosen_j
    return other_g - chosen_g


def _kv_g(snapshot: CarbonSnapshot, capture: Capture) -> float:
    if capture.cached_tokens <= 0 or capture.route_reason != KV_REASON:
        return 0.0
    if not capture.counterfactual_cluster or capture.counterfactual_cluster == capture.cluster:
        return 0.0
    per_token_j = snapshot.coefficients(capture.cluster, capture.model).prompt_j_per_token
    return capture.cached_tokens * per_token_j * snapshot.grams_per_j(capture.cluster)
