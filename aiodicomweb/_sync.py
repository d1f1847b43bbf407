"""DicomWebClient: the async core, blocking, driven through an anyio portal.

Every method is the async method of the same name run on an event loop in a
background thread (one for all the clients of the process), so the facade works
from plain scripts, from worker threads, and from sync code that itself runs
inside an event loop (notebooks, Qt apps). Nothing here implements a transaction.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
)
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    contextmanager,
    suppress,
)
from http.cookiejar import CookieJar
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal

from aiodicomweb._client import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MIN_RATE,
    DEFAULT_MIN_RATE_WINDOW,
    DEFAULT_TIMEOUT,
    AsyncDicomWebClient,
)
from aiodicomweb._delete import DeleteStrategy
from aiodicomweb._exceptions import ClientClosedError
from aiodicomweb._inflate import DEFAULT_LIMITS
from aiodicomweb._multipart_stream import DEFAULT_MAX_PARTS, MultipartStream, Part
from aiodicomweb._retry import RetryPolicy

__all__ = ["DicomWebClient", "SyncPart"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


def _blocking(
    method: Callable[Concatenate[AsyncDicomWebClient, P], Awaitable[R]],
) -> Callable[Concatenate[DicomWebClient, P], R]:
    """The blocking twin of an async client method (same signature and docstring)."""

    def call(self: DicomWebClient, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._call(lambda: method(self._client, *args, **kwargs))

    functools.update_wrapper(call, method)
    return call


def _blocking_stream(
    method: Callable[Concatenate[AsyncDicomWebClient, P], AbstractAsyncContextManager[Any]],
) -> Callable[Concatenate[DicomWebClient, P], AbstractContextManager[Iterator[SyncPart]]]:
    """The blocking twin of a `stream_*` method: a context manager yielding parts."""

    def call(
        self: DicomWebClient, /, *args: P.args, **kwargs: P.kwargs
    ) -> AbstractContextManager[Iterator[SyncPart]]:
        return self._stream(method(self._client, *args, **kwargs))

    functools.update_wrapper(call, method)
    return call


def _blocking_iterator(
    method: Callable[Concatenate[AsyncDicomWebClient, P], AsyncIterator[T]],
) -> Callable[Concatenate[DicomWebClient, P], Iterator[T]]:
    """The blocking twin of an async generator method."""

    def call(self: DicomWebClient, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        return self._iterate(method(self._client, *args, **kwargs))

    functools.update_wrapper(call, method)
    return call


def _drain(
    call: Callable[[Callable[[], Awaitable[T]]], T], source: AsyncIterator[T]
) -> Iterator[T]:
    """Items of an async iterator, each fetched through `call` (a portal call)."""
    while True:
        try:
            yield call(source.__anext__)
        except StopAsyncIteration:
            return


class SyncPart:
    """A `Part` read from blocking code: same attributes, blocking reads."""

    def __init__(self, part: Part, portal: BlockingPortal) -> None:
        self._part = part
        self._portal = portal
        self.headers = part.headers
        self.content_type = part.content_type
        self.transfer_syntax = part.transfer_syntax
        self.content_location = part.content_location
        self.content_length = part.content_length
        self.index = part.index

    def __repr__(self) -> str:
        return repr(self._part)

    def iter_bytes(self) -> Iterator[bytes]:
        """The body in chunks, as it arrives (see `Part.aiter_bytes`)."""
        yield from _drain(self._portal.call, self._part.aiter_bytes())

    def read(self) -> bytes:
        """The whole body (see `Part.read`)."""
        return self._portal.call(self._part.read)


class _SharedLoop:
    """One background event loop for every blocking client of the process.

    Started by the first client and stopped when the last one closes, so that a
    script opening many clients (one adapter per call) runs one thread, not many.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._portal_cm: AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        self.thread_id: int | None = None  # the loop's thread, while it runs

    def acquire(self) -> BlockingPortal:
        with self._lock:
            if self._portal is None:
                self._portal_cm = start_blocking_portal()
                self._portal = self._portal_cm.__enter__()
                self.thread_id = self._portal.call(threading.get_ident)
            self._users += 1
            return self._portal

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users or self._portal is None or self._portal_cm is None:
                return
            portal, portal_cm = self._portal, self._portal_cm
            self._portal = self._portal_cm = self.thread_id = None
            try:
                # A stream a script left suspended would keep the loop (and the exit) waiting.
                with suppress(RuntimeError):
                    portal.call(portal.stop, True)
            finally:
                portal_cm.__exit__(None, None, None)


