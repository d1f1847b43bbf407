"""The httpx client and transports a DICOMweb client uses, chosen as httpx would.

GETs that go through no proxy take the fast path (`WireTransport`); everything
else takes httpx's own transport, which reads up to 1 MiB at a time.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import httpcore
import httpx
from httpx._utils import get_environment_proxies

from aiodicomweb._rate import MinRate, RateWatch
from aiodicomweb._tls import TlsSettings
from aiodicomweb._wire import READ_SIZE, WireTransport

__all__ = ["HttpClient", "client_transports", "http_transport"]

logger = logging.getLogger("aiodicomweb")


class _Cookies(httpx.Cookies):
    """httpx's cookie store, skipping the urllib round trip for answers that set none.

    Without `Set-Cookie` headers the jar has nothing to do, and the round trip
    costs a tenth of a warm QIDO call; with them it runs unchanged.
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


# -- large reads -------------------------------------------------------------------
# Every read pays a fixed cost in httpcore, h11 and httpx, so reads may return up
# to 1 MiB instead of 64 KiB; everything else is httpx's own transport.


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
) -> tuple[
    httpx.AsyncBaseTransport, dict[str, httpx.AsyncBaseTransport | None], WireTransport | None
]:
    """The client's transport, its proxy mounts, and the fast path if it has one.

    GETs that go through no proxy take the fast path (`WireTransport`), unless
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
        return httpx_transport(proxy), {}, None
    mounts: dict[str, httpx.AsyncBaseTransport | None] = {}
    if trust_env:
        for pattern, url in get_environment_proxies().items():
            mounts[pattern] = None if url is None else httpx_transport(url)
    inner = httpx_transport()
    if http2:
        return inner, mounts, None
    wire = WireTransport(inner, tls.context, limits.max_connections or 8, min_rate)
    return wire, mounts, wire


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
