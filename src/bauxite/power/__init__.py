"""GPU power sources for self-hosted clusters: DCGM exporter over HTTP, NVML on the local host, a static model."""