_LOOP = _SharedLoop()


def _shutdown(portal: BlockingPortal, client: AsyncDicomWebClient) -> None:
    if threading.get_ident() == _LOOP.thread_id:
        # Collected on the loop's own thread, which cannot wait for itself: close elsewhere.
        threading.Thread(target=_shutdown, args=(portal, client), daemon=True).start()
        return
    try:
        portal.call(client.aclose)
    finally:
        _LOOP.release()


_CANCEL_GRACE = 10.0  # seconds a cancelled call may take to clean up


class DicomWebClient:
    """The blocking client: `AsyncDicomWebClient`'s constructor and methods, blocking.

    Use it as a context manager or call `close()`; a client that is never closed
    is closed when it is garbage collected or at interpreter exit. Every blocking
    client of the process shares one background thread and event loop, in which
    progress callbacks run. The arguments are those of `AsyncDicomWebClient`.
    """

    def __init__(
        self,
        url: str,
        *,
        qido_url_prefix: str | None = None,
        wado_url_prefix: str | None = None,
        stow_url_prefix: str | None = None,
        delete_url_prefix: str | None = None,
        auth: httpx.Auth | tuple[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = RetryPolicy(),  # noqa: B008 - frozen value object
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        http2: bool = False,
        verify: Any = True,
        cert: Any = None,
        proxy: str | httpx.Proxy | None = None,
        cookies: httpx.Cookies | CookieJar | dict[str, str] | None = None,
        trust_env: bool = True,
        delete_strategy: DeleteStrategy = "dicomweb",
        orthanc_url: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        chunk_size: int = 1 << 20,
        max_decoded_size: int = DEFAULT_LIMITS.max_decoded_size,
        max_expansion_ratio: float = DEFAULT_LIMITS.max_expansion_ratio,
        min_rate: float | None = DEFAULT_MIN_RATE,
        min_rate_window: float = DEFAULT_MIN_RATE_WINDOW,
        max_parts: int = DEFAULT_MAX_PARTS,
    ) -> None:
        portal = _LOOP.acquire()
        try:
            client = AsyncDicomWebClient(
                url,
                qido_url_prefix=qido_url_prefix,
                wado_url_prefix=wado_url_prefix,
                stow_url_prefix=stow_url_prefix,
                delete_url_prefix=delete_url_prefix,
                auth=auth,
                headers=headers,
                timeout=timeout,
                retry=retry,
                max_connections=max_connections,
                http2=http2,
                verify=verify,
                cert=cert,
                proxy=proxy,
                cookies=cookies,
                trust_env=trust_env,
                delete_strategy=delete_strategy,
                orthanc_url=orthanc_url,
                transport=transport,
                chunk_size=chunk_size,
                max_decoded_size=max_decoded_size,
                max_expansion_ratio=max_expansion_ratio,
                min_rate=min_rate,
                min_rate_window=min_rate_window,
                max_parts=max_parts,
            )
        except BaseException:
            _LOOP.release()
            raise
        self._portal = portal
        self._client = client
        # Holds no reference to self, so an abandoned client can be collected.
        self._finalizer = weakref.finalize(self, _shutdown, portal, client)

    def __repr__(self) -> str:
        return repr(self._client).replace("AsyncDicomWebClient", "DicomWebClient", 1)

    def __enter__(self) -> DicomWebClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection (idempotent); the last open client stops the shared thread."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        """Whether `close` has run."""
        return not self._finalizer.alive

    @property
    def async_client(self) -> AsyncDicomWebClient:
        """The async core this facade drives."""
        return self._client

    @property
    def retry(self) -> Any:
        """The retry policy of the core (see `AsyncDicomWebClient.retry`)."""
        return self._client.retry

    @retry.setter
    def retry(self, policy: Any) -> None:
        self._client.retry = policy

    def _call(self, function: Callable[[], Awaitable[R]]) -> R:
        if self.closed:
            raise ClientClosedError("this DicomWebClient is closed")
        finished = threading.Event()

        async def run() -> R:
            try:
                return await function()
            finally:
                finished.set()

        future = self._portal.start_task_soon(run)
        try:
            return future.result()
        except BaseException:
            # Ctrl-C (or any error here) cancels the work itself, which then cleans
            # up (no half-written folder) before the interrupt goes on.
            if future.cancel():
                finished.wait(_CANCEL_GRACE)
            raise

    @contextmanager
    def _stream(
        self, cm: AbstractAsyncContextManager[MultipartStream]
    ) -> Iterator[Iterator[SyncPart]]:
        if self.closed:
            raise ClientClosedError("this DicomWebClient is closed")
        with self._portal.wrap_async_context_manager(cm) as parts:
            yield (SyncPart(part, self._portal) for part in self._iterate(parts))

    def _iterate(self, iterator: AsyncIterator[T]) -> Iterator[T]:
        return _drain(self._call, iterator)

    search = _blocking(AsyncDicomWebClient.search)
    search_studies = _blocking(AsyncDicomWebClient.search_studies)
    search_series = _blocking(AsyncDicomWebClient.search_series)
    search_instances = _blocking(AsyncDicomWebClient.search_instances)
    search_pages = _blocking_iterator(AsyncDicomWebClient.search_pages)
    find_study_uid = _blocking(AsyncDicomWebClient.find_study_uid)
    list_series = _blocking(AsyncDicomWebClient.list_series)
    list_series_uids = _blocking(AsyncDicomWebClient.list_series_uids)
    list_instance_uids = _blocking(AsyncDicomWebClient.list_instance_uids)
    stream_study = _blocking_stream(AsyncDicomWebClient.stream_study)
    stream_series = _blocking_stream(AsyncDicomWebClient.stream_series)
    stream_instance = _blocking_stream(AsyncDicomWebClient.stream_instance)
    stream_frames = _blocking_stream(AsyncDicomWebClient.stream_frames)
    stream_bulkdata = _blocking_stream(AsyncDicomWebClient.stream_bulkdata)
    retrieve_study = _blocking(AsyncDicomWebClient.retrieve_study)
    retrieve_series = _blocking(AsyncDicomWebClient.retrieve_series)
    retrieve_instance = _blocking(AsyncDicomWebClient.retrieve_instance)
    retrieve_study_metadata = _blocking(AsyncDicomWebClient.retrieve_study_metadata)
    retrieve_series_metadata = _blocking(AsyncDicomWebClient.retrieve_series_metadata)
    retrieve_instance_metadata = _blocking(AsyncDicomWebClient.retrieve_instance_metadata)
    retrieve_frames = _blocking(AsyncDicomWebClient.retrieve_frames)
    retrieve_bulkdata = _blocking(AsyncDicomWebClient.retrieve_bulkdata)
    retrieve_rendered = _blocking(AsyncDicomWebClient.retrieve_rendered)
    retrieve_thumbnail = _blocking(AsyncDicomWebClient.retrieve_thumbnail)
    download_series = _blocking(AsyncDicomWebClient.download_series)
    download_study = _blocking(AsyncDicomWebClient.download_study)
    store = _blocking(AsyncDicomWebClient.store)
    store_directory = _blocking(AsyncDicomWebClient.store_directory)
    delete_study = _blocking(AsyncDicomWebClient.delete_study)
    delete_series = _blocking(AsyncDicomWebClient.delete_series)
    delete_instance = _blocking(AsyncDicomWebClient.delete_instance)
