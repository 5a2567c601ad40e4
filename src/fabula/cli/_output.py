"""What the `fabula` command writes: aligned, terminal-sized, optionally coloured output."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TextIO

import orjson

from fabula._inspect import StoredEvent

_SPARKS = "▁▂▃▄▅▆▇█"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TOKENS = re.compile(r"(\x1b\[[0-9;]*m)|(.)", re.DOTALL)
_RESET = "\x1b[0m"
_KIB = 1024
_REDRAW_EVERY = 0.1  # seconds between redraws of a progress bar
_MIN_STREAM = 12  # the fewest characters a cut stream id (with its @version) keeps
_MIN_PAYLOAD = 24  # the payload room a line at the terminal's width keeps, cutting the rest first


class UsageError(Exception):
    """A bad argument: one line on stderr, exit code 2."""


class _Out:
    """Writes aligned, terminal-sized, optionally coloured output."""

    def __init__(self, stream: TextIO, *, color: bool) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.color = color and self.tty and "NO_COLOR" not in os.environ
        self.width = shutil.get_terminal_size((100, 24)).columns if self.tty else 0

    def paint(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def line(self, text: str = "") -> None:
        """Write `text`, cut to the terminal's width (colour codes take no room)."""
        if self.width and len(_ANSI.sub("", text)) > self.width:
            text = _cut(text, self.width - 1) + "…"
        self.stream.write(text + "\n")

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        titles = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
        self.line(self.paint(titles.rstrip(), "1"))
        for row in rows:
            cells = [
                str(cell).rjust(w) if str(cell).replace(",", "").isdigit() else str(cell).ljust(w)
                for cell, w in zip(row, widths, strict=True)
            ]
            self.line("  ".join(cells).rstrip())


def _cut(text: str, visible: int) -> str:
    """The start of `text` holding `visible` characters, colour codes kept and closed."""
    out, shown, coloured = [], 0, False
    for code, char in _TOKENS.findall(text):
        if code:
            out.append(code)
            coloured = code != _RESET
        elif shown < visible:
            out.append(char)
            shown += 1
    return "".join(out) + (_RESET if coloured else "")


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < _KIB or unit == "GiB":
            return f"{count:,.0f} B" if unit == "B" else f"{count:,.1f} {unit}"
        count /= _KIB
    return f"{count:,.1f} TiB"  # pragma: no cover - the loop returns


def _event_json(event: StoredEvent) -> bytes:
    return orjson.dumps(
        {
            "position": event.position,
            "stream_id": event.stream_id,
            "version": event.version,
            "event_id": str(event.event_id),
            "type": event.type_name,
            "schema_version": event.schema_version,
            "timestamp": event.timestamp.isoformat(),
            "data": _json_or_text(event.data),
            "metadata": _json_or_text(event.metadata),
        }
    )


def _json_or_text(stored: str) -> object:
    """The stored JSON, parsed; a payload that does not parse is shown as its text."""
    try:
        return orjson.loads(stored)
    except orjson.JSONDecodeError:
        return stored


def _show_events(out: _Out, events: Sequence[StoredEvent], *, as_json: bool) -> None:
    for event in events:
        if as_json:
            out.stream.write(_event_json(event).decode() + "\n")
            continue
        stamp = event.timestamp.strftime("%Y-%m-%d %H:%M:%S")
        stream = f"{event.stream_id}@{event.version}"
        if out.width:
            # The payload is cut first (by `line`); then the stream id, in
            # its middle, then the date: the event's type is never cut.
            fixed = len(f"{event.position}    {stamp}  {event.type_name}  ") + _MIN_PAYLOAD
            stream = _middle(stream, max(_MIN_STREAM, out.width - fixed))
            if fixed + len(stream) > out.width:
                stamp = stamp[11:]  # the time of day only
        out.line(
            f"{out.paint(str(event.position), '2')}  {stream}  "
            f"{stamp}  {out.paint(event.type_name, '36')}  {event.data}"
        )
    out.stream.flush()


def _middle(text: str, room: int) -> str:
    """`text`, cut in its middle to `room` characters: the start and end of an id stay."""
    if len(text) <= room:
        return text
    head = (room - 1) // 2
    return text[:head] + "…" + text[len(text) - (room - 1 - head) :]


def _ago(seconds: float) -> str:
    """A duration in the past, at a glance: `4 s ago`, `12 min ago`, `3 h ago`, `2 d ago`."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def _progress(out: TextIO, total: int) -> tuple[Callable[[int], None], Callable[[int], None]]:
    """A progress bar in events: done, total, rate and time left; redrawn on a TTY."""
    started = time.monotonic()
    tty = out.isatty()
    drawn = [0.0]

    def draw(done: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and (not tty or now - drawn[0] < _REDRAW_EVERY):
            return
        drawn[0] = now
        elapsed = max(now - started, 1e-9)
        fraction = 1.0 if total == 0 else min(1.0, done / total)
        rate = done / elapsed
        left = (total - done) / rate if rate > 0 else 0.0
        filled = int(30 * fraction)
        text = (
            f"[{'#' * filled}{'.' * (30 - filled)}] {fraction:6.1%} {done:,}/{total:,} events, "
            f"{rate:,.0f}/s, {'done' if final else f'{left:,.0f} s left'}"
        )
        out.write(("\r" if tty else "") + text + ("\n" if final or not tty else ""))
        out.flush()

    def finish(done: int) -> None:
        draw(done, final=True)

    return draw, finish


def _lines(exc: BaseException) -> Iterator[str]:
    yield from (str(exc).strip() or type(exc).__name__).splitlines()[:1]
