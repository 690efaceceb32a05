"""Discrete-event replay of a workload over hourly grid-intensity traces, through the gateway's own router."""
