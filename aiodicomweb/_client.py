"""AsyncDicomWebClient: the public async client, one delegation per transaction."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from http.cookiejar import CookieJar
from typing import Any

import httpx

from aiodicomweb import _bulk_download, _bulk_store, _delete, _qido, _wado
from aiodicomweb._bulk_download import DownloadResult, ProgressCallback, Strategy
from aiodicomweb._bulk_store import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_INSTANCES,
    DEFAULT_MAX_REQUEST_SIZE,
    StoreProgressCallback,
    StoreSource,
)
from aiodicomweb._delete import DELETE_STRATEGIES, DeleteStrategy
from aiodicomweb._dicom_json import JSON
from aiodicomweb._exceptions import DicomWebUsageError
from aiodicomweb._inflate import DEFAULT_LIMITS, InflateLimits
from aiodicomweb._media import OCTET_STREAM, MediaTypes
from aiodicomweb._multipart_stream import DEFAULT_MAX_PARTS, MultipartStream
from aiodicomweb._rate import MinRate
from aiodicomweb._retry import RetryPolicy
from aiodicomweb._session import open_session
from aiodicomweb._stow_response import StoreResult
from aiodicomweb._urls import Level, Params, extra_query, redact_url, resource_path
from aiodicomweb._wado import RenderedImage

__all__ = ["DEFAULT_TIMEOUT", "AsyncDicomWebClient", "DeleteStrategy"]

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
DEFAULT_MAX_CONNECTIONS = 8
DEFAULT_MIN_RATE = 1024.0  # bytes per second, over...
DEFAULT_MIN_RATE_WINDOW = 60.0  # ...seconds: far below any healthy server


class AsyncDicomWebClient:
    """An asyncio (and trio) DICOMweb client on httpx.

    Args:
        url: The DICOMweb base URL, e.g. `http://127.0.0.1:8042/dicom-web`.
        qido_url_prefix: Path segment appended to `url` for QIDO-RS (likewise
            `wado_url_prefix`, `stow_url_prefix`, `delete_url_prefix`).
        auth: An `httpx.Auth`, a `(user, password)` tuple, or a
            `BearerTokenAuth`.
        headers: Extra headers sent with every request.
        timeout: Seconds, or an `httpx.Timeout`; the default never lets a
            request hang forever (10 s to connect, 60 s per read).
        retry: The `RetryPolicy`; None turns retries off.
        max_connections: Upper bound of concurrent connections to the server.
        http2: Use HTTP/2 when the server offers it (needs `aiodicomweb[http2]`).
        verify: TLS verification: True, False, a CA bundle path or an SSLContext.
        cert: Client certificate, as httpx takes it.
        proxy: Proxy URL, as httpx takes it.
        cookies: Cookies sent with every request.
        trust_env: Read proxy settings and `.netrc` from the environment.
        delete_strategy: `"dicomweb"` (standard DELETE) or `"orthanc"` (Orthanc's
            REST API, see `delete_study`).
        orthanc_url: Orthanc's REST root for the `"orthanc"` strategy; by default
            `url` without its last path segment.
        transport: An httpx transport, the seam for tests.
        chunk_size: Bytes per file read when storing.
        max_decoded_size: Bytes a compressed search, metadata or other buffered
            answer may inflate to (512 MiB); past it, `UnexpectedResponseError`.
        max_expansion_ratio: Inflated bytes per compressed byte such an answer may
            reach once past 16 MiB (200; DICOM JSON compresses 10-30:1, a
            compression bomb 1000:1); past it, `UnexpectedResponseError`.
        min_rate: Bytes per second below which a transfer that lasts a whole
            `min_rate_window` is ended with `DicomWebTimeoutError` (curl's
            `--speed-limit`); None turns it off. Default 1024.
        min_rate_window: Seconds of that window (curl's `--speed-time`); 60.
        max_parts: Parts one multipart answer may hold (100,000): past it, a
            `MultipartError` (a series of countless empty or tiny parts is an attack).
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
        if delete_strategy not in DELETE_STRATEGIES:
            raise DicomWebUsageError(f"unknown delete_strategy: {delete_strategy!r}")
        self._session = open_session(
            url, qido_url_prefix=qido_url_prefix, wado_url_prefix=wado_url_prefix,
            stow_url_prefix=stow_url_prefix, delete_url_prefix=delete_url_prefix,
            orthanc_url=orthanc_url, auth=auth, headers=headers, timeout=timeout, retry=retry,
            max_connections=max_connections, http2=http2, verify=verify, cert=cert,
            proxy=proxy, cookies=cookies, trust_env=trust_env, transport=transport,
            chunk_size=chunk_size,
            inflate=InflateLimits(max_decoded_size, max_expansion_ratio),
            min_rate=None if min_rate is None else MinRate(min_rate, min_rate_window),
            max_parts=max_parts,
        )  # fmt: skip
        self.url = self._session.roots.base
        self.delete_strategy: DeleteStrategy = delete_strategy

    def __repr__(self) -> str:
        return f"<AsyncDicomWebClient {redact_url(self.url)!r}>"

    @property
    def retry(self) -> RetryPolicy | None:
        """The retry policy; assign a new `RetryPolicy` (or None) to change it."""
        return self._session.retry

    @retry.setter
    def retry(self, policy: RetryPolicy | None) -> None:
        self._session.retry = policy

    async def __aenter__(self) -> AsyncDicomWebClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every connection of the client; every later call raises `ClientClosedError`."""
        await self._session.aclose()

    # -- QIDO-RS -------------------------------------------------------------

    async def search(
        self,
        level: Level,
        study_uid: str | None = None,
        series_uid: str | None = None,
        match: Mapping[str | int, object] | None = None,
        *,
        include_fields: Iterable[str | int] | str | None = None,
        fuzzy: bool | None = None,
        limit: int | None = None,
        offset: int | None = None,
        additional_params: Params | None = None,
    ) -> list[JSON]:
        """QIDO-RS search at any resource the standard defines.

        Args:
            level: `"studies"`, `"series"` or `"instances"`.
            study_uid: Scope the search to a study (series and instance levels).
            series_uid: Scope an instance search to a series (needs `study_uid`).
            match: Match keys (keyword, tag or dotted sequence path) to values:
                strings with `*`/`?` wildcards, UID lists, `(start, end)` ranges,
                dates and times.
            include_fields: Extra attributes to return, or `"all"`.
            fuzzy: Ask for fuzzy matching of person names.
            limit: Maximum number of results.
            offset: Number of results to skip.
            additional_params: Extra query parameters (vendor extensions), sent
                after the standard ones; a sequence value repeats the parameter.

        Returns:
            DICOM JSON datasets; an empty list for 204 or an empty body. A server
            that caps its answer and says so (`Warning: 299`) is asked for the
            rest, up to `limit`.

        Raises:
            DicomWebUsageError: invalid UID, unknown attribute or bad value
                (before any request).
            DicomWebHTTPError: the server refused the search.
            DicomWebTransportError: the connection failed.
            UnexpectedResponseError: the answer is not a JSON array.
        """
        return await _qido.search(
            self._session, level, study_uid, series_uid, match,
            include_fields=include_fields, fuzzy=fuzzy, limit=limit, offset=offset,
            additional_params=additional_params,
        )  # fmt: skip

    async def search_studies(
        self,
        match: Mapping[str | int, object] | None = None,
        *,
        include_fields: Iterable[str | int] | str | None = None,
        fuzzy: bool | None = None,
        limit: int | None = None,
        offset: int | None = None,
        additional_params: Params | None = None,
    ) -> list[JSON]:
        """Search studies; see `search` for arguments, results and errors."""
        return await self.search(
            "studies", None, None, match,
            include_fields=include_fields, fuzzy=fuzzy, limit=limit, offset=offset,
            additional_params=additional_params,
        )  # fmt: skip

    async def search_series(
        self,
        study_uid: str | None = None,
        match: Mapping[str | int, object] | None = None,
        *,
        include_fields: Iterable[str | int] | str | None = None,
        fuzzy: bool | None = None,
        limit: int | None = None,
        offset: int | None = None,
        additional_params: Params | None = None,
    ) -> list[JSON]:
        """Search series, of one study or of all; see `search`."""
        return await self.search(
            "series", study_uid, None, match,
            include_fields=include_fields, fuzzy=fuzzy, limit=limit, offset=offset,
            additional_params=additional_params,
        )  # fmt: skip

    async def search_instances(
        self,
        study_uid: str | None = None,
        series_uid: str | None = None,
        match: Mapping[str | int, object] | None = None,
        *,
        include_fields: Iterable[str | int] | str | None = None,
        fuzzy: bool | None = None,
        limit: int | None = None,
        offset: int | None = None,
        additional_params: Params | None = None,
    ) -> list[JSON]:
        """Search instances, of a series, of a study or of all; see `search`."""
        return await self.search(
            "instances", study_uid, series_uid, match,
            include_fields=include_fields, fuzzy=fuzzy, limit=limit, offset=offset,
            additional_params=additional_params,
        )  # fmt: skip

    def search_pages(
        self,
        level: Level,
        study_uid: str | None = None,
        series_uid: str | None = None,
        match: Mapping[str | int, object] | None = None,
        *,
        page_size: int = 100,
        include_fields: Iterable[str | int] | str | None = None,
        fuzzy: bool | None = None,
        offset: int = 0,
        additional_params: Params | None = None,
    ) -> AsyncIterator[list[JSON]]:
        """Walk every result of a search, one page (`limit`/`offset`) at a time.

        A short page is not the end (servers cap pages below `limit`): the walk
        ends on an empty page, or when the server ignores `offset` (the same page
        comes back twice; it is then not repeated, and a warning is logged).
        `offset` skips that many results first.

        Raises:
            The errors of `search`.
        """
        return _qido.search_pages(
            self._session, level, study_uid, series_uid, match,
            page_size=page_size, include_fields=include_fields, fuzzy=fuzzy,
            start=offset,
            additional_params=additional_params,
        )  # fmt: skip

    async def find_study_uid(self, series_uid: str) -> str | None:
        """The StudyInstanceUID of a series, or None if the server has no such series.

        Raises:
            DicomWebUsageError: invalid UID.
            UnexpectedResponseError: the server answered with an invalid UID.
            The errors of `search`.
        """
        return await _qido.find_study_uid(self._session, series_uid)

    async def list_series(self, study_uid: str) -> dict[str, int | None]:
        """A study's SeriesInstanceUIDs (validated) with their instance counts, in the
        server's order; a count is None when the server does not report it, and the
        result is empty when there is no such study.

        Raises:
            UnexpectedResponseError: the server listed an invalid or repeated UID.
            The errors of `search`.
        """
        return await self._session.list_series(study_uid)

    async def list_series_uids(self, study_uid: str) -> list[str]:
        """SeriesInstanceUIDs of a study (empty when there is no such study), validated.

        Raises:
            UnexpectedResponseError: the server listed an invalid UID.
            The errors of `search`.
        """
        return list(await self._session.list_series(study_uid))

    async def list_instance_uids(self, study_uid: str, series_uid: str) -> list[str]:
        """SOPInstanceUIDs of a series in the server's order, validated (see above).

        Listed in pages (`limit`/`offset`) until an empty one, so that a server
        capping its answers is asked for the rest; a server that ignores `offset`
        is asked once for the whole list.

        Raises:
            UnexpectedResponseError: an invalid or repeated UID, or a server that
                ignores `offset` and caps its answers (the list cannot be complete).
        """
        return await self._session.list_instance_uids(study_uid, series_uid)

    # -- WADO-RS: streams ----------------------------------------------------

    @asynccontextmanager
    async def stream_study(
        self,
        study_uid: str,
        *,
        transfer_syntax: str | None = "*",
        additional_params: Params | None = None,
    ) -> AsyncIterator[MultipartStream]:
        """Stream a study's instances as parts (see `stream_series`)."""
        path, query = resource_path(study_uid), extra_query(additional_params)
        async with self._session.open_parts(path, transfer_syntax, query=query) as parts:
            yield parts

    @asynccontextmanager
    async def stream_series(
        self,
        study_uid: str,
        series_uid: str,
        *,
        transfer_syntax: str | None = "*",
        additional_params: Params | None = None,
    ) -> AsyncIterator[MultipartStream]:
        """Stream a series' instances as they arrive, in bounded memory.

        Yields an async iterator of `Part`s; each part's bytes must be read
        (`aiter_bytes`, `read`) before the next part is taken, or they are skipped.

        Args:
            transfer_syntax: `"*"` (default) asks for the bytes as stored; a UID
                asks the server to transcode; None leaves the choice to the server.
            additional_params: Extra query parameters (vendor extensions), sent
                after the standard ones; a sequence value repeats the parameter.

        Raises:
            DicomWebUsageError: invalid UID.
            DicomWebHTTPError: the server refused (after retries).
            DicomWebTransportError: the connection failed.
            UnexpectedResponseError: the answer is not multipart/related or DICOM.
            MultipartError: the body is malformed or ends before its closing
                delimiter (raised while iterating).
        """
        path, query = resource_path(study_uid, series_uid), extra_query(additional_params)
        async with self._session.open_parts(path, transfer_syntax, query=query) as parts:
            yield parts

    @asynccontextmanager
    async def stream_instance(
        self,
        study_uid: str,
        series_uid: str,
        sop_uid: str,
        *,
        transfer_syntax: str | None = "*",
        additional_params: Params | None = None,
    ) -> AsyncIterator[MultipartStream]:
        """Stream one instance (one part; see `stream_series`)."""
        path = resource_path(study_uid, series_uid, sop_uid)
        query = extra_query(additional_params)
        async with self._session.open_parts(path, transfer_syntax, query=query) as parts:
            yield parts

    @asynccontextmanager
    async def stream_frames(
        self,
        study_uid: str,
        series_uid: str,
        sop_uid: str,
        frames: Sequence[int],
        *,
        media_type: MediaTypes = OCTET_STREAM,
        transfer_syntax: str | None = "*",
        additional_params: Params | None = None,
    ) -> AsyncIterator[MultipartStream]:
        """Stream frames as parts, one per frame, as they arrive (see `retrieve_frames`)."""
        opened = _wado.open_frames(
            self._session, study_uid, series_uid, sop_uid, frames, media_type, transfer_syntax,
            extra_query(additional_params),
        )  # fmt: skip
        async with opened as parts:
            yield parts

    @asynccontextmanager
    async def stream_bulkdata(
        self,
        uri: str,
        *,
        byte_range: tuple[int, int | None] | None = None,
        media_type: MediaTypes = OCTET_STREAM,
        additional_params: Params | None = None,
    ) -> AsyncIterator[MultipartStream]:
        """Stream bulk data as parts as it arrives (see `retrieve_bulkdata`).

        Raises:
            UnexpectedResponseError: a byte range was asked and the server sent the
                whole body (`retrieve_bulkdata` cuts it to the range instead).
            The errors of `retrieve_bulkdata`.
        """
        query = extra_query(additional_params)
        async with _wado.stream_bulkdata(
            self._session, uri, byte_range, media_type, query
        ) as parts:
            yield parts

    # -- WADO-RS: buffered ---------------------------------------------------

    async def retrieve_study(
        self,
        study_uid: str,
        *,
        transfer_syntax: str | None = "*",
        additional_params: Params | None = None,
    ) -> list[bytes]:
        """Every instance of a study as bytes, in memory (small data only).

        Raises:
            The errors of `stream_series`.
        """
        path, query = resource_path(study_uid), extra_query(additional_params)
        return await _wado.retrieve_parts(self._session, path, transfer_syntax, query)

    async def retrieve_series(
        self,
        study_uid: str,
        series_uid: str,
        *,
        transfer_syntax: str | None = "*",
        additional_params: Params | None = None,
    ) -> list[bytes]:
        """Every instance of a series as bytes, in memory (small data only).

        Use `download_series` or `stream_series` for large series.

        Raises:
            The errors of `stream_series`.
        """
        path, query = resource_path(study_uid, series_uid), extra_query(additional_params)
        return await _wado.retrieve_parts(self._session, path, transfer_syntax, query)

    async def retrieve_instance(
        self,
        study_uid: str,
        series_uid: str,
        sop_uid: str,
        *,
        transfer_syntax: str | None = "*",
        additional_params: Params | None = None,
    ) -> bytes:
        """One instance as DICOM Part 10 bytes.

        Accepts a multipart answer with one part and a bare `application/dicom` one.

        Raises:
            UnexpectedResponseError: the answer holds no instance or several.
            The errors of `stream_series`.
        """
        path = resource_path(study_uid, series_uid, sop_uid)
        query = extra_query(additional_params)
        return await _wado.retrieve_instance(self._session, path, transfer_syntax, query)

    async def retrieve_study_metadata(
        self, study_uid: str, *, additional_params: Params | None = None
    ) -> list[JSON]:
        """The DICOM JSON metadata of every instance of a study.

        Raises:
            DicomWebHTTPError, DicomWebTransportError, UnexpectedResponseError.
        """
        query = extra_query(additional_params)
        return await _wado.retrieve_metadata(self._session, resource_path(study_uid), query)

    async def retrieve_series_metadata(
        self, study_uid: str, series_uid: str, *, additional_params: Params | None = None
    ) -> list[JSON]:
        """The DICOM JSON metadata of every instance of a series (see above)."""
        path, query = resource_path(study_uid, series_uid), extra_query(additional_params)
        return await _wado.retrieve_metadata(self._session, path, query)

    async def retrieve_instance_metadata(
        self,
        study_uid: str,
        series_uid: str,
        sop_uid: str,
        *,
        additional_params: Params | None = None,
    ) -> JSON:
        """The DICOM JSON metadata of one instance (see above)."""
        path = resource_path(study_uid, series_uid, sop_uid)
        query = extra_query(additional_params)
        return await _wado.retrieve_instance_metadata(self._session, path, query)

    async def retrieve_frames(
        self,
        study_uid: str,
        series_uid: str,
        sop_uid: str,
        frames: Sequence[int],
        *,
        media_type: MediaTypes = OCTET_STREAM,
        transfer_syntax: str | None = "*",
        additional_params: Params | None = None,
    ) -> list[bytes]:
        """Frames of a (multi-frame) instance, in one request.

        Args:
            frames: Frame numbers, from 1.
            media_type: `application/octet-stream` for raw pixels, or an image
                media type (`image/jpeg`, `image/jp2`, ...) for compressed frames;
                or several acceptable ones, each a type or a `(type, transfer
                syntax)` pair; `*/*` and `image/*` ask for whatever the server has.
            transfer_syntax: As for `stream_series`; with an image media type,
                `"*"` (the default) asks for that type's own transfer syntax.
            additional_params: Extra query parameters (vendor extensions), sent
                after the standard ones; a sequence value repeats the parameter.


        Returns:
            One bytes object per frame, in the order the server sent them.

        Raises:
            DicomWebUsageError: empty list or a frame number below 1.
            The errors of `stream_series`.
        """
        return await _wado.retrieve_frames(
            self._session, study_uid, series_uid, sop_uid, frames, media_type, transfer_syntax,
            extra_query(additional_params),
        )  # fmt: skip

    async def retrieve_bulkdata(
        self,
        uri: str,
        *,
        byte_range: tuple[int, int | None] | None = None,
        media_type: MediaTypes = OCTET_STREAM,
        additional_params: Params | None = None,
    ) -> list[bytes]:
        """The bulk data a metadata `BulkDataURI` points at.

        Args:
            uri: Absolute, or relative to the WADO-RS base. Must be on the same
                origin as the client's URL, so credentials never go elsewhere.
            byte_range: `(first, last)` byte positions, inclusive; `last` may be
                None. A server that ignores it (200) has its answer cut to it.
            media_type: The part type asked for, or several (see `retrieve_frames`).
            additional_params: Extra query parameters (vendor extensions), sent
                after the standard ones; a sequence value repeats the parameter.

        Raises:
            DicomWebUsageError: a URI on another origin, or a bad range.
            The errors of `stream_series`.
        """
        query = extra_query(additional_params)
        return await _wado.retrieve_bulkdata(self._session, uri, byte_range, media_type, query)

    async def retrieve_rendered(
        self,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
        *,
        frame: int | Sequence[int] | None = None,
        media_type: str | Sequence[str] = "image/jpeg",
        viewport: tuple[int, int] | None = None,
        window: tuple[float, float] | tuple[float, float, str] | None = None,
        quality: int | None = None,
        additional_params: Params | None = None,
    ) -> RenderedImage:
        """A rendered (consumer format) image of an instance, frame, series or study.

        Args:
            frame: Render this frame of the instance, or these frames.
            media_type: `image/jpeg`, `image/png`, `image/gif`, ..., or several.
            viewport: `(columns, rows)` of the output.
            window: `(center, width)` or `(center, width, function)`; the
                function is `linear` unless given (`linear`, `sigmoid`, ...).
            quality: JPEG quality 1-100.
            additional_params: Extra query parameters (vendor extensions), sent
                after the standard ones; a sequence value repeats the parameter.

        Returns:
            The image's bytes, with the media type the server sent as
            `.media_type` (an answer of another type than asked is logged).

        Raises:
            DicomWebHTTPError, DicomWebTransportError.
        """
        path, query = resource_path(study_uid, series_uid, sop_uid), extra_query(additional_params)
        return await _wado.retrieve_rendered(self._session, "rendered", path, frame, media_type,
                                             viewport, window, quality, query)  # fmt: skip

    async def retrieve_thumbnail(
        self,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
        *,
        frame: int | Sequence[int] | None = None,
        media_type: str | Sequence[str] = "image/jpeg",
        viewport: tuple[int, int] | None = None,
        additional_params: Params | None = None,
    ) -> RenderedImage:
        """A thumbnail of an instance, frame, series or study (see `retrieve_rendered`)."""
        path, query = resource_path(study_uid, series_uid, sop_uid), extra_query(additional_params)
        return await _wado.retrieve_rendered(self._session, "thumbnail", path, frame, media_type,
                                             viewport, None, None, query)  # fmt: skip

    # -- downloads to disk -----------------------------------------------------

    async def download_series(
        self,
        study_uid: str,
        series_uid: str,
        dest_dir: str | os.PathLike[str],
        *,
        strategy: Strategy = "multipart",
        fallback: bool = False,
        concurrency: int = 4,
        transfer_syntax: str | None = "*",
        progress: ProgressCallback | None = None,
        create_parent: bool = True,
    ) -> DownloadResult:
        """Download a series into a new folder, in bounded memory.

        Files are `file000000.dcm`, `file000001.dcm`, ... in the order received
        (per instance: in QIDO order), holding exactly the bytes the server sent.
        `dest_dir` appears complete, or not at all.

        Args:
            dest_dir: The folder to create; it must not exist. Missing parents
                are made (`mkdir -p`), and removed again if the download fails.
            strategy: `"multipart"` (one WADO-RS request for the series) or
                `"per_instance"` (QIDO lists the instances page by page, each is
                fetched alone, from the first page on; see `list_instance_uids`).
            fallback: With `"multipart"`, switch to per instance when the server
                will not send the series as multipart.
            concurrency: Instances in flight with `"per_instance"`.
            transfer_syntax: `"*"` (bytes as stored), a UID, or None.
            progress: Called with a `DownloadProgress` after each instance.
            create_parent: False refuses a missing parent instead of making it.

        Returns:
            A `DownloadResult` listing the files.

        Raises:
            FileExistsError: `dest_dir` exists.
            FileNotFoundError: its parent is missing and `create_parent` is False.
            NotADirectoryError, PermissionError: its parent (or the nearest
                existing ancestor) is not a folder, or not writable.
            DicomWebUsageError: invalid UID or argument.
            MultipartUnsupportedError: the server refuses multipart; use
                `strategy="per_instance"` or `fallback=True`.
            DicomWebHTTPError, DicomWebTransportError, MultipartError: the server
                failed, after retries.
            UnexpectedResponseError: the server sent something unusable (an
                unsafe UID, no instances).
            OSError: writing failed (disk full, ...); nothing is left behind.
        """
        return await _bulk_download.download_series(
            self._session, study_uid, series_uid, dest_dir, strategy=strategy, fallback=fallback,
            concurrency=concurrency, transfer_syntax=transfer_syntax, progress=progress,
            create_parent=create_parent,
        )  # fmt: skip

    async def download_study(
        self,
        study_uid: str,
        dest_dir: str | os.PathLike[str],
        *,
        strategy: Strategy = "multipart",
        fallback: bool = False,
        series_concurrency: int = 3,
        concurrency: int = 4,
        transfer_syntax: str | None = "*",
        progress: ProgressCallback | None = None,
        series_uids: Sequence[str] | None = None,
        create_parent: bool = True,
        merge: bool = False,
    ) -> DownloadResult:
        """Download every series of a study into `dest_dir/<SeriesInstanceUID>/`.

        Series are listed with QIDO (or given as `series_uids`) and downloaded
        concurrently, `series_concurrency` at a time. The study folder appears
        complete or not at all; cancelling the call cancels every transfer.

        Args:
            merge: `dest_dir` may exist: the series folders are added beside what
                it holds, all of them or none (a series folder already there is
                refused before anything is downloaded).
            The others: as for `download_series`.

        Raises:
            FileExistsError: `dest_dir` exists (without `merge`), or one of the
                series folders does (with it).
            The errors of `download_series`.
        """
        return await _bulk_download.download_study(
            self._session, study_uid, dest_dir, strategy=strategy, fallback=fallback,
            series_concurrency=series_concurrency, concurrency=concurrency,
            transfer_syntax=transfer_syntax, progress=progress, series_uids=series_uids,
            create_parent=create_parent, merge=merge,
        )  # fmt: skip

    # -- STOW-RS ---------------------------------------------------------------

    async def store(
        self,
        items: StoreSource,
        *,
        study_uid: str | None = None,
        max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
        max_instances_per_request: int = DEFAULT_MAX_INSTANCES,
        concurrency: int = DEFAULT_CONCURRENCY,
        progress: StoreProgressCallback | None = None,
        additional_params: Params | None = None,
    ) -> StoreResult:
        """Store instances with STOW-RS.

        Files are streamed chunk by chunk, never read whole; instances are split
        into requests of at most `max_request_size` bytes and
        `max_instances_per_request` instances, `concurrency` requests at a time
        (requests are kept small enough for the concurrency to pay off).

        Args:
            items: A path, bytes or pydicom Dataset, or an iterable or async
                iterable of them.
            study_uid: Post to `/studies/{study_uid}`: the server refuses
                instances of other studies.
            progress: Called with a `StoreProgress` after each request.

        Returns:
            A `StoreResult`: what was stored (with retrieve URLs and warnings)
            and what failed (with the server's reasons). A server's 409 or 202
            is a result with failures, not an exception.

        Raises:
            DicomWebUsageError: an item of an unsupported type, an invalid UID.
            FileNotFoundError, OSError: a path cannot be read.
            DicomWebHTTPError: the server refused a request as a whole (401, 5xx
                after retries, ...).
            DicomWebTransportError: the connection failed.
            UnexpectedResponseError: the server's answer cannot be read.
        """
        return await _bulk_store.store(
            self._session, items, study_uid=study_uid, max_request_size=max_request_size,
            max_instances_per_request=max_instances_per_request, concurrency=concurrency,
            progress=progress, query=extra_query(additional_params),
        )  # fmt: skip

    async def store_directory(
        self,
        folder: str | os.PathLike[str],
        include_regex: str | None = None,
        *,
        study_uid: str | None = None,
        max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
        max_instances_per_request: int = DEFAULT_MAX_INSTANCES,
        concurrency: int = DEFAULT_CONCURRENCY,
        progress: StoreProgressCallback | None = None,
        additional_params: Params | None = None,
    ) -> StoreResult:
        """Store every DICOM file under `folder`, recursively.

        `include_regex` is applied with `re.search` to each file's path relative
        to `folder`, with `/` separators. Files without the DICM preamble and
        DICOMDIR files are skipped and logged; unreadable files are reported in
        the result's `failed` list (with their path as `source`).

        Raises:
            FileNotFoundError, NotADirectoryError: `folder` is missing or not a folder.
            The errors of `store`.
        """
        return await _bulk_store.store_directory(
            self._session, folder, include_regex, study_uid=study_uid,
            max_request_size=max_request_size, max_instances_per_request=max_instances_per_request,
            concurrency=concurrency, progress=progress, query=extra_query(additional_params),
        )  # fmt: skip

    # -- DELETE --------------------------------------------------------------

    async def delete_study(
        self, study_uid: str, *, additional_params: Params | None = None
    ) -> None:
        """Delete a study from the server.

        DICOMweb has no standard DELETE. With `delete_strategy="dicomweb"` this
        sends `DELETE {url}/studies/{uid}` (Google, Microsoft, dcm4chee); with
        `"orthanc"` it looks the UID up through Orthanc's REST API
        (`POST /tools/lookup`) and deletes the resource there.

        Raises:
            DicomWebUsageError: invalid UID.
            DicomWebHTTPError: refused; 405 means the server has no DICOMweb
                DELETE (for Orthanc, use `delete_strategy="orthanc"`); 404 means
                there is no such study.
            DicomWebTransportError: the connection failed.
        """
        await _delete.delete(
            self._session, self.delete_strategy, study_uid, query=extra_query(additional_params)
        )

    async def delete_series(
        self, study_uid: str, series_uid: str, *, additional_params: Params | None = None
    ) -> None:
        """Delete a series (see `delete_study`)."""
        await _delete.delete(
            self._session, self.delete_strategy, study_uid, series_uid,
            query=extra_query(additional_params),
        )  # fmt: skip

    async def delete_instance(
        self,
        study_uid: str,
        series_uid: str,
        sop_uid: str,
        *,
        additional_params: Params | None = None,
    ) -> None:
        """Delete an instance (see `delete_study`)."""
        await _delete.delete(
            self._session, self.delete_strategy, study_uid, series_uid, sop_uid,
            query=extra_query(additional_params),
        )  # fmt: skip
