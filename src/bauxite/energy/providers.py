"""Facility defaults of external API providers, from EcoLogits' provider table (``ecologits.tracers.utils``).

EcoLogits publishes each provider's data-centre PUE (a range where the provider discloses one) and location;
an external cluster without a configured ``pue`` takes its provider's, recognised from the cluster's URL host.
Ranges are used at their midpoint.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ecologits.tracers.utils import PROVIDER_CONFIG_MAP
from ecologits.utils.range_value import RangeValue

# URL host suffix -> EcoLogits provider name
HOSTS = {
    "openai.com": "openai",
    "anthropic.com": "anthropic",
    "googleapis.com": "google_genai",
    "mistral.ai": "mistralai",
    "cohere.com": "cohere",
    "cohere.ai": "cohere",
    "huggingface.co": "huggingface_hub",
}


def provider_of(url: str) -> str | None:
    """EcoLogits' provider name for an API base URL, or None when the host is not a known provider's."""
    host = (urlsplit(url).hostname or "").lower()
    for suffix, provider in HOSTS.items():
        if host == suffix or host.endswith("." + suffix):
            return provider
    return None


def provider_pue(url: str) -> float | None:
    """The provider's published PUE (midpoint of a range), or None for an unknown provider."""
    provider = provider_of(url)
    config = PROVIDER_CONFIG_MAP.get(provider) if provider is not None else None
    if config is None:
        return None
    pue = config.datacenter_pue
    if isinstance(pue, RangeValue):
        return (float(pue.min) + float(pue.max)) / 2.0
    return float(pue)
