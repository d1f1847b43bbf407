"""Progress feedback for the command line, without dependencies.

On a terminal, a single status line (bar, counts, rate, ETA) is redrawn in place
and milestone lines are printed above it. Elsewhere (a log file, a CI job) the
same information comes as plain lines: the milestones, and a status line every
`line_every` seconds. Formatting is pure and tested with values alone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

__all__ = [
    "MB",
    "Progress",
    "Snapshot",
    "Terminal",
    "describe",
    "format_duration",
    "format_seconds",
    "format_size",
    "status_line",
    "throughput",
]

MB = 1_000_000
_CLEAR_LINE = "\r\x1b[K"
_DEFAULT_WIDTH = 80
_BAR_WIDTH = 20


def format_size(size: int) -> str:
    """Bytes as decimal megabytes, e.g. ``"12.3 MB"``."""
    return f"{size / MB:.1f} MB"


def format_duration(seconds: float) -> str:
    """Seconds as ``m:ss`` or ``h:mm:ss``."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_seconds(seconds: float) -> str:
    """A wall time for a summary, e.g. ``"2.41 s"`` (``"73.5 s"`` from ten seconds)."""
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"


def throughput(size: int, seconds: float) -> str:
    """Megabytes per second, e.g. ``"95.2 MB/s"`` (``"- MB/s"`` for no time at all)."""
    return f"{size / MB / seconds:.1f} MB/s" if seconds > 0 else "- MB/s"


@dataclass(frozen=True)
class Snapshot:
    """Where a transfer stands.

    Attributes:
        instances: Instances done.
        bytes: Bytes done.
        elapsed: Seconds since the start.
        total_instances: Instances expected, when known.
        total_bytes: Bytes expected, when known (takes precedence for the ETA).
    """

    instances: int
    bytes: int
    elapsed: float
    total_instances: int | None = None
    total_bytes: int | None = None

    @property
    def fraction(self) -> float | None:
        """Share done, from bytes when their total is known, else from instances."""
        if self.total_bytes:
            return min(1.0, self.bytes / self.total_bytes)
        if self.total_instances:
            return min(1.0, self.instances / self.total_instances)
        return None

    @property
    def eta(self) -> float | None:
        """Seconds left at the average pace so far, when a total is known."""
        fraction = self.fraction
        if fraction is None or fraction <= 0 or self.elapsed <= 0:
            return None
        return self.elapsed * (1 - fraction) / fraction


def _fields(snapshot: Snapshot) -> list[str]:
    """Count (of total), size (of total), rate, and the ETA while unfinished."""
    count = str(snapshot.instances)
    if snapshot.total_instances is not None:
        count += f"/{snapshot.total_instances}"
    size = format_size(snapshot.bytes)
    if snapshot.total_bytes is not None:
        size = f"{snapshot.bytes / MB:.1f}/{format_size(snapshot.total_bytes)}"
    fields = [count, size, throughput(snapshot.bytes, snapshot.elapsed)]
    eta = snapshot.eta
    if eta is not None and snapshot.fraction != 1.0:
        fields.append(f"ETA {format_duration(eta)}")
    return fields


def describe(snapshot: Snapshot) -> str:
    """Counts, size, rate and ETA in words, e.g. ``"12/300 instances, 1.6/39.4 MB, ..."``."""
    count, size, rate, *eta = _fields(snapshot)
    return ", ".join([f"{count} instances", size, rate, *eta])


def status_line(label: str, snapshot: Snapshot, width: int) -> str:
    """The terminal status, compact, fitted to `width` (the bar goes first when short).

    E.g. ``"download [#########.........]  45%  135/300  17.8/39.5 MB  21.3 MB/s  ETA 0:02"``.
    """
    fields = _fields(snapshot)
    fraction = snapshot.fraction
    if fraction is not None:
        fields.insert(0, f"{fraction * 100:.0f}%")
    line = "  ".join([label, *fields])
    if fraction is not None and len(line) + _BAR_WIDTH + 3 < width:
        filled = int(fraction * _BAR_WIDTH)
        line = "  ".join([f"{label} [{'#' * filled}{'.' * (_BAR_WIDTH - filled)}]", *fields])
    # One column spare: writing the last column makes some terminals wrap.
    return line[: max(1, width - 1)]


