"""Choosing a cluster for each request: least-loaded today, carbon-aware under a latency bound."""
