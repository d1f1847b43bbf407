"""One request, done right: retries, error translation, status checks, redaction.

Every transaction of the client goes through `Transport.request` (buffered) or
`Transport.stream` (streamed); nothing else touches httpx's send path.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any

import httpcore
import httpx
from httpx._utils import get_environment_proxies

from aiodicomweb._bulk import READ_SIZE, BulkTransport
from aiodicomweb._direct import DirectGets
from aiodicomweb._exceptions import (
    ClientClosedError,
    DicomWebError,
    DicomWebHTTPError,
    excerpt,
    translate_httpx_error,
)
from aiodicomweb._inflate import DEFAULT_LIMITS, InflateLimits, content_encoding, read_body
from aiodicomweb._rate import MinRate, RateWatch
from aiodicomweb._retry import RetryPolicy, parse_retry_after, retrying
from aiodicomweb._tls import TlsSettings
from aiodicomweb._urls import redact_url

__all__ = ["HttpClient", "Transport", "client_transports", "http_transport"]

logger = logging.getLogger("aiodicomweb")
_ERROR_BODY_LIMIT = 4096
ContentFactory = Callable[[], Any]


class _Cookies(httpx.Cookies):
    """httpx's cookie store, skipping the urllib round trip for answers that set none.

    httpx hands every response to `http.cookiejar` through urllib wrappers, about
    30 us even when there is no `Set-Cookie` header: a tenth of a QIDO call's
    own cost on a warm connection. Without those headers the jar has nothing to
    do, so the call is skipped; with them it runs unchanged.
    """

    def extract_cookies(self, response: httpx.Response) -> None:
        headers = response.headers
        if "set-cookie" in headers or "set-cookie2" in headers:
            super().extract_cookies(response)


class HttpClient(httpx.AsyncClient):
    """`httpx.AsyncClient` whose cookie store is a `_Cookies` (same jar, same rules)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.cookies = self.cookies.jar  # keeps the caller's jar, if one was given

    @property
    def cookies(self) -> httpx.Cookies:
        return self._cookies

    @cookies.setter
    def cookies(self, cookies: httpx._types.CookieTypes) -> None:
        self._cookies = _Cookies(cookies)


