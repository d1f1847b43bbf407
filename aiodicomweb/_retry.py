"""Retry decisions (pure) and the one place that drives tenacity."""

from __future__ import annotations

import datetime
import email.utils
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import anyio
import tenacity

from aiodicomweb._exceptions import (
    DicomWebHTTPError,
    DicomWebTransportError,
    DicomWebUsageError,
    MultipartError,
)
from aiodicomweb._validate import positive_integer

__all__ = ["RetryPolicy", "parse_retry_after", "retrying"]

logger = logging.getLogger("aiodicomweb")
T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]

DEFAULT_RETRY_STATUSES = frozenset({429, 408, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How failed requests are retried.

    Defaults match the legacy adapter's documented ones: 5 attempts, exponential
    backoff with a 1 s multiplier, retry on 429, 408, 503 and 504, plus
    connection errors and timeouts. Other 4xx are never retried.

    Attributes:
        max_attempts: Total attempts, the first one included.
        backoff_multiplier: Seconds; the wait before attempt n+1 is
            `backoff_multiplier * 2 ** (n - 1)`, capped at `backoff_max`.
        backoff_max: Longest wait between two attempts, in seconds.
        jitter: Up to this many seconds, drawn at random, are added to each wait.
        retry_statuses: HTTP statuses that are retried.
        retry_transport_errors: Whether connection failures and timeouts are retried.
        max_retry_after: Longest `Retry-After` honoured, in seconds; longer asks are capped.
        sleep: How to wait (an async callable taking seconds); `anyio.sleep` when
            None. Tests inject a recorder here instead of waiting for real.
    """

    max_attempts: int = 5
    backoff_multiplier: float = 1.0
    backoff_max: float = 30.0
    jitter: float = 0.5
    retry_statuses: frozenset[int] = field(default=DEFAULT_RETRY_STATUSES)
    retry_transport_errors: bool = True
    max_retry_after: float = 120.0
    sleep: Sleep | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        positive_integer("max_attempts", self.max_attempts)
        if min(self.backoff_multiplier, self.backoff_max, self.jitter, self.max_retry_after) < 0:
            raise DicomWebUsageError("waits must not be negative")
        object.__setattr__(self, "retry_statuses", frozenset(int(s) for s in self.retry_statuses))

    @classmethod
    def from_legacy(
        cls,
        retry: bool = True,
        max_attempts: int = 5,
        wait_exponential_multiplier: float = 1000,
        retriable_error_codes: Iterable[int] = tuple(DEFAULT_RETRY_STATUSES),
    ) -> RetryPolicy | None:
        """The policy the legacy `setHttpRetryParameters` describes (multiplier in ms)."""
        if not retry:
            return None
        return cls(
            max_attempts=max_attempts,
            backoff_multiplier=wait_exponential_multiplier / 1000,
            retry_statuses=frozenset(retriable_error_codes),  # made ints by __post_init__
        )

    def should_retry(self, error: BaseException) -> bool:
        """Whether `error` (raised by one attempt) is worth another attempt."""
        if isinstance(error, DicomWebHTTPError):
            return error.status in self.retry_statuses
        # A body cut short (MultipartError) is a broken connection in practice.
        broken = isinstance(error, (DicomWebTransportError, MultipartError))
        return self.retry_transport_errors and broken

    def wait(self, failed_attempts: int, retry_after: float | None = None) -> float:
        """Seconds to wait after `failed_attempts` failures (1-based)."""
        if retry_after is not None:
            # The server's wish wins over our backoff, within a cap.
            return min(max(retry_after, 0.0), self.max_retry_after)
        growth = 2.0 ** min(failed_attempts - 1, 64)  # capped: 2**1024 overflows a float
        backoff = min(self.backoff_max, self.backoff_multiplier * growth)
        return float(backoff + random.uniform(0, self.jitter))


def parse_retry_after(value: str | None, now: datetime.datetime | None = None) -> float | None:
    """Seconds from a `Retry-After` header: delta-seconds or an HTTP-date."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return max(0.0, (when - now).total_seconds())


async def retrying(policy: RetryPolicy | None, attempt: Callable[[], Awaitable[T]]) -> T:
    """Run `attempt` until it succeeds or `policy` gives up; re-raise the last error.

    Each call of `attempt` is one whole unit (one request, one instance): a
    stream is never resumed in the middle.
    """
    if policy is None or policy.max_attempts == 1:
        return await attempt()
    # The happy path skips tenacity's per-call setup; a retriable first failure is
    # replayed to tenacity as its attempt 1, so waits, counts and logs are its own.
    failed: list[Exception] = []
    try:
        return await attempt()
    except Exception as error:
        if not policy.should_retry(error):
            raise
        failed.append(error)

    async def run() -> T:
        if failed:
            raise failed.pop()
        return await attempt()

    def wait(state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        return policy.wait(state.attempt_number, retry_after)

    def log(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        logger.info(
            "attempt %d failed (%s); retrying in %.1f s", state.attempt_number, error, delay
        )

    controller = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(policy.max_attempts),
        wait=wait,
        retry=tenacity.retry_if_exception(policy.should_retry),
        before_sleep=log,
        sleep=policy.sleep or anyio.sleep,
        reraise=True,
    )
    return await controller(run)
