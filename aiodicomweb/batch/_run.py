"""A batch from manifest to report: check, plan, download (here or on Dask), record.

Nothing is downloaded before the whole manifest is valid. Planning lists the series
of each study row (one QIDO request per study) and sets aside the series whose
completion record says they are done; only the rest become work, in this process
under one limiter, or as Dask tasks under one cluster-wide semaphore.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import anyio

from aiodicomweb import (
    AsyncDicomWebClient,
    DicomWebUsageError,
    MissingDependencyError,
    check_destination,
)
from aiodicomweb.batch._items import (
    DownloadOptions,
    ItemResult,
    SeriesItem,
    download_item,
    failed,
    finished,
)
from aiodicomweb.batch._layout import completed, prepare_root
from aiodicomweb.batch._manifest import Manifest, ManifestRow, read_manifest
from aiodicomweb.batch._report import (
    BatchResult,
    ProgressCallback,
    ReportWriter,
    Tracker,
    secrets_of,
)

if TYPE_CHECKING:
    import distributed

__all__ = ["DEFAULT_MAX_REQUESTS", "download_manifest", "download_manifest_async"]

logger = logging.getLogger("aiodicomweb")
T = TypeVar("T")
DEFAULT_MAX_REQUESTS = 4
_DEFAULT_CONNECTIONS: int = (
    inspect.signature(AsyncDicomWebClient).parameters["max_connections"].default
)
ManifestSource = str | os.PathLike[str] | Manifest


@dataclass
class _Batch:
    """One batch's settings and its checked inputs, before any request."""

    rows: tuple[ManifestRow, ...]
    invalid: list[ItemResult]
    root: Path
    report: ReportWriter | None
    progress: ProgressCallback | None
    options: DownloadOptions
    max_requests: int
    started: float
    secrets: list[str] = field(default_factory=list)

    def close(self) -> None:
        if self.report is not None:
            self.report.close()


@dataclass
class _Plan:
    """The series still to download, and the rows already settled (skipped, failed)."""

    todo: list[SeriesItem]
    settled: list[ItemResult]


def download_manifest(
    manifest: ManifestSource,
    dest_root: str | os.PathLike[str],
    *,
    url: str,
    scheduler: distributed.Client | str | None = None,
    workers: int | None = None,
    max_requests: int = DEFAULT_MAX_REQUESTS,
    skip_invalid: bool = False,
    report: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
    strategy: Literal["multipart", "per_instance"] = "multipart",
    fallback: bool = False,
    **client_options: Any,
) -> BatchResult:
    """Download every study and series of a manifest into `dest_root/<study>/<series>/`.

    In this process by default, `max_requests` series at a time; on Dask with
    `scheduler` (a `distributed.Client`, or a scheduler address such as
    `tcp://host:8786`) or `workers` (a `LocalCluster` of that many worker processes,
    with `max_requests` threads in all, for the duration of the call). Each series
    makes one request at a time, so `max_requests` bounds the requests in flight to
    the server, across the whole cluster (a `distributed.Semaphore`). Credentials in
    `client_options` reach the workers in a worker plugin, never in a task; the series
    of study rows are listed here. Series whose completion record exists are skipped,
    so a rerun resumes; on Dask, `dest_root` must be the same folder on every worker.

    Args:
        manifest: A CSV or JSON-lines file (see `read_manifest`), or a `Manifest`.
        dest_root: The batch's folder; made if missing, reused by reruns.
        url: The DICOMweb base URL.
        skip_invalid: Download the valid rows of a manifest that has invalid ones
            (these are reported as failed); by default nothing is downloaded then.
        report: A `.csv` or `.jsonl` file receiving one row per item as it finishes.
        progress: Called with a `BatchProgress` as instances arrive (in-process)
            or as items finish (Dask).
        strategy, fallback: How each series is fetched, as in `download_series`.
        client_options: `AsyncDicomWebClient` keyword arguments (auth, headers,
            timeout, retry, verify, ...); on Dask they must be picklable.

    Returns:
        A `BatchResult`: one row per series (or failed study or invalid row).

    Raises:
        ManifestError: the manifest has invalid rows (and not `skip_invalid`), or
            cannot be read as one; raised before any request.
        MissingDependencyError: Dask is asked for and `aiodicomweb[dask]` is missing.
        DicomWebUsageError: invalid options.
        OSError: `dest_root` or the report cannot be made.
    """
    if scheduler is not None and workers is not None:
        raise DicomWebUsageError("give a Dask scheduler or a number of workers, not both")
    if workers is not None:
        _positive("workers", workers)
    run_on_dask = None if scheduler is None and workers is None else _dask_runner()
    options = {"max_connections": max(_DEFAULT_CONNECTIONS, max_requests), **client_options}
    batch = _start(manifest, dest_root, max_requests, skip_invalid, report, progress,
                   DownloadOptions(strategy, fallback))  # fmt: skip
    batch.secrets = secrets_of(url, options)
    try:
        if run_on_dask is None:
            return _blocking(partial(_in_process, batch, url, options))
        plan = _blocking(partial(_plan_with_new_client, batch, url, options))
        tracker = _tracker(batch, plan)
        if plan.todo:  # a rerun with nothing left to do starts no cluster
            run_on_dask(
                plan.todo, batch.root, batch.options, tracker, url=url, options=options,
                scheduler=scheduler, workers=workers, max_requests=max_requests,
            )  # fmt: skip
        return tracker.result(batch.root)
    finally:
        batch.close()


