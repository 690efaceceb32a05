"""Measured GPU energy end to end: the simulated cluster's DCGM counters reach the requests' records."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import openai

from harness import Harness, fleet_config


def test_dcgm_energy_is_attributed_to_records_and_conserved() -> None:
    clusters = [
        {
            "name": "east",
            "region": "us-east-1",
            "models": ["tiny-8b"],
            "pue": 1.25,
            "sim": {"gpu_count": 2},
            "power": {
                "source": "dcgm",
                "url": "http://127.0.0.1:1/metrics",
                "scrape_interval": "200ms",
                "grace": "50ms",
            },
        }
    ]
    # host share 0: records carry measured GPU energy × PUE
    config = fleet_config(clusters, time_scale=0.3, energy={"host_frac": 0.0})
    config["clusters"][0]["power"] = clusters[0]["power"]
    with Harness(config) as h:
        assert h.gateway is not None
        time.sleep(0.5)  # a first scrape sets the counter baseline
        client = openai.OpenAI(base_url=h.base_url + "/v1", api_key="k", max_retries=0)
        for tokens in (5, 20, 10):
            client.chat.completions.create(
                model="tiny-8b",
                messages=[{"role": "user", "content": "go"}],
                max_tokens=tokens,
            )
        records = h.wait_records(3, timeout=5)
        assert all(r.energy_measured for r in records), [r.energy_measured for r in records]
        assert all(r.energy_j > 0 for r in records)
        assert all(r.intensity_source == "static" for r in records)  # the default provider

        def totals() -> tuple[float, float, float, float]:
            ledger = h.gateway.energy.ledger("east")  # type: ignore[union-attr]
            assert ledger is not None
            (account,) = h.gateway.accountant.cluster_accounts()  # type: ignore[union-attr]
            return ledger.measured_j, ledger.attributed_j, ledger.idle_j, account.idle_j_total

        measured_j, attributed_j, idle_j, account_idle_j = h.call(_read(totals))
        assert measured_j > 0
        assert abs(attributed_j + idle_j - measured_j) <= 1e-6 * measured_j
        # the records carry facility energy: attributed GPU energy × PUE; idle energy reaches the account
        assert abs(sum(r.energy_j for r in records) - attributed_j * 1.25) <= 0.01 * attributed_j * 1.25
        assert abs(account_idle_j - idle_j * 1.25) <= 0.01 * idle_j * 1.25 + 1e-9


T = TypeVar("T")


async def _read(fn: Callable[[], T]) -> T:
    return fn()
