"""The one HTTP client all live providers share, and translation of HTTP failures into ``IntensityError``.

Messages never carry request headers or URLs with credentials: keys travel only in headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from .base import IntensityError

_ERROR_SNIPPET_CHARS = 200
# The largest answer any provider gives (a 72-hour forecast) is tens of kilobytes. Reads stop here, so a
# misbehaving endpoint cannot balloon memory or stall the event loop parsing megabytes of JSON.
MAX_REPLY_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class HttpReply:
    status: int
    body: bytes
    content_type: str
    retry_after_s: float | None

    def json(self, provider: str) -> Any:
        """The body as JSON; malformed bodies become ``IntensityError``."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            raise IntensityError(f"{provider}: response is not valid JSON", status=self.status) from None

    def looks_like_json(self) -> bool:
        return "json" in self.content_type or self.body.lstrip()[:1] in (b"{", b"[")

    def error(self, provider: str, what: str = "") -> IntensityError:
        """An error naming the status and the provider's own explanation, if it gave one in JSON."""
        detail = ""
        if self.looks_like_json():
            try:
                data = orjson.loads(self.body)
            except orjson.JSONDecodeError:
                data = None
            detail = _message_in(data)
        label = f"{provider}{': ' + what if what else ''}: HTTP {self.status}"
        return IntensityError(
            f"{label}{': ' + detail[:_ERROR_SNIPPET_CHARS] if detail else ''}",
            status=self.status,
            retry_after_s=self.retry_after_s,
        )


def _message_in(data: Any) -> str:
    """Pull a human message out of the providers' error shapes ({error}, {message}, {error: {message}})."""
    if not isinstance(data, dict):
        return ""
    error = data.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error.get("code") or "")
    parts = [str(p) for p in (error, data.get("message")) if isinstance(p, str) and p]
    return " - ".join(parts)


def _retry_after_s(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # HTTP-date form: rare for these APIs; the exponential backoff covers it


class HttpClient:
    """Lazily opens one ``aiohttp.ClientSession`` (it must be created inside the running loop)."""

    def __init__(
        self, timeout_s: float, user_agent: str = "bauxite", max_reply_bytes: int = MAX_REPLY_BYTES
    ) -> None:
        self.timeout_s = timeout_s
        self.max_reply_bytes = max_reply_bytes
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                headers={"User-Agent": self._user_agent, "Accept": "application/json"},
                raise_for_status=False,
            )
        return self._session

    async def get(
        self,
        provider: str,
        url: str,
        *,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> HttpReply:
        """GET ``url``; network failures and time-outs raise ``IntensityError``, any status returns."""
        try:
            async with self._open().get(url, params=params, headers=headers) as response:
                body = await self._bounded_body(provider, response)
                return HttpReply(
                    response.status,
                    body,
                    response.headers.get("Content-Type", ""),
                    _retry_after_s(response.headers.get("Retry-After")),
                )
        except TimeoutError:
            raise IntensityError(f"{provider}: no answer within {self.timeout_s:g}s") from None
        except aiohttp.ClientError as exc:
            raise IntensityError(f"{provider}: network error ({type(exc).__name__})") from None

    async def _bounded_body(self, provider: str, response: aiohttp.ClientResponse) -> bytes:
        limit = self.max_reply_bytes
        if response.content_length is not None and response.content_length > limit:
            raise IntensityError(f"{provider}: answer of {response.content_length} bytes exceeds {limit}")
        parts: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise IntensityError(f"{provider}: answer larger than {limit} bytes; not read further")
            parts.append(chunk)
        return b"".join(parts)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
