"""Helpers shared by the Responses and Messages API tests: metrics reading and simulator faults."""

from __future__ import annotations

import json
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from harness import Harness


def metric(h: Harness, name: str, **labels: str) -> float:
    """Sum of the gateway's ``/metrics`` samples named ``name`` whose labels include ``labels``."""
    with urllib.request.urlopen(h.base_url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def endpoint_tokens(h: Harness, endpoint: str, kind: str) -> float:
    return metric(h, "bauxite_endpoint_tokens_total", endpoint=endpoint, model="tiny-8b", kind=kind)


def sim_faults(h: Harness, cluster: str, **faults: int) -> None:
    assert h.fleet is not None
    url = f"http://127.0.0.1:{h.fleet.ports[cluster]}/fleet/faults"
    request = urllib.request.Request(url, data=json.dumps(faults).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=5):
        pass
