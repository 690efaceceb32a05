"""Deterministic request stream: Poisson arrivals shaped by a daily load curve, log-normal token lengths."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate

from .config import SimConfig, TokenDistribution


@dataclass(frozen=True, slots=True)
class SimRequest:
    t: float  # simulated seconds since the start
    hour: int  # trace hour index since the start of the period
    group: int  # client group index
    prompt_tokens: int
    completion_tokens: int
    max_latency_ms: float = 0.0  # from the x-bauxite-max-latency-ms header; 0 = the configured SLO


def generate(config: SimConfig) -> Iterator[SimRequest]:
    """The same stream for the same config and seed, so every policy sees identical traffic."""
    rng = random.Random(config.seed)
    work = config.workload
    hour_s = config.period.seconds_per_hour
    weights = list(accumulate(g.share for g in config.clients))
    groups = range(len(config.clients))
    for hour in range(config.period.days * 24):
        rate = work.requests_per_s * work.diurnal[hour % 24]
        if rate <= 0:
            continue
        end = (hour + 1) * hour_s
        t = hour * hour_s + rng.expovariate(rate)
        while t < end:
            group = rng.choices(groups, cum_weights=weights)[0]
            prompt = _tokens(rng, work.prompt_tokens)
            completion = _tokens(rng, work.completion_tokens)
            header = work.header_latency_ms if work.header_share and rng.random() < work.header_share else 0.0
            yield SimRequest(t, hour, group, prompt, completion, header)
            t += rng.expovariate(rate)


def _tokens(rng: random.Random, dist: TokenDistribution) -> int:
    value = int(rng.lognormvariate(math.log(dist.median), dist.sigma))
    return min(max(value, dist.min), dist.max)


def expected_requests(config: SimConfig) -> float:
    days = config.period.days
    return (
        config.workload.requests_per_s * sum(config.workload.diurnal) * days * config.period.seconds_per_hour
    )