async def download_manifest_async(
    manifest: ManifestSource,
    dest_root: str | os.PathLike[str],
    *,
    client: AsyncDicomWebClient,
    max_requests: int = DEFAULT_MAX_REQUESTS,
    skip_invalid: bool = False,
    report: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
    strategy: Literal["multipart", "per_instance"] = "multipart",
    fallback: bool = False,
) -> BatchResult:
    """`download_manifest` in this process, on an open client (asyncio or trio).

    Raises:
        The errors of `download_manifest`.
    """
    batch = _start(manifest, dest_root, max_requests, skip_invalid, report, progress,
                   DownloadOptions(strategy, fallback))  # fmt: skip
    try:
        return await _run_with(client, batch)
    finally:
        batch.close()


def _start(
    manifest: ManifestSource,
    dest_root: str | os.PathLike[str],
    max_requests: int,
    skip_invalid: bool,
    report: str | os.PathLike[str] | None,
    progress: ProgressCallback | None,
    options: DownloadOptions,
) -> _Batch:
    """Check everything that needs no server: manifest, folder, report, limits."""
    started = time.perf_counter()
    _positive("max_requests", max_requests)
    if options.strategy not in ("multipart", "per_instance"):
        raise DicomWebUsageError(f"unknown strategy {options.strategy!r}")
    read = manifest if isinstance(manifest, Manifest) else read_manifest(manifest)
    if not skip_invalid:
        read.check()
    root = Path(dest_root).absolute()
    if not root.is_dir():
        check_destination(root)  # a clear error for a folder that cannot be made
    prepare_root(root)
    writer = None if report is None else ReportWriter(report)
    invalid = [
        ItemResult(row.line, "", None, "failed", error_type=row.error_type, error=row.reason)
        for row in read.invalid
    ]
    return _Batch(read.rows, invalid, root, writer, progress, options, max_requests, started)


def _positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DicomWebUsageError(f"{name} must be a positive integer: {value!r}")


def _dask_runner() -> Callable[..., None]:
    """The Dask runner, or a clear error naming the extra when Dask is missing."""
    try:
        from aiodicomweb.batch._dask import run_on_dask
    except ImportError as error:
        raise MissingDependencyError(
            'running a batch on Dask needs dask.distributed: pip install "aiodicomweb[dask]"'
        ) from error
    return run_on_dask


