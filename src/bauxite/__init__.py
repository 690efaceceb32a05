"""Bauxite: an OpenAI-compatible LLM gateway that accounts for and cuts the carbon of every request."""

__version__ = "0.1.0"
