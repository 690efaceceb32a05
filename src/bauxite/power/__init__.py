"""GPU power sources of self-hosted clusters: DCGM exporter over HTTP, local NVML, a static model."""
