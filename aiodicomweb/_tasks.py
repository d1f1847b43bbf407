"""Structured concurrency that raises our documented errors, not exception groups."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.abc import TaskGroup

if sys.version_info < (3, 11):  # pragma: no cover - exercised on 3.10 only
    from exceptiongroup import BaseExceptionGroup

__all__ = ["task_group"]

logger = logging.getLogger("aiodicomweb")


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            found.extend(_leaves(error))
        else:
            found.append(error)
    return found


@asynccontextmanager
async def task_group() -> AsyncIterator[TaskGroup]:
    """An anyio task group whose failure is its first real error, unwrapped.

    Callers of a download expect `ConnectionError`, `OSError` and friends, as
    documented; when several tasks fail, the first error is raised and the
    others are logged.
    """
    try:
        async with anyio.create_task_group() as group:
            yield group
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        cancelled = anyio.get_cancelled_exc_class()
        real = [e for e in leaves if not isinstance(e, cancelled)] or leaves
        for other in real[1:]:
            logger.debug("also failed: %r", other)
        raise real[0] from None
