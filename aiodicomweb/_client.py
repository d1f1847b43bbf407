"""AsyncDicomWebClient: every DICOMweb transaction, written once."""

from __future__ import annotations

import gc
import importlib.util
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from http.cookiejar import CookieJar
from typing import Any, Literal
from urllib.parse import SplitResult, quote, unquote, urljoin, urlsplit

import anyio
import httpx

from aiodicomweb import _download, _store
from aiodicomweb._auth import make_auth
from aiodicomweb._bulk import BulkTransport
from aiodicomweb._direct import DirectGets
from aiodicomweb._download import DownloadResult, ProgressCallback, Strategy
from aiodicomweb._exceptions import (
    DicomWebHTTPError,
    DicomWebUsageError,
    MissingDependencyError,
    UnexpectedResponseError,
)
from aiodicomweb._inflate import DEFAULT_LIMITS, InflateLimits
from aiodicomweb._media import (
    DICOM,
    JSON_ACCEPT,
    OCTET_STREAM,
    checked_media_type,
    media_type,
    multipart_accept,
)
from aiodicomweb._parts import DEFAULT_MAX_PARTS, MultipartStream
from aiodicomweb._rate import MinRate
from aiodicomweb._retry import RetryPolicy
from aiodicomweb._store import StoreProgressCallback, StoreSource
from aiodicomweb._stow import StoreResult
from aiodicomweb._tls import TlsSettings
from aiodicomweb._transport import HttpClient, Transport, client_transports
from aiodicomweb._urls import (
    Level,
    build_query,
    qido_path,
    redact_url,
    resource_path,
    server_uid,
    validate_uid,
)
from aiodicomweb._validate import checked_headers, positive_integer

__all__ = ["DEFAULT_TIMEOUT", "AsyncDicomWebClient", "DeleteStrategy"]

logger = logging.getLogger("aiodicomweb")

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
DEFAULT_MAX_CONNECTIONS = 8
DEFAULT_MIN_RATE = 1024.0  # bytes per second, over...
DEFAULT_MIN_RATE_WINDOW = 60.0  # ...seconds: far below any healthy server
DeleteStrategy = Literal["dicomweb", "orthanc"]
JSON = dict[str, Any]
_NO_GZIP = {"Accept-Encoding": "identity"}
_ORTHANC_ID = re.compile(r"[0-9a-f]{8}(?:-[0-9a-f]{8}){4}")  # a SHA-1 in five groups
_GC_PAUSE_BYTES = 16 * 1024  # a 20-instance listing (35 KB) is 3,000 objects


def _loads(data: bytes) -> Any:
    """`json.loads`, with the cyclic garbage collector paused for large answers.

    A 350 KB instance listing becomes about 30,000 objects, and the collections
    their creation triggers cost a third of the decoding (measured 3.6 ms with
    them, 2.4 ms without, same body; 0.58 against 0.52 ms for 25 KB); nothing
    being built can be garbage yet. A collector the application turned off
    stays off.
    """
    if len(data) < _GC_PAUSE_BYTES or not gc.isenabled():
        return json.loads(data)
    gc.disable()
    try:
        return json.loads(data)
    finally:
        gc.enable()