class Terminal:
    """A text stream that may show one redrawable status line below ordinary lines.

    Args:
        stream: Where to write (standard error for the command line).
        tty: Whether `stream` is a terminal; detected when None.
        width: Columns for the status line; detected when None.
    """

    def __init__(self, stream: TextIO, *, tty: bool | None = None, width: int | None = None):
        self._stream = stream
        self.tty = _isatty(stream) if tty is None else tty
        self._width = width
        self._status = ""

    @property
    def width(self) -> int:
        """Columns available for the status line."""
        if self._width is not None:
            return self._width
        try:
            return os.get_terminal_size(self._stream.fileno()).columns or _DEFAULT_WIDTH
        except (AttributeError, OSError, ValueError):
            return _DEFAULT_WIDTH

    def status(self, text: str) -> None:
        """Replace the status line (terminals only; elsewhere it is ignored)."""
        if not self.tty:
            return
        self._status = text
        self._stream.write(_CLEAR_LINE + text)
        self._stream.flush()

    def clear_status(self) -> None:
        """Remove the status line, if one is shown."""
        if self._status:
            self._stream.write(_CLEAR_LINE)
            self._stream.flush()
            self._status = ""

    def line(self, text: str) -> None:
        """Print a whole line above the status line, which is then redrawn."""
        status = self._status
        self.clear_status()
        self._stream.write(text + "\n")
        self._stream.flush()
        if status:
            self.status(status)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """Counts instances and bytes of one transfer and shows them on a `Terminal`.

    On a terminal the status line is redrawn at most every `redraw_every`
    seconds; elsewhere a plain status line is printed every `line_every` seconds.
    A disabled progress (``--quiet``) still counts but prints nothing.

    Args:
        terminal: Where to show progress.
        label: First word of every status line ("download", "store").
        total_instances: Instances expected, when known.
        total_bytes: Bytes expected, when known.
        enabled: False to print nothing.
        clock: Monotonic seconds; injected by tests.
        redraw_every: Minimum seconds between two terminal redraws.
        line_every: Seconds between two plain status lines.
    """

    def __init__(
        self,
        terminal: Terminal,
        label: str,
        *,
        total_instances: int | None = None,
        total_bytes: int | None = None,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
        redraw_every: float = 0.1,
        line_every: float = 10.0,
    ) -> None:
        self.terminal = terminal
        self.label = label
        self.total_instances = total_instances
        self.total_bytes = total_bytes
        self.enabled = enabled
        self.instances = 0
        self.bytes = 0
        self._clock = clock
        self._started = clock()
        self._redraw_every = redraw_every
        self._line_every = line_every
        self._last_shown = self._started

    def snapshot(self) -> Snapshot:
        """The counts now."""
        elapsed = self._clock() - self._started
        return Snapshot(
            self.instances, self.bytes, elapsed, self.total_instances, self.total_bytes
        )

    def update(self, instances: int, size: int) -> None:
        """Set the counts (totals so far) and show them if it is time to."""
        self.instances, self.bytes = instances, size
        if not self.enabled:
            return
        now = self._clock()
        if self.terminal.tty:
            if now - self._last_shown >= self._redraw_every or self._complete():
                self._last_shown = now
                self.terminal.status(status_line(self.label, self.snapshot(), self.terminal.width))
        elif now - self._last_shown >= self._line_every:
            self._last_shown = now
            self.terminal.line(f"{self.label}: {describe(self.snapshot())}")

    def advance(self, instances: int, size: int) -> None:
        """Add to the counts (see `update`)."""
        self.update(self.instances + instances, self.bytes + size)

    def note(self, text: str) -> None:
        """Print a milestone line (a series done), above the status line."""
        if self.enabled:
            self.terminal.line(text)

    def close(self) -> None:
        """Remove the status line; the caller prints the outcome."""
        self.terminal.clear_status()

    def _complete(self) -> bool:
        return self.total_instances is not None and self.instances >= self.total_instances
