"""Energy per request: calibrated estimates for external APIs, measured GPU energy for self-hosted ones."""
