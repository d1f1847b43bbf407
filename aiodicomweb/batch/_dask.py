# mypy: disallow-untyped-calls=False
# (distributed annotates only part of its API.)
"""A batch's series as Dask tasks on `dask.distributed`; imported only when asked for.

Every series is one task whose arguments are UIDs, the folder and the download
options. Credentials never travel in a task: `BatchConnection`, a worker plugin
registered for the batch and unregistered after it, carries the URL and the client
options to every worker (its repr names neither), where it keeps one client, on an
event loop thread of its own, for all the tasks of the batch. A `distributed.Semaphore`
named for the batch bounds the series in flight, each one request at a time, across
the whole cluster.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import dask
import distributed
from anyio.from_thread import BlockingPortal, start_blocking_portal
from distributed.diagnostics.plugin import WorkerPlugin

from aiodicomweb import AsyncDicomWebClient, DicomWebUsageError
from aiodicomweb.batch._items import (
    DownloadOptions,
    ItemResult,
    SeriesItem,
    download_item,
    failed,
    finished,
)
from aiodicomweb.batch._layout import completed
from aiodicomweb.batch._report import Tracker

__all__ = ["BatchConnection", "run_on_dask", "run_series"]

logger = logging.getLogger("aiodicomweb")


@dataclass
class _Opened:
    """What a worker opens for a batch on its first task."""

    starter: AbstractContextManager[BlockingPortal]
    portal: BlockingPortal
    client: AsyncDicomWebClient
    semaphore: distributed.Semaphore
    releaser: ThreadPoolExecutor

    def close(self) -> None:
        """Give back the leases still being released, close the client, end its loop."""
        self.releaser.shutdown(wait=True)
        try:
            self.portal.call(self.client.aclose)
        finally:
            self.starter.__exit__(None, None, None)


class BatchConnection(WorkerPlugin):
    """A worker's connection to the server for one batch: the client and the limit.

    Args:
        name: The batch's name: of this plugin and of its semaphore.
        url: The DICOMweb base URL.
        options: `AsyncDicomWebClient` keyword arguments, credentials included.
        max_requests: Leases of the batch's semaphore.
    """

    def __init__(self, name: str, url: str, options: dict[str, Any], max_requests: int) -> None:
        self.name = name
        self.max_requests = max_requests
        self._url = url
        self._options = options
        self._lock = threading.Lock()
        self._opened: _Opened | None = None

    def __repr__(self) -> str:
        parts = urlsplit(self._url)
        shown = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        return f"<BatchConnection {self.name} to {shown}>"

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "url": self._url, "options": self._options,
                "max_requests": self.max_requests}  # fmt: skip

    def __setstate__(self, state: dict[str, Any]) -> None:
        BatchConnection.__init__(
            self, state["name"], state["url"], state["options"], state["max_requests"]
        )

    def run(self, root: Path, item: SeriesItem, options: DownloadOptions) -> ItemResult:
        """Download one series (in a task): no lease and no request when it is complete,
        which happens when a worker died after recording it."""
        record = completed(root, item.study_uid, item.series_uid)
        if record is not None:
            return finished(item, record, "downloaded")
        opened = self._open()
        opened.semaphore.acquire()
        try:
            return opened.portal.call(partial(download_item, opened.client, root, item, options))
        finally:
            # The request is over; the task need not wait for the scheduler to hear it.
            opened.releaser.submit(opened.semaphore.release)

    def _open(self) -> _Opened:
        with self._lock:
            if self._opened is None:
                starter = start_blocking_portal()
                portal = starter.__enter__()
                try:
                    client = portal.call(partial(_client, self._url, self._options))
                except BaseException:
                    starter.__exit__(None, None, None)
                    raise
                semaphore = distributed.Semaphore(max_leases=self.max_requests, name=self.name)
                releaser = ThreadPoolExecutor(1, thread_name_prefix=self.name)
                self._opened = _Opened(starter, portal, client, semaphore, releaser)
            return self._opened

    async def teardown(self, worker: distributed.Worker) -> None:
        """Close all that the batch opened here, off the worker's loop (which releases
        the last leases meanwhile), when the batch unregisters the plugin."""
        with self._lock:
            opened, self._opened = self._opened, None
        if opened is not None:
            await asyncio.get_running_loop().run_in_executor(None, opened.close)


async def _client(url: str, options: dict[str, Any]) -> AsyncDicomWebClient:
    return AsyncDicomWebClient(url, **options)


def run_series(name: str, root: str, item: SeriesItem, options: DownloadOptions) -> ItemResult:
    """The task: one series, through this worker's `BatchConnection` for batch `name`."""
    connection = distributed.get_worker().plugins[name]
    assert isinstance(connection, BatchConnection)
    return connection.run(Path(root), item, options)