def _base_url_parts(url: str) -> SplitResult:
    """The parts of a base URL: http(s), a host, a valid port, no query or fragment.

    The refusal quotes nothing of the URL: a '#', '?' or '/' in a password that
    was not percent-encoded would put the rest of it in another part.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is not a number (a password's rest?)
    except (TypeError, ValueError):
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
    ):
        raise DicomWebUsageError(
            "not a DICOMweb base URL: http(s)://host[:port]/path with no query or fragment "
            "(percent-encode '#', '?', '/' and '@' in a user name or password)"
        )
    return parts


def _join(base: str, prefix: str | None) -> str:
    return base if not prefix else f"{base}/{prefix.strip('/')}"


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
        if delete_strategy not in ("dicomweb", "orthanc"):
            raise DicomWebUsageError(f"unknown delete_strategy: {delete_strategy!r}")
        if timeout is None:
            raise DicomWebUsageError("timeout=None would let a request hang forever")
        parts = _base_url_parts(url)
        if parts.username is not None or parts.password is not None:
            # Credentials in the URL become basic auth, so that no URL the client
            # keeps, logs (httpx logs request URLs) or shows ever carries them.
            if auth is not None:
                raise DicomWebUsageError("credentials given both in the URL and as auth=")
            auth = (unquote(parts.username or ""), unquote(parts.password or ""))
            url = redact_url(url)
        self.url = url.rstrip("/")
        self._qido = _join(self.url, qido_url_prefix)
        self._wado = _join(self.url, wado_url_prefix)
        self._stow = _join(self.url, stow_url_prefix)
        self._delete = _join(self.url, delete_url_prefix)
        self._orthanc = (orthanc_url or self.url.rsplit("/", 1)[0]).rstrip("/")
        self.delete_strategy: DeleteStrategy = delete_strategy
        self.max_parts = positive_integer("max_parts", max_parts)
        self.chunk_size = chunk_size
        if http2 and importlib.util.find_spec("h2") is None:
            raise MissingDependencyError(
                'http2=True needs the h2 package: pip install "aiodicomweb[http2]"'
            )
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        rate = None if min_rate is None else MinRate(min_rate, min_rate_window)
        mounts: dict[str, httpx.AsyncBaseTransport | None] = {}
        if transport is None:
            tls = TlsSettings(verify, cert, trust_env)
            transport, mounts = client_transports(
                tls, http2=http2, limits=limits, proxy=proxy, trust_env=trust_env, min_rate=rate
            )
        auth = make_auth(auth)
        http = HttpClient(
            auth=auth,
            headers=checked_headers(headers),
            timeout=timeout,
            transport=transport,
            mounts=mounts,
            cookies=cookies,
            trust_env=trust_env,
            follow_redirects=True,
        )
        direct = None
        if isinstance(transport, BulkTransport):
            direct = DirectGets(http, transport, self.url, auth)
        inflate = InflateLimits(max_decoded_size, max_expansion_ratio)
        self._transport = Transport(http, retry, direct, inflate)

    def __repr__(self) -> str:
        return f"<AsyncDicomWebClient {redact_url(self.url)!r}>"

    @property
    def retry(self) -> RetryPolicy | None:
        """The retry policy; assign a new `RetryPolicy` (or None) to change it."""
        return self._transport.retry

    @retry.setter
    def retry(self, policy: RetryPolicy | None) -> None:
        self._transport.retry = policy

    async def __aenter__(self) -> AsyncDicomWebClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every connection of the client; every later call raises `ClientClosedError`."""
        await self._transport.aclose()

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

        Returns:
            DICOM JSON datasets; an empty list for 204 or an empty body.

        Raises:
            DicomWebUsageError: invalid UID, unknown attribute or bad value
                (before any request).
            DicomWebHTTPError: the server refused the search.
            DicomWebTransportError: the connection failed.
            UnexpectedResponseError: the answer is not a JSON array.
        """
        query = build_query(
            match, include_fields=include_fields, fuzzy=fuzzy, limit=limit, offset=offset
        )
        url = self._qido + qido_path(level, study_uid, series_uid)
        url = f"{url}?{query}" if query else url
        response = await self._transport.request(
            "GET", url, headers={"Accept": JSON_ACCEPT}, ok=(200, 204)
        )
        return self._json_list(response, url, allow_empty=True)

    async def search_studies(
        self,
        match: Mapping[str | int, object] | None = None,
        *,
        include_fields: Iterable[str | int] | str | None = None,
        fuzzy: bool | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[JSON]:
        """Search studies; see `search` for arguments, results and errors."""
        return await self.search(
            "studies", None, None, match,
            include_fields=include_fields, fuzzy=fuzzy, limit=limit, offset=offset,
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
    ) -> list[JSON]:
        """Search series, of one study or of all; see `search`."""
        return await self.search(
            "series", study_uid, None, match,
            include_fields=include_fields, fuzzy=fuzzy, limit=limit, offset=offset,
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
    ) -> list[JSON]:
        """Search instances, of a series, of a study or of all; see `search`."""
        return await self.search(
            "instances", study_uid, series_uid, match,
            include_fields=include_fields, fuzzy=fuzzy, limit=limit, offset=offset,
        )  # fmt: skip

    async def search_pages(
        self,
        level: Level,
        study_uid: str | None = None,
        series_uid: str | None = None,
        match: Mapping[str | int, object] | None = None,
        *,
        page_size: int = 100,
        include_fields: Iterable[str | int] | str | None = None,
        fuzzy: bool | None = None,
    ) -> AsyncIterator[list[JSON]]:
        """Walk every result of a search, one page (`limit`/`offset`) at a time.

        Stops on an empty or short page, and when the server ignores `offset`
        (the same page comes back twice; it is then not repeated).

        Raises:
            The errors of `search`.
        """
        if page_size < 1:
            raise DicomWebUsageError("page_size must be at least 1")
        offset, previous = 0, None
        while True:
            page = await self.search(
                level, study_uid, series_uid, match,
                include_fields=include_fields, fuzzy=fuzzy, limit=page_size, offset=offset,
            )  # fmt: skip
            if not page or page == previous:
                if page:
                    logger.warning("server ignores QIDO offset; stopped after %d results", offset)
                return
            yield page
            if len(page) < page_size:
                return
            offset, previous = offset + len(page), page

    async def find_study_uid(self, series_uid: str) -> str | None:
        """The StudyInstanceUID of a series, or None if the server has no such series.

        Raises:
            DicomWebUsageError: invalid UID.
            UnexpectedResponseError: the server answered with an invalid UID.
            The errors of `search`.
        """
        found = await self.search_series(
            None, {"SeriesInstanceUID": validate_uid(series_uid, "SeriesInstanceUID")},
            include_fields=["StudyInstanceUID"],
        )  # fmt: skip
        if not found:
            return None
        return server_uid(_download.first_value(found[0], "0020000D"), "StudyInstanceUID")

    async def list_series_uids(self, study_uid: str) -> list[str]:
        """SeriesInstanceUIDs of a study (empty when there is no such study), validated.

        Raises:
            UnexpectedResponseError: the server listed an invalid UID.
            The errors of `search`.
        """
        return await _download.list_series_uids(self, study_uid)

    async def list_instance_uids(self, study_uid: str, series_uid: str) -> list[str]:
        """SOPInstanceUIDs of a series in the server's order, validated (see above)."""
        return await _download.list_instance_uids(self, study_uid, series_uid)

    # -- WADO-RS: streams ----------------------------------------------------

    @asynccontextmanager
    async def stream_study(
        self, study_uid: str, *, transfer_syntax: str | None = "*"
    ) -> AsyncIterator[MultipartStream]:
        """Stream a study's instances as parts (see `stream_series`)."""
        async with self._open_parts(resource_path(study_uid), transfer_syntax) as parts:
            yield parts

    @asynccontextmanager
    async def stream_series(
        self, study_uid: str, series_uid: str, *, transfer_syntax: str | None = "*"
    ) -> AsyncIterator[MultipartStream]:
        """Stream a series' instances as they arrive, in bounded memory.

        Yields an async iterator of `Part`s; each part's bytes must be read
        (`aiter_bytes`, `read`) before the next part is taken, or they are skipped.

        Args:
            transfer_syntax: `"*"` (default) asks for the bytes as stored; a UID
                asks the server to transcode; None leaves the choice to the server.

        Raises:
            DicomWebUsageError: invalid UID.
            DicomWebHTTPError: the server refused (after retries).
            DicomWebTransportError: the connection failed.
            UnexpectedResponseError: the answer is not multipart/related or DICOM.
            MultipartError: the body is malformed or ends before its closing
                delimiter (raised while iterating).
        """
        path = resource_path(study_uid, series_uid)
        async with self._open_parts(path, transfer_syntax) as parts:
            yield parts

    @asynccontextmanager
    async def stream_instance(
        self, study_uid: str, series_uid: str, sop_uid: str, *, transfer_syntax: str | None = "*"
    ) -> AsyncIterator[MultipartStream]:
        """Stream one instance (one part; see `stream_series`)."""
        path = resource_path(study_uid, series_uid, sop_uid)
        async with self._open_parts(path, transfer_syntax) as parts:
            yield parts

    @asynccontextmanager
    async def _open_parts(
        self, path: str, transfer_syntax: str | None, *, retry: bool = True
    ) -> AsyncIterator[MultipartStream]:
        url = self._wado + path
        headers = {"Accept": multipart_accept(DICOM, transfer_syntax), **_NO_GZIP}
        async with self._transport.stream("GET", url, headers=headers, retry=retry) as response:
            yield MultipartStream(
                response, description=f"GET {redact_url(url)}", max_parts=self.max_parts
            )

    # -- WADO-RS: buffered ---------------------------------------------------

    async def retrieve_study(
        self, study_uid: str, *, transfer_syntax: str | None = "*"
    ) -> list[bytes]:
        """Every instance of a study as bytes, in memory (small data only).

        Raises:
            The errors of `stream_series`.
        """
        async with self.stream_study(study_uid, transfer_syntax=transfer_syntax) as parts:
            return [await part.read() async for part in parts]

    async def retrieve_series(
        self, study_uid: str, series_uid: str, *, transfer_syntax: str | None = "*"
    ) -> list[bytes]:
        """Every instance of a series as bytes, in memory (small data only).

        Use `download_series` or `stream_series` for large series.

        Raises:
            The errors of `stream_series`.
        """
        async with self.stream_series(study_uid, series_uid, transfer_syntax=transfer_syntax) as p:
            return [await part.read() async for part in p]

    async def retrieve_instance(
        self, study_uid: str, series_uid: str, sop_uid: str, *, transfer_syntax: str | None = "*"
    ) -> bytes:
        """One instance as DICOM Part 10 bytes.

        Accepts a multipart answer with one part and a bare `application/dicom` one.

        Raises:
            UnexpectedResponseError: the answer holds no instance or several.
            The errors of `stream_series`.
        """
        ts = transfer_syntax
        async with self.stream_instance(study_uid, series_uid, sop_uid, transfer_syntax=ts) as p:
            bodies = [await part.read() async for part in p]
        if len(bodies) != 1:
            raise UnexpectedResponseError(
                f"instance {sop_uid}: expected one part, the server sent {len(bodies)}"
            )
        return bodies[0]

    async def retrieve_study_metadata(self, study_uid: str) -> list[JSON]:
        """The DICOM JSON metadata of every instance of a study.

        Raises:
            DicomWebHTTPError, DicomWebTransportError, UnexpectedResponseError.
        """
        return await self._metadata(resource_path(study_uid))

    async def retrieve_series_metadata(self, study_uid: str, series_uid: str) -> list[JSON]:
        """The DICOM JSON metadata of every instance of a series (see above)."""
        return await self._metadata(resource_path(study_uid, series_uid))

    async def retrieve_instance_metadata(
        self, study_uid: str, series_uid: str, sop_uid: str
    ) -> JSON:
        """The DICOM JSON metadata of one instance (see above)."""
        datasets = await self._metadata(resource_path(study_uid, series_uid, sop_uid))
        if len(datasets) != 1:
            raise UnexpectedResponseError(
                f"metadata of {sop_uid}: expected one dataset, got {len(datasets)}"
            )
        return datasets[0]

    async def _metadata(self, path: str) -> list[JSON]:
        url = f"{self._wado}{path}/metadata"
        response = await self._transport.request("GET", url, headers={"Accept": JSON_ACCEPT})
        return self._json_list(response, url, allow_empty=False)

    async def retrieve_frames(
        self,
        study_uid: str,
        series_uid: str,
        sop_uid: str,
        frames: Sequence[int],
        *,
        media_type: str = OCTET_STREAM,
        transfer_syntax: str | None = "*",
    ) -> list[bytes]:
        """Frames of a (multi-frame) instance, in one request.

        Args:
            frames: Frame numbers, from 1.
            media_type: `application/octet-stream` for raw pixels, or an image
                media type (`image/jpeg`, `image/jp2`, ...) for compressed frames.
            transfer_syntax: As for `stream_series`.

        Returns:
            One bytes object per frame, in the order the server sent them.

        Raises:
            DicomWebUsageError: empty list or a frame number below 1.
            The errors of `stream_series`.
        """
        if not frames or any(isinstance(f, bool) or int(f) != f or f < 1 for f in frames):
            raise DicomWebUsageError(f"frame numbers must be integers from 1: {list(frames)!r}")
        path = resource_path(study_uid, series_uid, sop_uid)
        url = f"{self._wado}{path}/frames/{','.join(str(int(f)) for f in frames)}"
        return await self._retrieve_parts(url, multipart_accept(media_type, transfer_syntax))

    async def retrieve_bulkdata(
        self,
        uri: str,
        *,
        byte_range: tuple[int, int | None] | None = None,
        media_type: str = OCTET_STREAM,
    ) -> list[bytes]:
        """The bulk data a metadata `BulkDataURI` points at.

        Args:
            uri: Absolute, or relative to the WADO-RS base. Must be on the same
                origin as the client's URL, so credentials never go elsewhere.
            byte_range: `(first, last)` byte positions, inclusive; `last` may be None.
            media_type: The part type asked for.

        Raises:
            DicomWebUsageError: a URI on another origin, or a bad range.
            The errors of `stream_series`.
        """
        url = urljoin(self._wado + "/", uri)
        if urlsplit(url)[:2] != urlsplit(self._wado)[:2]:
            raise DicomWebUsageError(f"bulk data URI on another origin: {redact_url(url)!r}")
        headers = {}
        if byte_range is not None:
            first, last = byte_range
            if first < 0 or (last is not None and last < first):
                raise DicomWebUsageError(f"invalid byte range: {byte_range!r}")
            headers["Range"] = f"bytes={first}-{'' if last is None else last}"
        return await self._retrieve_parts(
            url, multipart_accept(media_type, None), headers, single=(media_type.lower(),)
        )

    async def _retrieve_parts(
        self,
        url: str,
        accept: str,
        headers: Mapping[str, str] | None = None,
        single: tuple[str, ...] = (OCTET_STREAM,),
    ) -> list[bytes]:
        all_headers = {"Accept": accept, **_NO_GZIP, **(headers or {})}
        async with self._transport.stream("GET", url, headers=all_headers, ok=(200, 206)) as r:
            parts = MultipartStream(
                r,
                description=f"GET {redact_url(url)}",
                single_part_types=single,
                max_parts=self.max_parts,
            )
            return [await part.read() async for part in parts]

    async def retrieve_rendered(
        self,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
        *,
        frame: int | None = None,
        media_type: str = "image/jpeg",
        viewport: tuple[int, int] | None = None,
        window: tuple[float, float] | tuple[float, float, str] | None = None,
        quality: int | None = None,
    ) -> bytes:
        """A rendered (consumer format) image of an instance, frame, series or study.

        Args:
            frame: Render this frame of the instance.
            media_type: `image/jpeg`, `image/png`, `image/gif`, ...
            viewport: `(columns, rows)` of the output.
            window: `(center, width)` or `(center, width, function)`.
            quality: JPEG quality 1-100.

        Raises:
            UnexpectedResponseError: the answer is not of `media_type`.
            DicomWebHTTPError, DicomWebTransportError.
        """
        return await self._rendered("rendered", study_uid, series_uid, sop_uid, frame,
                                    media_type, viewport, window, quality)  # fmt: skip

    async def retrieve_thumbnail(
        self,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
        *,
        frame: int | None = None,
        media_type: str = "image/jpeg",
        viewport: tuple[int, int] | None = None,
    ) -> bytes:
        """A thumbnail of an instance, frame, series or study (see `retrieve_rendered`)."""
        return await self._rendered("thumbnail", study_uid, series_uid, sop_uid, frame,
                                    media_type, viewport, None, None)  # fmt: skip

    async def _rendered(
        self,
        kind: str,
        study_uid: str,
        series_uid: str | None,
        sop_uid: str | None,
        frame: int | None,
        accept: str,
        viewport: tuple[int, int] | None,
        window: tuple[Any, ...] | None,
        quality: int | None,
    ) -> bytes:
        path = resource_path(study_uid, series_uid, sop_uid)
        if frame is not None:
            if sop_uid is None or isinstance(frame, bool) or frame < 1:
                raise DicomWebUsageError("frame needs an instance and a number from 1")
            path += f"/frames/{int(frame)}"
        params = [
            (name, ",".join(quote(str(v), safe="") for v in value))
            for name, value in (("viewport", viewport), ("window", window))
            if value is not None
        ]
        if quality is not None:
            params.append(("quality", str(int(quality))))
        url = f"{self._wado}{path}/{kind}"
        url += "?" + "&".join(f"{k}={v}" for k, v in params) if params else ""
        headers = {"Accept": checked_media_type(accept)}
        response = await self._transport.request("GET", url, headers=headers)
        got = media_type(response.headers.get("content-type"))
        if got != accept.lower():
            raise UnexpectedResponseError(
                f"GET {redact_url(url)}: asked for {accept}, got {got or 'no Content-Type'!r}"
            )
        return response.content

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
        create_parent: bool = False,
    ) -> DownloadResult:
        """Download a series into a new folder, in bounded memory.

        Files are `file000000.dcm`, `file000001.dcm`, ... in the order received
        (per instance: in QIDO order), holding exactly the bytes the server sent.
        `dest_dir` appears complete, or not at all.

        Args:
            dest_dir: The folder to create; it must not exist, its parent must.
            strategy: `"multipart"` (one WADO-RS request for the series) or
                `"per_instance"` (QIDO lists the instances, each is fetched alone).
            fallback: With `"multipart"`, switch to per instance when the server
                will not send the series as multipart.
            concurrency: Instances in flight with `"per_instance"`.
            transfer_syntax: `"*"` (bytes as stored), a UID, or None.
            progress: Called with a `DownloadProgress` after each instance.
            create_parent: Create `dest_dir`'s parent if it is missing (one
                level; removed again if the download fails).

        Returns:
            A `DownloadResult` listing the files.

        Raises:
            FileExistsError: `dest_dir` exists.
            FileNotFoundError, NotADirectoryError, PermissionError: its parent
                is missing, not a folder, or not writable.
            DicomWebUsageError: invalid UID or argument.
            MultipartUnsupportedError: the server refuses multipart; use
                `strategy="per_instance"` or `fallback=True`.
            DicomWebHTTPError, DicomWebTransportError, MultipartError: the server
                failed, after retries.
            UnexpectedResponseError: the server sent something unusable (an
                unsafe UID, no instances).
            OSError: writing failed (disk full, ...); nothing is left behind.
        """
        return await _download.download_series(
            self, study_uid, series_uid, dest_dir, strategy=strategy, fallback=fallback,
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
    ) -> DownloadResult:
        """Download every series of a study into `dest_dir/<SeriesInstanceUID>/`.

        Series are listed with QIDO (or given as `series_uids`) and downloaded
        concurrently, `series_concurrency` at a time. The study folder appears
        complete or not at all; cancelling the call cancels every transfer.

        Raises:
            The errors of `download_series`.
        """
        return await _download.download_study(
            self, study_uid, dest_dir, strategy=strategy, fallback=fallback,
            series_concurrency=series_concurrency, concurrency=concurrency,
            transfer_syntax=transfer_syntax, progress=progress, series_uids=series_uids,
        )  # fmt: skip

    # -- STOW-RS ---------------------------------------------------------------

    async def store(
        self,
        items: StoreSource,
        *,
        study_uid: str | None = None,
        max_request_size: int = _store.DEFAULT_MAX_REQUEST_SIZE,
        max_instances_per_request: int = _store.DEFAULT_MAX_INSTANCES,
        concurrency: int = _store.DEFAULT_CONCURRENCY,
        progress: StoreProgressCallback | None = None,
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
        return await _store.store(
            self, items, study_uid=study_uid, max_request_size=max_request_size,
            max_instances_per_request=max_instances_per_request, concurrency=concurrency,
            progress=progress,
        )  # fmt: skip

    async def store_directory(
        self,
        folder: str | os.PathLike[str],
        include_regex: str | None = None,
        *,
        study_uid: str | None = None,
        max_request_size: int = _store.DEFAULT_MAX_REQUEST_SIZE,
        max_instances_per_request: int = _store.DEFAULT_MAX_INSTANCES,
        concurrency: int = _store.DEFAULT_CONCURRENCY,
        progress: StoreProgressCallback | None = None,
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
        files, unreadable = await anyio.to_thread.run_sync(
            _store.find_dicom_files, folder, include_regex
        )
        result = StoreResult(stored=(), failed=tuple(unreadable))
        if files:
            result = result.merge(
                await self.store(
                    files,
                    study_uid=study_uid,
                    max_request_size=max_request_size,
                    max_instances_per_request=max_instances_per_request,
                    concurrency=concurrency,
                    progress=progress,
                )
            )
        return result

    # -- DELETE --------------------------------------------------------------

    async def delete_study(self, study_uid: str) -> None:
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
        await self._delete_resource(study_uid, None, None)

    async def delete_series(self, study_uid: str, series_uid: str) -> None:
        """Delete a series (see `delete_study`)."""
        await self._delete_resource(study_uid, series_uid, None)

    async def delete_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> None:
        """Delete an instance (see `delete_study`)."""
        await self._delete_resource(study_uid, series_uid, sop_uid)

    async def _delete_resource(
        self, study_uid: str, series_uid: str | None, sop_uid: str | None
    ) -> None:
        path = resource_path(study_uid, series_uid, sop_uid)
        if self.delete_strategy == "orthanc":
            await self._orthanc_delete(study_uid, series_uid, sop_uid)
            return
        url = self._delete + path
        try:
            await self._transport.request("DELETE", url, ok=(200, 202, 204))
        except DicomWebHTTPError as error:
            if error.status != 405:
                raise
            raise DicomWebHTTPError(
                f"{error}; the server does not support DICOMweb DELETE "
                "(for Orthanc, use delete_strategy='orthanc')",
                status=error.status, method=error.method, url=error.url,
                body_excerpt=error.body_excerpt,
            ) from None  # fmt: skip

    async def _orthanc_delete(
        self, study_uid: str, series_uid: str | None, sop_uid: str | None
    ) -> None:
        levels = [("Study", "studies", study_uid), ("Series", "series", series_uid),
                  ("Instance", "instances", sop_uid)]  # fmt: skip
        chain = [(level, plural, uid) for level, plural, uid in levels if uid is not None]
        parent: str | None = None
        for level, plural, uid in chain:
            orthanc_id = await self._orthanc_lookup(uid, level)
            if parent is not None:
                await self._orthanc_check_parent(plural, orthanc_id, parent, uid)
            parent = orthanc_id
        _, plural, _ = chain[-1]
        await self._transport.request(
            "DELETE", f"{self._orthanc}/{plural}/{parent}", ok=(200, 204)
        )

    async def _orthanc_lookup(self, uid: str, level: str) -> str:
        url = f"{self._orthanc}/tools/lookup"
        response = await self._transport.request("POST", url, content=lambda: uid.encode())
        matches = self._json_list(response, url, allow_empty=True)
        for match in matches:
            if match.get("Type") == level and isinstance(match.get("ID"), str):
                if not _ORTHANC_ID.fullmatch(match["ID"]):  # it becomes part of a DELETE URL
                    raise UnexpectedResponseError(
                        f"POST {redact_url(url)}: not an Orthanc identifier: {match['ID'][:80]!r}"
                    )
                return str(match["ID"])
        raise DicomWebHTTPError(
            f"no {level.lower()} with UID {uid} on the server",
            status=404, method="POST", url=redact_url(url),
        )  # fmt: skip

    async def _orthanc_check_parent(
        self, plural: str, orthanc_id: str, parent: str, uid: str
    ) -> None:
        url = f"{self._orthanc}/{plural}/{orthanc_id}"
        response = await self._transport.request("GET", url)
        info = self._json(response, url)
        parent_key = {"series": "ParentStudy", "instances": "ParentSeries"}[plural]
        if not isinstance(info, dict) or info.get(parent_key) != parent:
            raise DicomWebHTTPError(
                f"{uid} does not belong to the given parent on the server",
                status=404, method="GET", url=redact_url(url),
            )  # fmt: skip

    # -- helpers ---------------------------------------------------------------

    @staticmethod
    def _json(response: httpx.Response, url: str) -> Any:
        try:
            return _loads(response.content)
        except ValueError:
            raise UnexpectedResponseError(
                f"{redact_url(url)}: answer is not JSON "
                f"({media_type(response.headers.get('content-type')) or 'no Content-Type'})"
            ) from None

    def _json_list(self, response: httpx.Response, url: str, *, allow_empty: bool) -> list[JSON]:
        if response.status_code == 204 or not response.content.strip():
            if allow_empty:
                return []
            raise UnexpectedResponseError(f"{redact_url(url)}: empty answer")
        data = self._json(response, url)
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise UnexpectedResponseError(f"{redact_url(url)}: expected a JSON array of objects")
        return data
