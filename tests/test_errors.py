"""The error tree: every class answers with a documented code and its status."""

from __future__ import annotations

from pathlib import Path

from bauxite import errors


def test_every_gateway_error_code_is_in_the_documented_set() -> None:
    """Codes are API: each error class answers with a code from ``errors.CODES`` and its status, and every
    code is documented in docs/failures.md."""
    raised = [
        errors.BadRequest("m", "invalid_json"),
        errors.Unauthorized("m"),
        errors.NotFound("m"),
        errors.RequestTimeout("m"),
        errors.PayloadTooLarge("m"),
        errors.UpstreamFailed("m"),
        errors.UpstreamTimeout("m"),
        errors.NoCluster("m"),
        errors.GatewayOverloaded("m"),
    ]
    for exc in raised:
        assert exc.code is not None and errors.CODES.get(exc.code) == exc.status, exc
    doc = (Path(__file__).resolve().parent.parent / "docs" / "failures.md").read_text()
    assert all(f"`{code}`" in doc for code in errors.CODES), [c for c in errors.CODES if f"`{c}`" not in doc]
