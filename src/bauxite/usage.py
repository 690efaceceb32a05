"""Reading token usage, stream ends and in-band errors out of upstream responses, per API dialect.

The SSE relay parses events once (``sse.SseParser``) and forwards each event's upstream bytes unchanged;
an ``ApiDialect`` decides what an event means for accounting: content (a token or more), the usage-only
chunk, the end-of-stream sentinel, an in-band error, or nothing (comments, keep-alives). Chat and
completions are the first dialects; other APIs (Responses, Messages) add their own.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

import orjson

from .records import Capture
from .sse import SseEvent, SseParser, data_events

CHARS_PER_TOKEN = 4  # rough English average, used only when the upstream reports no usage
# An event worth parsing beyond "one more token": an error, a usage object, or a non-null finish_reason.
_NOTABLE = re.compile(rb'"error"|"(?:usage|finish_reason)"\s*:\s*["{]')


class Kind(Enum):
    CONTENT = "content"  # carries output: first one sets TTFT; counted when usage never arrives
    USAGE = "usage"  # the usage-only chunk (no choices): dropped unless the client asked for it
    DONE = "done"  # the end-of-stream sentinel
    ERROR = "error"  # an in-band error event: the request failed
    OTHER = "other"  # comments, keep-alives, unknown events: relayed, not counted


@dataclass(slots=True)
class StreamState:
    content_events: int = 0
    saw_done: bool = False
    saw_usage: bool = False
    error: str = ""  # the upstream's error type/code from an in-band error event, if any
    finished: set[int] = field(default_factory=set)  # choice indexes that reported a finish_reason


class ApiDialect(Protocol):
    """What one API's events and bodies mean for accounting. Stateless; shared by all requests."""

    name: str

    def classify(self, event: SseEvent, capture: Capture, state: StreamState) -> Kind:
        """The event's kind; also records usage and finished choices in ``capture``/``state``."""
        ...

    def complete(self, state: StreamState, choices: int) -> bool:
        """Whether a stream that closed here (without an error) had delivered everything."""
        ...

    def account_body(self, capture: Capture, body: bytes) -> None:
        """Usage from a complete JSON response body; estimated and flagged when the body has none."""
        ...

    def content_prefix(self, chunk: bytes) -> tuple[int, int]:
        """(events, bytes) of the run of whole events ``chunk`` starts with that ``classify`` would each call
        ``CONTENT`` and record nothing else for (no usage, finish, error or end): the relay forwards that
        run as it is and counts it without parsing its events. (0, 0) when there is none or it is not
        certain; the events are then parsed one by one."""
        ...


def apply_usage(capture: Capture, usage: Any) -> bool:
    """Copy an OpenAI ``usage`` object into the capture; tolerate odd fields. True if it was one."""
    if not isinstance(usage, dict):
        return False
    capture.usage_reported = True
    capture.usage_estimated = False
    capture.prompt_tokens = _int(usage.get("prompt_tokens", usage.get("input_tokens")))
    capture.completion_tokens = _int(usage.get("completion_tokens", usage.get("output_tokens")))
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict):
        capture.cached_tokens = _int(details.get("cached_tokens"))
    return True


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def error_code(doc: Any) -> str:
    """The error's type or code from an OpenAI/vLLM-shaped error document, '' if it is not one."""
    if not isinstance(doc, dict) or "error" not in doc or doc.get("choices"):
        return ""
    err = doc["error"]
    if isinstance(err, dict):
        label = err.get("type") or err.get("code") or "error"
        return str(label)[:40]
    return "error" if err else ""


def estimate_unreported(capture: Capture, completion_tokens: int) -> None:
    """The upstream sent no usage: fill in estimates so accounting never sees 0 tokens, and flag them."""
    if capture.usage_reported:
        return
    capture.usage_estimated = True
    capture.prompt_tokens = capture.prompt_tokens or capture.prompt_tokens_est
    capture.completion_tokens = max(capture.completion_tokens, completion_tokens)


