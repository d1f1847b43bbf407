"""The session: one client's link to a DICOMweb service, which every layer above uses.

It holds the request runner and the URL roots, and makes the requests that
transactions and bulk work share: buffered JSON, streamed multipart parts, and
the listings of a study's series and a series' instances. `open_session`
turns the client's constructor arguments into one.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import AsyncGenerator, AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http.cookiejar import CookieJar
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

import httpx

from aiodicomweb._auth import make_auth
from aiodicomweb._dicom_json import (
    JSON,
    NUMBER_OF_SERIES_RELATED_INSTANCES,
    SERIES_INSTANCE_UID,
    SOP_INSTANCE_UID,
    dataset_list,
    first_value,
    json_document,
)
from aiodicomweb._direct import DirectGets
from aiodicomweb._exceptions import (
    DicomWebHTTPError,
    DicomWebUsageError,
    MissingDependencyError,
    UnexpectedResponseError,
)
from aiodicomweb._inflate import InflateLimits
from aiodicomweb._media import DICOM, DICOM_JSON, JSON_ACCEPT, STOW_ACCEPT, multipart_accept
from aiodicomweb._multipart_stream import MultipartStream
from aiodicomweb._rate import MinRate
from aiodicomweb._requester import ContentFactory, Requester
from aiodicomweb._retry import RetryPolicy
from aiodicomweb._tls import TlsSettings
from aiodicomweb._transports import HttpClient, client_transports
from aiodicomweb._urls import Level, build_query, qido_path, redact_url, with_query
from aiodicomweb._validate import checked_headers, positive_integer, server_uid

__all__ = ["Roots", "Session", "open_session", "says_capped"]

# RFC 7234 warn-code 299 with the text servers use for a capped answer.
_CAPPED = re.compile(r"\b299\b.*\b(additional|more)\b.*\bresults?\b", re.IGNORECASE)
_NO_GZIP = {"Accept-Encoding": "identity"}  # DICOM bodies do not compress; streams stay raw


@dataclass(frozen=True)
class Roots:
    """Where each kind of request goes: the base URL and one root per service."""

    base: str
    qido: str
    wado: str
    stow: str
    delete: str
    orthanc: str


class Session:
    """One client's requests: the runner, the URL roots and the shared requests."""

    FIRST_PAGE = 25  # instances listed before the first download starts
    LAST_PAGE = 1000  # pages grow to this, which servers that cap answers accept

    def __init__(
        self, requester: Requester, roots: Roots, *, max_parts: int, chunk_size: int
    ) -> None:
        self.requester = requester
        self.roots = roots
        self.max_parts = max_parts
        self.chunk_size = chunk_size
        self.fallback_accept = False  # set when the server refused application/dicom+json

    @property
    def retry(self) -> RetryPolicy | None:
        return self.requester.retry

    @retry.setter
    def retry(self, policy: RetryPolicy | None) -> None:
        self.requester.retry = policy

    async def aclose(self) -> None:
        await self.requester.aclose()

    async def accepting_json(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: ContentFactory | None = None,
        ok: Collection[int] = (200,),
    ) -> httpx.Response:
        """A buffered request for DICOM JSON: `Accept: application/dicom+json`, as the
        standard and the peers ask; the wider list only once a server refused it (406).
        """
        wide = STOW_ACCEPT if method == "POST" else JSON_ACCEPT
        accept = wide if self.fallback_accept else DICOM_JSON
        try:
            return await self.request(method, url, headers={**(headers or {}), "Accept": accept},
                                      content=content, ok=ok)  # fmt: skip
        except DicomWebHTTPError as error:
            if error.status != 406 or accept == wide:
                raise
        self.fallback_accept = True
        return await self.request(method, url, headers={**(headers or {}), "Accept": wide},
                                  content=content, ok=ok)  # fmt: skip

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: ContentFactory | None = None,
        ok: Collection[int] = (200,),
    ) -> httpx.Response:
        """A buffered request (see `Requester.request`)."""
        return await self.requester.request(method, url, headers=headers, content=content, ok=ok)

    @asynccontextmanager
    async def stream(
        self,
        url: str,
        accept: str,
        *,
        headers: Mapping[str, str] | None = None,
        ok: Collection[int] = (200,),
        retry: bool = True,
    ) -> AsyncIterator[httpx.Response]:
        """A streamed GET of raw (never re-encoded) bytes (see `Requester.stream`)."""
        sent = {"Accept": accept, **_NO_GZIP, **(headers or {})}
        async with self.requester.stream("GET", url, headers=sent, ok=ok, retry=retry) as answer:
            yield answer

    @asynccontextmanager
    async def open_parts(
        self, path: str, transfer_syntax: str | None, *, retry: bool = True, query: str = ""
    ) -> AsyncIterator[MultipartStream]:
        """The DICOM parts of a WADO-RS study, series or instance at `path`.

        Args:
            retry: False when the caller retries the whole unit itself.
            query: Extra query parameters (vendor extensions), already encoded.
        """
        url = with_query(self.roots.wado + path, query)
        accept = multipart_accept(DICOM, transfer_syntax)
        async with self.stream(url, accept, retry=retry) as response:
            yield MultipartStream(
                response, description=f"GET {redact_url(url)}", max_parts=self.max_parts
            )

    async def json(self, method: str, url: str, *, content: ContentFactory | None = None) -> Any:
        """The JSON document a request answers with."""
        response = await self.request(method, url, content=content)
        return json_document(response.content, redact_url(url), _content_type(response))

    async def datasets(
        self, url: str, *, ok: Collection[int] = (200,), allow_empty: bool = False
    ) -> list[JSON]:
        """The DICOM JSON datasets a GET answers with (204 is none, when allowed)."""
        datasets, _ = await self._datasets(url, ok, allow_empty)
        return datasets

    async def _datasets(
        self, url: str, ok: Collection[int], allow_empty: bool
    ) -> tuple[list[JSON], httpx.Response]:
        response = await self.accepting_json("GET", url, ok=ok)
        body = b"" if response.status_code == 204 else response.content
        datasets = dataset_list(
            body, redact_url(url), _content_type(response), allow_empty=allow_empty
        )
        return datasets, response

    async def search(
        self, level: Level, study_uid: str | None, series_uid: str | None, query: str
    ) -> list[JSON]:
        """One QIDO-RS request; no match (204, an empty body) is an empty list."""
        datasets, _ = await self.search_page(level, study_uid, series_uid, query)
        return datasets

    async def search_page(
        self, level: Level, study_uid: str | None, series_uid: str | None, query: str
    ) -> tuple[list[JSON], str | None]:
        """One QIDO-RS request: its datasets, and its `Warning` header, if any (servers
        that cap an answer say there are more results in it)."""
        url = self.roots.qido + qido_path(level, study_uid, series_uid)
        url = f"{url}?{query}" if query else url
        datasets, response = await self._datasets(url, (200, 204), True)
        warning: str | None = response.headers.get("warning")
        return datasets, warning

    async def list_series(self, study_uid: str) -> dict[str, int | None]:
        """A study's series UIDs, each checked as a safe folder name, with their
        instance counts when the server reports them; empty for no such study.

        Raises:
            UnexpectedResponseError: an invalid or repeated UID.
        """
        fields = [SERIES_INSTANCE_UID, NUMBER_OF_SERIES_RELATED_INSTANCES]
        found = await self.search("series", study_uid, None, build_query(include_fields=fields))
        series = {
            server_uid(first_value(ds, SERIES_INSTANCE_UID), "SeriesInstanceUID"): _count(ds)
            for ds in found
        }
        if len(series) != len(found):
            raise UnexpectedResponseError(f"study {study_uid}: QIDO listed a series twice")
        return series

    async def list_instance_uids(self, study_uid: str, series_uid: str) -> list[str]:
        """A series' SOP Instance UIDs in QIDO order, each checked as a safe file name.

        Raises:
            UnexpectedResponseError: an invalid or repeated UID, or a listing the
                server cut short.
        """
        return [
            uid async for page in self.instance_uid_pages(study_uid, series_uid) for uid in page
        ]

    async def instance_uid_pages(
        self, study_uid: str, series_uid: str
    ) -> AsyncGenerator[list[str], None]:
        """`list_instance_uids` page by page, so that downloads start on the first.

        Pages grow from `FIRST_PAGE` to `LAST_PAGE` instances; the listing ends on
        an empty page (a short one may be a server's cap). A page that repeats an
        instance means the server ignores `offset`, or the series changed: the
        series is then listed whole, once, and only instances not yet given follow.
        """
        given: set[str] = set()
        offset, size = 0, self.FIRST_PAGE
        while True:
            query = build_query(include_fields=[SOP_INSTANCE_UID], limit=size, offset=offset)
            page, _ = await self._instance_page(study_uid, series_uid, query)
            if not page:
                return
            if given.intersection(page):
                query = build_query(include_fields=[SOP_INSTANCE_UID])
                page, warning = await self._instance_page(study_uid, series_uid, query)
                if says_capped(warning):
                    raise UnexpectedResponseError(
                        f"series {series_uid}: the server ignores QIDO offset and caps its "
                        "answers, so its instances cannot all be listed"
                    )
                yield [uid for uid in page if uid not in given]
                return
            given.update(page)
            yield page
            offset, size = offset + len(page), min(size * 2, self.LAST_PAGE)

    async def _instance_page(
        self, study_uid: str, series_uid: str, query: str
    ) -> tuple[list[str], str | None]:
        found, warning = await self.search_page("instances", study_uid, series_uid, query)
        uids = [server_uid(first_value(ds, SOP_INSTANCE_UID), "SOPInstanceUID") for ds in found]
        if len(set(uids)) != len(uids):
            raise UnexpectedResponseError(f"series {series_uid}: QIDO listed an instance twice")
        return uids, warning


