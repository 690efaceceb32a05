"""Telemetry: the volatile ring buffer, running totals, the Prometheus exposition and reporting windows."""
