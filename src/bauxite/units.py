"""Unit constants and small conversions. Units live in names (``energy_j``, ``carbon_g``, ``g_per_kwh``)."""

J_PER_KWH = 3_600_000.0
J_PER_WH = 3_600.0
MJ_PER_J = 1_000.0  # millijoules per joule (DCGM energy counters are in mJ)
G_PER_LB = 453.59237


def carbon_g(energy_j: float, g_per_kwh: float, pue: float = 1.0) -> float:
    """Grams CO2e for ``energy_j`` joules of IT energy at grid intensity ``g_per_kwh`` and ``pue``."""
    return energy_j * pue / J_PER_KWH * g_per_kwh


def lbs_per_mwh_to_g_per_kwh(lbs_per_mwh: float) -> float:
    """WattTime reports lbs CO2 per MWh; 1 lb/MWh = 0.45359237 g/kWh."""
    return lbs_per_mwh * G_PER_LB / 1000.0
