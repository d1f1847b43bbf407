"""One request, done right: retries, error translation, status checks, redaction.

Every transaction of the client goes through `Transport.request` (buffered) or
`Transport.stream` (streamed); nothing else touches httpx's send path.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpcore
import httpx

from aiodicomweb._bulk import READ_SIZE
from aiodicomweb._direct import DirectGets
from aiodicomweb._exceptions import DicomWebHTTPError, excerpt, translate_httpx_error
from aiodicomweb._retry import RetryPolicy, parse_retry_after, retrying
from aiodicomweb._urls import redact_url

__all__ = ["HttpClient", "Transport", "http_transport"]

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
        self, http: httpx.AsyncClient, retry: RetryPolicy | None, direct: DirectGets | None = None
    ) -> None:
        self.http = http
        self.retry = retry
        self.direct = direct

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
            try:
                if response.status_code not in ok:
                    await self._raise_status(response, method, url)
                await response.aread()
            except httpx.HTTPError as error:
                raise translate_httpx_error(error, f"{method} {redact_url(url)}") from error
            finally:
                await response.aclose()
            return response

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
        try:
            response = None
            if self.direct is not None and method == "GET" and body is None:
                response = await self.direct.send(url, headers)
            if response is None:
                request = self.http.build_request(method, url, headers=headers, content=body)
                response = await self.http.send(request, stream=True)
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            raise translate_httpx_error(error, f"{method} {redact_url(url)}") from error
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
    collected = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            collected += chunk
            if len(collected) >= limit:
                break
    except httpx.HTTPError:
        pass  # the status is the error; a broken error body adds nothing
    return bytes(collected[:limit])


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