def _blocking(function: Callable[[], Awaitable[T]]) -> T:
    """Run `function` to completion, in a thread of its own when a loop runs here (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return anyio.run(function)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(anyio.run, function).result()


async def _in_process(batch: _Batch, url: str, options: dict[str, Any]) -> BatchResult:
    async with AsyncDicomWebClient(url, **options) as client:
        return await _run_with(client, batch)


async def _plan_with_new_client(batch: _Batch, url: str, options: dict[str, Any]) -> _Plan:
    async with AsyncDicomWebClient(url, **options) as client:
        return await _plan(client, batch, anyio.CapacityLimiter(batch.max_requests))


async def _run_with(client: AsyncDicomWebClient, batch: _Batch) -> BatchResult:
    """Plan, then download the series left to do, `max_requests` at a time."""
    limiter = anyio.CapacityLimiter(batch.max_requests)
    plan = await _plan(client, batch, limiter)
    tracker = _tracker(batch, plan)

    async def one(item: SeriesItem) -> None:
        async with limiter:
            result = await download_item(client, batch.root, item, batch.options,
                                         tracker.item_progress(item))  # fmt: skip
        tracker.finish(item, result)

    async with anyio.create_task_group() as group:
        for item in plan.todo:
            group.start_soon(one, item)
    return tracker.result(batch.root)


def _tracker(batch: _Batch, plan: _Plan) -> Tracker:
    """A tracker holding the rows settled before any download."""
    total = len(batch.invalid) + len(plan.settled) + len(plan.todo)
    tracker = Tracker(total, batch.progress, batch.report, batch.secrets, batch.started)
    for result in [*batch.invalid, *plan.settled]:
        tracker.add(result)
    logger.info("batch: %d series to download, %d complete already, %d rows failed",
                len(plan.todo), sum(r.status == "skipped" for r in plan.settled),
                sum(r.status == "failed" for r in [*batch.invalid, *plan.settled]))  # fmt: skip
    return tracker


async def _plan(
    client: AsyncDicomWebClient, batch: _Batch, limiter: anyio.CapacityLimiter
) -> _Plan:
    """Series rows as they are, study rows as their series; then the complete ones aside."""
    listings = await _list_studies(client, batch.rows, limiter)
    items: dict[tuple[str, str], SeriesItem] = {}
    settled: list[ItemResult] = []
    for row in batch.rows:
        if row.series_uid is not None:
            key = (row.study_uid, row.series_uid)
            items.setdefault(key, SeriesItem(row.line, *key))
            continue
        listing = listings.pop(row.study_uid, None)  # a repeated study row adds nothing
        if isinstance(listing, BaseException):
            settled.append(failed(row.line, row.study_uid, None, listing))
        for series_uid in listing if isinstance(listing, list) else ():
            items.setdefault((row.study_uid, series_uid),
                             SeriesItem(row.line, row.study_uid, series_uid))  # fmt: skip
    todo, done = await anyio.to_thread.run_sync(_split_complete, batch.root, list(items.values()))
    return _Plan(todo, settled + done)


async def _list_studies(
    client: AsyncDicomWebClient, rows: Sequence[ManifestRow], limiter: anyio.CapacityLimiter
) -> dict[str, list[str] | BaseException]:
    """The series of each study row's study, or why they could not be listed."""
    listings: dict[str, list[str] | BaseException] = {}

    async def one(study_uid: str) -> None:
        async with limiter:
            try:
                series = list(await client.list_series(study_uid))
            except Exception as error:
                listings[study_uid] = error
                return
        listings[study_uid] = series or LookupError(f"study {study_uid} not found on the server")

    async with anyio.create_task_group() as group:
        for study_uid in dict.fromkeys(r.study_uid for r in rows if r.series_uid is None):
            group.start_soon(one, study_uid)
    return listings


def _split_complete(
    root: Path, items: list[SeriesItem]
) -> tuple[list[SeriesItem], list[ItemResult]]:
    """The items still to download, and the skipped rows of those complete already."""
    todo: list[SeriesItem] = []
    done: list[ItemResult] = []
    for item in items:
        record = completed(root, item.study_uid, item.series_uid)
        if record is None:
            todo.append(item)
        else:
            done.append(finished(item, record, "skipped"))
    return todo, done