def run_on_dask(
    todo: Sequence[SeriesItem],
    root: Path,
    download: DownloadOptions,
    tracker: Tracker,
    *,
    url: str,
    options: dict[str, Any],
    scheduler: distributed.Client | str | None,
    workers: int | None,
    max_requests: int,
) -> None:
    """Run `todo` as tasks, each result to `tracker` as it finishes."""
    with _dask_client(scheduler, workers, max_requests) as client:
        name = f"aiodicomweb-batch-{secrets.token_hex(4)}"
        semaphore = distributed.Semaphore(
            max_leases=max_requests, name=name, scheduler_rpc=client.scheduler, loop=client.loop
        )
        semaphore.register()
        futures: dict[distributed.Future[ItemResult], SeriesItem] = {}
        try:
            _register(client, BatchConnection(name, url, options, max_requests))
            submitted = client.map(
                run_series, [name] * len(todo), [str(root)] * len(todo), todo,
                [download] * len(todo), key=[f"{name}-{n}" for n in range(len(todo))],
                pure=False,
            )  # fmt: skip
            futures = dict(zip(submitted, todo, strict=True))
            for future in distributed.as_completed(futures, loop=client.loop):
                tracker.add(_outcome(future, futures[future]))
                future.release()
        finally:
            client.cancel(list(futures))
            with suppress(Exception):  # the scheduler may be gone: nothing left to remove
                client.unregister_worker_plugin(name)
            semaphore.close()


def _register(client: distributed.Client, connection: BatchConnection) -> None:
    try:
        client.register_plugin(connection, name=connection.name)
    except (TypeError, AttributeError, ValueError) as error:  # pickling; never shows options
        raise DicomWebUsageError(
            f"the client options cannot be sent to the Dask workers ({type(error).__name__}): "
            "pass picklable values (no SSLContext, transport or open file)"
        ) from None


def _outcome(future: distributed.Future[ItemResult], item: SeriesItem) -> ItemResult:
    """The task's result; a task Dask gave up on (`KilledWorker`, ...) as a failed row."""
    try:
        result = future.result()
    except Exception as error:
        return failed(item.line, item.study_uid, item.series_uid, error)
    assert isinstance(result, ItemResult)
    return result


def _local_cluster_config() -> dict[str, Any]:
    """Settings of the clusters a batch starts: no statistical profiler, and glibc's own
    trimming rather than Dask's eager one; both cost CPU that the downloads need."""
    environ = dask.config.get("distributed.nanny.pre-spawn-environ", {})
    return {
        "distributed.worker.profile.enabled": False,
        "distributed.nanny.pre-spawn-environ": {
            name: value for name, value in environ.items() if name != "MALLOC_TRIM_THRESHOLD_"
        },
    }


@contextmanager
def _dask_client(
    scheduler: distributed.Client | str | None, workers: int | None, max_requests: int
) -> Iterator[distributed.Client]:
    """The caller's client, one for a scheduler address, or one on a new `LocalCluster`."""
    if isinstance(scheduler, distributed.Client):
        yield scheduler
    elif scheduler is not None:
        with distributed.Client(scheduler, set_as_default=False) as client:
            yield client
    else:
        assert workers is not None
        # As many series in flight as the limit allows; each thread waits on one series.
        threads = -(-max_requests // workers)
        with dask.config.set(_local_cluster_config()):  # read as the nannies start
            # Loopback only, on a free port: the dashboard (with bokeh) and /health.
            cluster = distributed.LocalCluster(
                n_workers=workers,
                threads_per_worker=threads,
                processes=True,
                dashboard_address="127.0.0.1:0",
                silence_logs=logging.ERROR,  # Dask's own warnings at shutdown are noise here
            )
        with cluster, distributed.Client(cluster, set_as_default=False) as client:
            logger.info("batch: a local Dask cluster of %d workers, dashboard %s", workers,
                        client.dashboard_link)  # fmt: skip
            yield client