class Transport:
    """Wraps one `httpx.AsyncClient` with the project's retry and error rules."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        retry: RetryPolicy | None,
        direct: DirectGets | None = None,
        inflate: InflateLimits = DEFAULT_LIMITS,
    ) -> None:
        self.http = http
        self.retry = retry
        self.direct = direct
        self.inflate = inflate
        self.closed = False

    async def aclose(self) -> None:
        """Close every connection; every request after this raises `ClientClosedError`."""
        self.closed = True
        await self.http.aclose()

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: ContentFactory | None = None,
        ok: Collection[int] = (200,),
    ) -> httpx.Response:
        """Send a request and read its whole body, retrying per the policy.

        Args:
            content: Builds the request body afresh for each attempt (a retry
                must not reuse a consumed stream).
            ok: Statuses that count as an answer; anything else raises.

        Raises:
            DicomWebHTTPError: a status outside `ok` after retries.
            DicomWebTransportError: the connection failed after retries.
        """

        async def attempt() -> httpx.Response:
            body = content() if content is not None else None
            response = await self._send(method, url, headers, body)
            what = f"{method} {redact_url(url)}"
            try:
                if response.status_code not in ok:
                    await self._raise_status(response, method, url)
                if content_encoding(response) is None:  # nothing to inflate, nothing to copy
                    await response.aread()
                    return response
                data = await read_body(response, what, self.inflate)
            except httpx.HTTPError as error:
                raise translate_httpx_error(error, what) from error
            finally:
                await response.aclose()
            return _with_content(response, data)

        return await retrying(self.retry, attempt)

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        ok: Collection[int] = (200,),
        retry: bool = True,
    ) -> AsyncIterator[httpx.Response]:
        """Open a streamed response; retries cover opening it, never its middle.

        Args:
            retry: False when the caller retries the whole unit itself (so the
                attempts do not multiply).
        """

        async def attempt() -> httpx.Response:
            response = await self._send(method, url, headers, None)
            if response.status_code not in ok:
                try:
                    await self._raise_status(response, method, url)
                finally:
                    await response.aclose()
            return response

        response = await retrying(self.retry if retry else None, attempt)
        try:
            yield response
        finally:
            await response.aclose()

    async def _send(
        self, method: str, url: str, headers: Mapping[str, str] | None, body: Any
    ) -> httpx.Response:
        if self.closed:
            raise ClientClosedError(f"{method} {redact_url(url)}: the client is closed")
        failure: DicomWebError | None = None
        try:
            response = None
            if self.direct is not None and method == "GET" and body is None:
                response = await self.direct.send(url, headers)
            if response is None:
                request = self.http.build_request(method, url, headers=headers, content=body)
                response = await self.http.send(request, stream=True)
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            failure = translate_httpx_error(error, f"{method} {redact_url(url)}")
            if not isinstance(error, httpx.LocalProtocolError):
                raise failure from error
        if failure is not None:
            raise failure  # outside the handler: no chain back to a refused header's value
        assert response is not None
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s %s -> %d", method, redact_url(url), response.status_code)
        return response

    async def _raise_status(self, response: httpx.Response, method: str, url: str) -> None:
        body = await _read_some(response, _ERROR_BODY_LIMIT)
        shown = redact_url(url)
        text = excerpt(body.decode("utf-8", "replace"))
        reason = response.reason_phrase or "error"
        message = f"{method} {shown} failed: {response.status_code} {reason}"
        raise DicomWebHTTPError(
            f"{message}: {text}" if text else message,
            status=response.status_code,
            method=method,
            url=shown,
            body_excerpt=text,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )


async def _read_some(response: httpx.Response, limit: int) -> bytes:
    """At most `limit` bytes of an error body: a hostile server cannot make us buffer more."""
    try:
        return await read_body(response, "error body", most=limit)
    except (httpx.HTTPError, DicomWebError):
        return b""  # the status is the error; a broken error body adds nothing


class _Watched(httpx.AsyncByteStream):
    """A response body under a `RateWatch` (the fast path watches its own reads)."""

    def __init__(self, inner: Any, watch: RateWatch) -> None:
        self.inner = inner
        self.watch = watch

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.inner:
            self.watch.add(len(chunk))
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


def _with_content(response: httpx.Response, content: bytes) -> httpx.Response:
    """`response` with its body read and inflated: no Content-Encoding left to undo."""
    headers = [(k, v) for k, v in response.headers.raw if k.lower() != b"content-encoding"]
    read = httpx.Response(
        response.status_code, headers=headers, content=content, extensions=response.extensions
    )
    with suppress(RuntimeError):  # a GET sent past httpx's client has no request object
        read.request = response.request
    return read


# -- large reads -------------------------------------------------------------------
# httpcore asks the network for 64 KiB at a time; every read then pays a fixed
# cost in httpcore, h11 and httpx. Measured against Orthanc on loopback, raw
# streaming went from ~245 MB/s to ~500 MB/s when each read may return up to
# 1 MiB (asyncio hands out at most 256 KiB per read, trio the full size). The
# wrapper below only raises the read size; everything else is httpx's own
# transport, TLS, proxies and HTTP/2 included.


class _LargeReadStream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream, read_size: int) -> None:
        self._inner = inner
        self._read_size = read_size

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max(max_bytes, self._read_size), timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        tls = await self._inner.start_tls(ssl_context, server_hostname, timeout)
        return _LargeReadStream(tls, self._read_size)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _LargeReadBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, inner: httpcore.AsyncNetworkBackend, read_size: int) -> None:
        self._inner = inner
        self._read_size = read_size

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _LargeReadStream(stream, self._read_size)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_unix_socket(path, timeout, socket_options)
        return _LargeReadStream(stream, self._read_size)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _Deferred(httpx.AsyncBaseTransport):
    """httpx's transport, made at its first request, its response bodies under `min_rate`.

    Made late because its TLS context costs tens of milliseconds to load.
    """

    def __init__(
        self, build: Callable[[], httpx.AsyncBaseTransport], min_rate: MinRate | None
    ) -> None:
        self.build = build
        self.min_rate = min_rate
        self.transport: httpx.AsyncBaseTransport | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.transport is None:
            self.transport = self.build()
        response = await self.transport.handle_async_request(request)
        if self.min_rate is not None:
            response.stream = _Watched(response.stream, RateWatch(self.min_rate))
        return response

    async def aclose(self) -> None:
        if self.transport is not None:
            await self.transport.aclose()


def client_transports(
    tls: TlsSettings,
    *,
    http2: bool,
    limits: httpx.Limits,
    proxy: str | httpx.Proxy | None,
    trust_env: bool,
    min_rate: MinRate | None = None,
) -> tuple[httpx.AsyncBaseTransport, dict[str, httpx.AsyncBaseTransport | None]]:
    """The client's transport and its proxy mounts, as httpx would choose them.

    GETs that go through no proxy take the fast path (`BulkTransport`), unless
    HTTP/2 is asked for; everything else takes httpx's own transport. Proxies
    from the environment are read by httpx's own function, so that they are
    honoured exactly as httpx honours them (NO_PROXY included).
    """

    def httpx_transport(via: str | httpx.Proxy | None = None) -> httpx.AsyncBaseTransport:
        return _Deferred(
            lambda: http_transport(verify=tls.context(), http2=http2, limits=limits, proxy=via),
            min_rate,
        )

    if proxy is not None:
        return httpx_transport(proxy), {}
    mounts: dict[str, httpx.AsyncBaseTransport | None] = {}
    if trust_env:
        for pattern, url in get_environment_proxies().items():
            mounts[pattern] = None if url is None else httpx_transport(url)
    inner = httpx_transport()
    if http2:
        return inner, mounts
    return BulkTransport(inner, tls.context, limits.max_connections or 8, min_rate), mounts


def http_transport(**options: Any) -> httpx.AsyncHTTPTransport:
    """httpx's own transport, reading up to `READ_SIZE` bytes at a time.

    Falls back to the plain transport (64 KiB reads) if httpx's internals ever
    stop exposing the connection pool's network backend.
    """
    transport = httpx.AsyncHTTPTransport(**options)
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if isinstance(backend, httpcore.AsyncNetworkBackend):
        pool._network_backend = _LargeReadBackend(backend, READ_SIZE)  # type: ignore[union-attr]
    else:  # pragma: no cover - depends on httpx internals
        logger.debug("httpx transport without a network backend; using 64 KiB reads")
    return transport
