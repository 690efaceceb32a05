"""Simulated vLLM clusters as real HTTP servers, for the demo, tests and benchmarks."""
