"""Server-sent events as the WHATWG HTML standard parses them (§9.2 "Server-sent events"), keeping raw bytes.

The parser is incremental and byte-exact: every input byte ends up in exactly one ``SseEvent.raw`` or in
``SseParser.flush()``, so a relay can forward upstream bytes unchanged and still drop a whole event.

Per the standard: lines end with CRLF, LF or CR (a CRLF split across two reads is one line end); a line
starting with ``:`` is a comment; ``field: value`` strips one space after the colon, ``field:value`` and a
bare ``field`` are accepted; ``data`` lines are joined with ``\\n``; a blank line dispatches the event;
a leading UTF-8 BOM is ignored; an unterminated event at end of stream is not dispatched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"
_DATA_BLOCK = re.compile(rb"data: ?([^\n]*)\n\n")  # one whole "data:" line and its blank line (LF only)


@dataclass(slots=True)  # not frozen: frozen dataclasses construct several times slower, per event
class SseEvent:
    """One dispatched block. ``data`` is None for a block of only comments/unknown fields (no ``data``)."""

    raw: bytes  # the exact upstream bytes of this block, terminator included
    data: bytes | None
    event: str = "message"
    id: str | None = None


class SseParser:
    __slots__ = ("_buf", "_data", "_event", "_id", "_pos", "_skip_lf", "_started")

    def __init__(self) -> None:
        self._buf = b""  # bytes of the current, undispatched block (and of any line not yet ended)
        self._pos = 0  # where the next unread line starts in ``_buf``
        self._data: list[bytes] | None = None
        self._event = ""
        self._id: str | None = None
        self._skip_lf = False  # the last read ended in CR: a leading LF completes that CRLF
        self._started = False

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """Events completed by ``chunk``, in order (an empty list while a block is incomplete)."""
        if (  # fast path: the whole chunk is one "data: …" event with LF endings (vLLM, OpenAI)
            not self._buf
            and self._started
            and chunk.startswith(b"data:")
            and chunk.endswith(b"\n\n")
            and chunk.find(b"\n") == len(chunk) - 2
            and self._data is None
            and not self._event
            and not self._skip_lf
            and b"\r" not in chunk
        ):
            value = chunk[5:-2]
            return [SseEvent(chunk, value[1:] if value[:1] == b" " else value, "message", self._id)]
        buf = self._buf + chunk if self._buf else chunk
        pos = self._pos
        if not self._started:
            if len(buf) < 3 and _BOM.startswith(buf):
                self._buf = buf
                return []
            self._started = True
            if buf.startswith(_BOM):
                pos = 3
        if self._skip_lf and len(buf) > pos:
            self._skip_lf = False
            if buf[pos] == 0x0A:
                pos += 1
        events: list[SseEvent] = []
        start = 0
        end = len(buf)
        lf_only = b"\r" not in buf  # the common case: a plain find is several times faster than the regex
        while pos < end:
            if lf_only and self._data is None and not self._event:
                # A block that is one "data:" line: dispatch it without walking its lines.
                block = _DATA_BLOCK.match(buf, pos)
                if block is not None:
                    pos = block.end()
                    events.append(SseEvent(buf[start:pos], block.group(1), "message", self._id))
                    start = pos
                    continue
            if lf_only:
                line_end = buf.find(b"\n", pos)
                if line_end < 0:
                    break
                line = buf[pos:line_end]
                pos = line_end + 1
            else:
                match = _LINE_END.search(buf, pos)
                if match is None:
                    break
                line = buf[pos : match.start()]
                pos = match.end()
                if pos == end and match.group() == b"\r":
                    self._skip_lf = True
            if line:
                self._field(line)
                continue
            events.append(self._dispatch(buf[start:pos]))
            start = pos
        self._buf = buf[start:]
        self._pos = pos - start
        return events

    @property
    def idle(self) -> bool:
        """Between blocks: nothing buffered and no field of an undispatched block seen. Whole ``data:``
        events (``data_events``) fed now would leave it so; ``passed`` records that they went by unparsed."""
        return not self._buf and self._data is None and not self._event and not self._skip_lf

    def passed(self) -> None:
        """Whole ``data:`` events went by without ``feed`` (at the stream's start they rule out a BOM)."""
        self._started = True

    def _field(self, line: bytes) -> None:
        if line[0] == 0x3A:  # ":" comment
            return
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            if self._data is None:
                self._data = [value]
            else:
                self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id" and b"\0" not in value:
            self._id = value.decode("utf-8", "replace")
        # "retry" and unknown fields do not change what the gateway does.

    def _dispatch(self, raw: bytes) -> SseEvent:
        data = self._data
        event = SseEvent(
            raw,
            None if data is None else (data[0] if len(data) == 1 else b"\n".join(data)),
            self._event or "message",
            self._id,
        )
        self._data = None
        self._event = ""
        return event

    def flush(self) -> bytes:
        """Bytes of an unterminated last block (never an event, per the standard)."""
        rest = self._buf
        self._buf, self._pos, self._data, self._event = b"", 0, None, ""
        return rest


def data_events(chunk: bytes, end: int | None = None) -> int:
    """How many events ``chunk[:end]`` is when it is nothing but whole ``data: …`` events, each one data line
    and a blank line with LF endings (vLLM's and OpenAI's streams); 0 for anything else (comments, other
    fields, multi-line data, CR endings, an incomplete event). Fed to an idle parser, such bytes give exactly
    that many ``message`` events whose raw bytes join back to them."""
    stop = len(chunk) if end is None else end
    if stop <= 0 or not chunk.startswith(b"data:") or not chunk.endswith(b"\n\n", 0, stop):
        return 0
    if chunk.find(b"\r", 0, stop) >= 0:
        return 0
    events = chunk.count(b"\n\n", 0, stop)
    if chunk.count(b"\n", 0, stop) != 2 * events or chunk.count(b"\n\ndata:", 0, stop) != events - 1:
        return 0
    return events