def says_capped(warning: str | None) -> bool:
    """A QIDO answer's `Warning` says the server left results out (RFC 7234 code 299)."""
    return warning is not None and _CAPPED.search(warning) is not None


def _content_type(response: httpx.Response) -> str | None:
    value: str | None = response.headers.get("content-type")
    return value


def _count(dataset: JSON) -> int | None:
    """NumberOfSeriesRelatedInstances (IS): a number or its text, or None."""
    value = first_value(dataset, NUMBER_OF_SERIES_RELATED_INSTANCES)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def open_session(
    url: str,
    *,
    qido_url_prefix: str | None,
    wado_url_prefix: str | None,
    stow_url_prefix: str | None,
    delete_url_prefix: str | None,
    orthanc_url: str | None,
    auth: httpx.Auth | tuple[str, str] | None,
    headers: Mapping[str, str] | None,
    timeout: float | httpx.Timeout | None,
    retry: RetryPolicy | None,
    max_connections: int,
    http2: bool,
    verify: Any,
    cert: Any,
    proxy: str | httpx.Proxy | None,
    cookies: httpx.Cookies | CookieJar | dict[str, str] | None,
    trust_env: bool,
    transport: httpx.AsyncBaseTransport | None,
    chunk_size: int,
    inflate: InflateLimits,
    min_rate: MinRate | None,
    max_parts: int,
) -> Session:
    """A session for the client's constructor arguments, every one checked first.

    Raises:
        DicomWebUsageError: an argument that cannot work.
        MissingDependencyError: `http2=True` without the h2 package.
    """
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
    base = url.rstrip("/")
    prefixes = {
        "qido_url_prefix": qido_url_prefix,
        "wado_url_prefix": wado_url_prefix,
        "stow_url_prefix": stow_url_prefix,
        "delete_url_prefix": delete_url_prefix,
    }
    for name, prefix in prefixes.items():
        if prefix is not None and not prefix.strip("/"):
            raise DicomWebUsageError(f"{name} is empty: give a path segment, or None for none")
    roots = Roots(
        base=base,
        qido=_join(base, qido_url_prefix),
        wado=_join(base, wado_url_prefix),
        stow=_join(base, stow_url_prefix),
        delete=_join(base, delete_url_prefix),
        orthanc=(orthanc_url or base.rsplit("/", 1)[0]).rstrip("/"),
    )
    max_parts = positive_integer("max_parts", max_parts)
    if http2 and importlib.util.find_spec("h2") is None:
        raise MissingDependencyError(
            'http2=True needs the h2 package: pip install "aiodicomweb[http2]"'
        )
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    mounts: dict[str, httpx.AsyncBaseTransport | None] = {}
    wire = None
    if transport is None:
        tls = TlsSettings(verify, cert, trust_env)
        transport, mounts, wire = client_transports(
            tls, http2=http2, limits=limits, proxy=proxy, trust_env=trust_env, min_rate=min_rate
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
    direct = None if wire is None else DirectGets(http, wire, base, auth)
    requester = Requester(http, retry, direct, inflate)
    return Session(requester, roots, max_parts=max_parts, chunk_size=chunk_size)


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
