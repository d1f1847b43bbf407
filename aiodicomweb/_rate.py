"""A lower bound on transfer speed, as curl's --speed-limit and --speed-time."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from aiodicomweb._exceptions import DicomWebUsageError

__all__ = ["MinRate", "RateWatch"]


@dataclass(frozen=True)
class MinRate:
    """`rate` bytes per second, over every `window` seconds of a transfer."""

    rate: float
    window: float

    def __post_init__(self) -> None:
        if not (self.rate > 0 and self.window > 0):
            raise DicomWebUsageError("min_rate and min_rate_window must be positive")


class RateWatch:
    """Ends a transfer that stays below its `MinRate` for a whole window.

    Each window starts with the first bytes after the previous one ended, so the
    server's time to answer is left to the read timeout; a body trickled a byte
    at a time, each read within that timeout, ends here.
    """

    def __init__(self, limit: MinRate | None) -> None:
        self.limit = limit
        self.start: float | None = None
        self.count = 0

    def add(self, count: int) -> None:
        """Count `count` bytes just received.

        Raises:
            httpx.ReadTimeout: the window ended below the rate.
        """
        limit = self.limit
        if limit is None:
            return
        now = time.monotonic()
        if self.start is None:
            self.start, self.count = now, 0
        self.count += count
        elapsed = now - self.start
        if elapsed >= limit.window:
            if self.count < limit.rate * elapsed:
                raise httpx.ReadTimeout(
                    f"transfer below {limit.rate:g} bytes/s for {limit.window:g} s (min_rate)"
                )
            self.start, self.count = now, 0