class _Choices:
    """Chat and text completions: ``choices[].finish_reason`` ends a choice; ``usage`` may follow."""

    name = "choices"

    def classify(self, event: SseEvent, capture: Capture, state: StreamState) -> Kind:
        data = event.data
        if data is None:
            return Kind.OTHER
        if len(data) < 16 and data.strip() == b"[DONE]":
            state.saw_done = True
            return Kind.DONE
        # One scan decides whether the event can matter beyond "one more token" (most cannot): only
        # those are parsed.
        if _NOTABLE.search(data):
            doc = _loads(data)
            code = error_code(doc)
            if code:
                state.error = code
                return Kind.ERROR
            if isinstance(doc, dict):
                return self._structured(doc, capture, state)
        if event.event == "error":
            state.error = "error"
            return Kind.ERROR
        state.content_events += 1
        return Kind.CONTENT

    def _structured(self, doc: dict[str, Any], capture: Capture, state: StreamState) -> Kind:
        if apply_usage(capture, doc.get("usage")):
            state.saw_usage = True
        choices = doc.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict) and choice.get("finish_reason"):
                    index = choice.get("index", 0)
                    state.finished.add(index if isinstance(index, int) else 0)
            if not choices and state.saw_usage:
                return Kind.USAGE
        state.content_events += 1
        return Kind.CONTENT

    def complete(self, state: StreamState, choices: int) -> bool:
        return state.saw_done or state.saw_usage or len(state.finished) >= max(choices, 1)

    def content_prefix(self, chunk: bytes) -> tuple[int, int]:
        # Plain data events before the first notable match and the first [DONE] in the chunk are each a
        # token, nothing more: a match inside an event's data is a match in the chunk, so none is earlier.
        # (A match across two events only ends the run sooner.)
        cut = len(chunk)
        notable = _NOTABLE.search(chunk)
        if notable is not None:
            cut = notable.start()
        done = chunk.find(b"[DONE]", 0, cut)
        if done >= 0:
            cut = done
        end = chunk.rfind(b"\n\n", 0, cut) + 2
        events = data_events(chunk, end) if end >= 2 else 0
        return (events, end) if events else (0, 0)

    def account_body(self, capture: Capture, body: bytes) -> None:
        doc = _loads(body)
        if isinstance(doc, dict) and apply_usage(capture, doc.get("usage")):
            return
        estimate_unreported(capture, _output_chars(doc) // CHARS_PER_TOKEN + 1 if doc else 0)


def _output_chars(doc: Any) -> int:
    """Characters of generated text in a chat/completions body (content, text and tool-call arguments)."""
    total = 0
    choices = doc.get("choices") if isinstance(doc, dict) else None
    for choice in choices if isinstance(choices, list) else ():
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        parts: list[Any] = [choice.get("text")]
        if isinstance(message, dict):
            parts.append(message.get("content"))
            calls = message.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                fn = call.get("function") if isinstance(call, dict) else None
                parts.append(fn.get("arguments") if isinstance(fn, dict) else None)
        total += sum(len(p) for p in parts if isinstance(p, str))
    return total


class _Embeddings(_Choices):
    """Embeddings never stream; they have prompt tokens only."""

    name = "embeddings"

    def account_body(self, capture: Capture, body: bytes) -> None:
        doc = _loads(body)
        if isinstance(doc, dict) and apply_usage(capture, doc.get("usage")):
            return
        estimate_unreported(capture, 0)


CHAT: ApiDialect = _Choices()
COMPLETIONS: ApiDialect = _Choices()
EMBEDDINGS: ApiDialect = _Embeddings()


def usage_from_body(capture: Capture, body: bytes, dialect: ApiDialect = CHAT) -> None:
    """Usage from a complete (non-streaming) JSON response body."""
    dialect.account_body(capture, body)


class SseRelay:
    """Relays an upstream SSE stream event by event, byte-for-byte, while the dialect accounts for it.

    Only the usage-only event is ever dropped, and only when the gateway (not the client) asked for it.
    """

    __slots__ = (
        "_capture",
        "_dialect",
        "_parser",
        "_strip_usage",
        "forwarded",
        "on_usage",
        "started",
        "state",
    )

    def __init__(self, capture: Capture, strip_usage: bool, dialect: ApiDialect = CHAT) -> None:
        self._capture = capture
        self._dialect = dialect
        self._strip_usage = strip_usage
        self._parser = SseParser()
        self.state = StreamState()
        self.started = False  # an event with data (not just comments) has arrived
        self.forwarded = 0  # events forwarded to the client
        # When set, the event that first carries usage is replaced by what this returns for it, and is always
        # forwarded (the bauxite_carbon extension the client asked for rides on it).
        self.on_usage: Callable[[SseEvent], bytes] | None = None

    @property
    def content_events(self) -> int:
        return self.state.content_events

    @property
    def saw_done(self) -> bool:
        return self.state.saw_done

    def feed(self, chunk: bytes) -> bytes:
        """Bytes to forward to the client for this upstream chunk (possibly empty)."""
        if self._parser.idle:
            # The common run: tokens only. Forwarded as they are and counted, their events not parsed.
            count, end = self._dialect.content_prefix(chunk)
            if count:
                self._parser.passed()
                self.started = True
                self.state.content_events += count
                self.forwarded += count
                if self._capture.ttft_s is None:
                    self._capture.ttft_s = time.monotonic() - self._capture.started_mono
                if end == len(chunk):
                    return chunk
                rest = self._feed_events(chunk[end:])
                return chunk[:end] + rest if rest else chunk[:end]
        return self._feed_events(chunk)

    def _feed_events(self, chunk: bytes) -> bytes:
        events = self._parser.feed(chunk)
        if not events:
            return b""
        out: list[bytes] = []
        for event in events:
            had_usage = self.state.saw_usage
            kind = self._dialect.classify(event, self._capture, self.state)
            if kind is not Kind.OTHER:
                self.started = True
            if kind is Kind.CONTENT and self._capture.ttft_s is None:
                self._capture.ttft_s = time.monotonic() - self._capture.started_mono
            if self.on_usage is not None and self.state.saw_usage and not had_usage:
                out.append(self.on_usage(event))
                continue
            if kind is Kind.USAGE and self._strip_usage:
                continue
            out.append(event.raw)
        self.forwarded += len(out)
        return out[0] if len(out) == 1 else b"".join(out)

    def flush(self) -> bytes:
        """Whatever unterminated bytes are left when the upstream closes (relayed, never accounted)."""
        return self._parser.flush()

    def complete(self, choices: int) -> bool:
        return not self.state.error and self._dialect.complete(self.state, choices)

    def estimate_missing_usage(self) -> None:
        """A stream without usage (aborted, or an upstream that never sends it): count relayed events."""
        estimate_unreported(self._capture, self.state.content_events)
